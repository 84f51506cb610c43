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
	// MaxBodyBytes is the largest request body copied. The body is copied
	// as the primary reads it, never read ahead of it, so that the primary
	// is not held back (a streamed body, a bidirectional gRPC call); the
	// shadow request is sent once the primary has read the whole body, so
	// a streaming call is mirrored when its client side ends. A request
	// whose declared or read body is larger is served but not mirrored
	// (counted in TooLarge). Zero means 64 KiB.
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
	// Incomplete is the number of sampled requests not mirrored because
	// their whole body could not be had: a streamed body (no declared
	// length, a gRPC stream) the primary did not read to its end, or a
	// body whose reading failed. A body of declared length the primary
	// left unread is read after it was served. The shadow never gets part
	// of a body.
	Incomplete uint64
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

	mirrored, dropped, tooLarge, incomplete atomic.Uint64
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
	return MirrorStats{Mirrored: m.mirrored.Load(), Dropped: m.dropped.Load(), TooLarge: m.tooLarge.Load(),
		Incomplete: m.incomplete.Load()}
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
		if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
			m.launch(m.template(r), nil)
			next.ServeHTTP(w, r)
			return
		}
		if r.ContentLength > m.opts.MaxBodyBytes {
			m.tooLarge.Add(1)
			next.ServeHTTP(w, r)
			return
		}
		tee := &teeBody{rc: r.Body, m: m, s: m.template(r), want: r.ContentLength}
		if r.ContentLength > 0 {
			tee.buf = make([]byte, 0, r.ContentLength)
		}
		r.Body = tee
		defer tee.finish()
		next.ServeHTTP(w, r)
	})
}

// template copies r for the shadow, without its context (nor so its
// RequestInfo) and without its body, before the primary changes r.
func (m *Mirror) template(r *http.Request) *http.Request {
	s := r.Clone(context.Background())
	s.Host = r.Host + m.opts.HostSuffix
	s.Body, s.ContentLength = http.NoBody, 0
	s.Trailer = nil
	s.Header.Del("Expect")
	return s
}

// launch sends the shadow request s with body, unless MaxConcurrent shadow
// requests are in flight. The shadow's context and Timeout start here.
func (m *Mirror) launch(s *http.Request, body []byte) {
	select {
	case m.sem <- struct{}{}:
	default:
		m.dropped.Add(1)
		return
	}
	m.mirrored.Add(1)
	m.wg.Add(1)
	ctx, cancel := context.WithTimeout(context.Background(), m.opts.Timeout)
	s = s.WithContext(ctx)
	if body != nil {
		s.Body = io.NopCloser(bytes.NewReader(body))
		s.ContentLength = int64(len(body))
	}
	go m.send(s, cancel)
}

// teeBody is the primary's request body while it is mirrored: it keeps a
// copy of what the primary reads, at most MaxBodyBytes, and sends the
// shadow request once the body has been read whole. It never reads ahead.
type teeBody struct {
	rc   io.ReadCloser
	m    *Mirror
	s    *http.Request // the shadow request, without its body
	want int64         // the declared length; -1 when unknown

	mu   sync.Mutex // the body may be read by a goroutine of the transport
	buf  []byte
	done bool // the shadow request was sent or given up
}

func (t *teeBody) Read(p []byte) (int, error) {
	n, err := t.rc.Read(p)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.done {
		return n, err
	}
	if int64(len(t.buf)+n) > t.m.opts.MaxBodyBytes {
		t.done, t.buf = true, nil
		t.m.tooLarge.Add(1)
		return n, err
	}
	t.buf = append(t.buf, p[:n]...)
	switch {
	case err == io.EOF || err == nil && t.want >= 0 && int64(len(t.buf)) == t.want:
		t.done = true
		t.m.launch(t.s, t.buf)
	case err != nil:
		t.done, t.buf = true, nil
		t.m.incomplete.Add(1)
	}
	return n, err
}

func (t *teeBody) Close() error { return t.rc.Close() }

// finish ends the copy when the primary has been served. The rest of a
// body of declared length (at most MaxBodyBytes) is read now, as net/http
// would discard it, and mirrored; a streamed body the primary did not read
// to its end is not (its client may be waiting for the answer before it
// ends the stream). A read after this sends nothing (Close waits only for
// shadow requests sent while their primary was served).
func (t *teeBody) finish() {
	t.mu.Lock()
	rest := !t.done && t.want >= 0
	t.mu.Unlock()
	if rest {
		_, _ = io.Copy(io.Discard, t) // t.Read mirrors the body at its end
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.done {
		t.done, t.buf = true, nil
		t.m.incomplete.Add(1)
	}
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
