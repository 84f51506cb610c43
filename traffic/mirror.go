package traffic

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// MirrorOptions configures a [Mirror]. Every field's zero value is a safe
// default, written in its comment.
type MirrorOptions struct {
	// Percent is the share of requests (0 to 100) copied to the shadow.
	// Zero means 100; negative means none.
	Percent float64
	// MaxBodyBytes is the largest request body copied: a body is buffered
	// up to it (so that both sides get it whole), and a request whose body
	// is larger is served but not mirrored (counted in TooLarge). Zero
	// means 64 KiB.
	MaxBodyBytes int64
	// MaxConcurrent bounds the shadow requests in flight; a request that
	// finds them all busy is not mirrored (counted in Dropped). Zero means
	// 16.
	MaxConcurrent int
	// Timeout bounds each shadow request. Zero means 5s.
	Timeout time.Duration
	// HostSuffix is appended to the Host of shadow requests, so that they
	// are told apart (a shadow *pylon.Backend forwards it with
	// PreserveHost). Zero means "-shadow".
	HostSuffix string
}

// MirrorStats counts what a Mirror did.
type MirrorStats struct {
	// Mirrored is the number of shadow requests sent.
	Mirrored uint64
	// Dropped is the number of sampled requests not mirrored because
	// MaxConcurrent shadow requests were in flight.
	Dropped uint64
	// TooLarge is the number of sampled requests not mirrored because
	// their body was over MaxBodyBytes.
	TooLarge uint64
}

// Mirror copies a sampled share of requests to a shadow handler (usually a
// *pylon.Backend) and discards its answers. The shadow never slows, fails
// or changes the primary response: shadow requests run in goroutines of
// their own, with their own context and timeout (not the client's), at
// most MaxConcurrent at a time (more are dropped, not queued), and without
// the primary's RequestInfo. Build it with [NewMirror]; wire Middleware on
// a route; call Close at shutdown to wait for shadow requests in flight.
type Mirror struct {
	shadow http.Handler
	opts   MirrorOptions
	sem    chan struct{}
	wg     sync.WaitGroup

	mirrored, dropped, tooLarge atomic.Uint64
}

// NewMirror returns a Mirror to shadow. It fails on a nil shadow or a
// Percent over 100.
func NewMirror(shadow http.Handler, opts MirrorOptions) (*Mirror, error) {
	if shadow == nil {
		return nil, fmt.Errorf("traffic: mirror: nil shadow")
	}
	if opts.Percent > 100 {
		return nil, fmt.Errorf("traffic: mirror: Percent %v is over 100", opts.Percent)
	}
	if opts.Percent == 0 {
		opts.Percent = 100
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = 64 << 10
	}
	if opts.MaxConcurrent <= 0 {
		opts.MaxConcurrent = 16
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 5 * time.Second
	}
	if opts.HostSuffix == "" {
		opts.HostSuffix = "-shadow"
	}
	return &Mirror{shadow: shadow, opts: opts, sem: make(chan struct{}, opts.MaxConcurrent)}, nil
}

// Stats returns what the mirror has done so far.
func (m *Mirror) Stats() MirrorStats {
	return MirrorStats{Mirrored: m.mirrored.Load(), Dropped: m.dropped.Load(), TooLarge: m.tooLarge.Load()}
}

// Close waits for the shadow requests in flight (each bounded by Timeout).
func (m *Mirror) Close() { m.wg.Wait() }

// Middleware is the middleware that mirrors the requests it serves:
// gw.Use(m.Middleware).
func (m *Mirror) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !hit(m.opts.Percent) {
			next.ServeHTTP(w, r)
			return
		}
		body, ok := m.buffer(r)
		if !ok {
			m.tooLarge.Add(1)
			next.ServeHTTP(w, r)
			return
		}
		select {
		case m.sem <- struct{}{}:
			m.mirrored.Add(1)
			m.wg.Add(1)
			s, cancel := m.shadowRequest(r, body)
			go m.send(s, cancel)
		default:
			m.dropped.Add(1)
		}
		next.ServeHTTP(w, r)
	})
}

// buffer reads r's body (at most MaxBodyBytes) so that both sides get it,
// and gives r a body that replays it. ok is false when the body is larger:
// r then gets back what was read, followed by the rest.
func (m *Mirror) buffer(r *http.Request) (body []byte, ok bool) {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return nil, true
	}
	if r.ContentLength > m.opts.MaxBodyBytes {
		return nil, false
	}
	buf, err := io.ReadAll(io.LimitReader(r.Body, m.opts.MaxBodyBytes+1))
	rest := r.Body
	if err != nil || int64(len(buf)) > m.opts.MaxBodyBytes {
		r.Body = readCloser{io.MultiReader(bytes.NewReader(buf), errReader{err}, rest), rest}
		return nil, false
	}
	r.Body = readCloser{bytes.NewReader(buf), rest}
	return buf, true
}

type readCloser struct {
	io.Reader
	c io.Closer
}

func (rc readCloser) Close() error { return rc.c.Close() }

// errReader returns err once the buffered part is read (nil: io.EOF, and
// the rest follows).
type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	return 0, io.EOF
}

// shadowRequest copies r for the shadow, with a context of its own.
func (m *Mirror) shadowRequest(r *http.Request, body []byte) (*http.Request, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), m.opts.Timeout)
	s := r.Clone(ctx)
	s.Host = r.Host + m.opts.HostSuffix
	s.Body = http.NoBody
	if body != nil {
		s.Body = io.NopCloser(bytes.NewReader(body))
		s.ContentLength = int64(len(body))
	}
	s.Trailer = nil
	s.Header.Del("Expect")
	return s, cancel
}

// send serves the shadow request and discards its answer.
func (m *Mirror) send(s *http.Request, cancel context.CancelFunc) {
	defer m.wg.Done()
	defer func() { <-m.sem }()
	defer cancel()
	defer func() { _ = recover() }() // a shadow that panics must not take the gateway down
	m.shadow.ServeHTTP(&discard{h: http.Header{}}, s)
}

// discard is the shadow's ResponseWriter: everything is thrown away.
type discard struct{ h http.Header }

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) Write(p []byte) (int, error) { return len(p), nil }
func (d *discard) WriteHeader(int)             {}
