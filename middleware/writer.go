package middleware

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
)

// ResponseWriter is an http.ResponseWriter that records the status and the
// number of body bytes written through it. [WrapWriter] returns one.
//
// The value WrapWriter returns implements exactly the optional interfaces
// (http.Flusher, http.Hijacker, io.ReaderFrom, http.Pusher) that the wrapped
// writer implements, no more and no fewer, so code that probes for them with
// a type assertion sees what it would have seen without the wrapper. Unwrap
// returns the wrapped writer, so http.ResponseController reaches the
// deadline and full-duplex methods of the writer underneath.
type ResponseWriter interface {
	http.ResponseWriter
	// Status returns the final status code sent (the one passed to the
	// first WriteHeader call, or 200 for an implicit one), or 0 when no
	// header has been written yet. Informational (1xx) statuses other than
	// 101 are not recorded.
	Status() int
	// BytesWritten returns the number of response body bytes written.
	BytesWritten() int64
	// WroteHeader reports whether the final response header was written.
	WroteHeader() bool
	// Hijacked reports whether the connection was hijacked through the
	// writer (a protocol upgrade such as WebSocket).
	Hijacked() bool
	// Unwrap returns the wrapped http.ResponseWriter.
	Unwrap() http.ResponseWriter
}

// WriterOptions are the hooks of a writer returned by [WrapWriterWithOptions].
type WriterOptions struct {
	// BeforeWriteHeader, when set, is called once, just before the final
	// response header is written (explicitly by WriteHeader, or implicitly
	// by the first Write, ReadFrom or Flush), with the status and the header
	// map about to be sent, which it may change. It is not called for
	// informational (1xx) responses other than 101, nor on Hijack.
	// Nil means no hook.
	BeforeWriteHeader func(status int, h http.Header)
}

// WrapWriter returns a [ResponseWriter] that records the status and size of
// the response written through it to w.
//
// It allocates once. The concrete type implements http.Flusher,
// http.Hijacker, io.ReaderFrom and http.Pusher exactly when w does.
func WrapWriter(w http.ResponseWriter) ResponseWriter {
	return wrap(w, rw{})
}

// WrapWriterWithOptions is like [WrapWriter] with hooks: see [WriterOptions].
func WrapWriterWithOptions(w http.ResponseWriter, o WriterOptions) ResponseWriter {
	return wrap(w, rw{before: o.BeforeWriteHeader})
}

// rw is the state shared by every combination type in writer_combos.go.
type rw struct {
	w        http.ResponseWriter
	status   int
	bytes    int64
	wrote    bool
	hijacked bool
	discard  bool // the handler's response is being thrown away (intercepted)

	before func(status int, h http.Header)
	// beforeVals, when set, is called right after before with vals: a
	// hook that needs per-request values takes them from here rather than
	// from a closure, which would cost an allocation per request.
	beforeVals func(status int, h http.Header, vals []string)
	vals       []string
	// intercept, when set, is called at final WriteHeader time after
	// before; it returns true when it wrote its own response to w.w, after
	// which the handler's header and body are discarded.
	intercept func(status int) bool
	// g, when set, serializes every call and gives the handler a header map
	// of its own (used by Timeout, whose timer writes from another
	// goroutine).
	g *guard
}

// guard is the shared state of a writer used by Timeout.
type guard struct {
	mu       sync.Mutex
	h        http.Header // the handler's header map
	timedOut bool        // the timeout response was written; drop everything

	ctx       context.Context // the handler's context, with the deadline
	onTimeout func()          // writes the timeout response; called with mu held
}

// expired reports, with g.mu held, whether the handler's time is up: the
// timeout response was written, or the deadline has passed before the
// response started, in which case it writes the timeout response now, so
// that a handler that sees its context end before the timer goroutine runs
// cannot win the race.
func (g *guard) expired(w *rw) bool {
	if g.timedOut {
		return true
	}
	if w.wrote || w.hijacked || !errors.Is(g.ctx.Err(), context.DeadlineExceeded) {
		return false
	}
	g.timedOut = true
	g.onTimeout()
	return true
}

func (w *rw) base() *rw                   { return w }
func (w *rw) Status() int                 { return w.status }
func (w *rw) BytesWritten() int64         { return w.bytes }
func (w *rw) WroteHeader() bool           { return w.wrote }
func (w *rw) Hijacked() bool              { return w.hijacked }
func (w *rw) Unwrap() http.ResponseWriter { return w.w }

func (w *rw) Header() http.Header {
	if w.g != nil {
		return w.g.h
	}
	return w.w.Header()
}

func (w *rw) WriteHeader(code int) {
	if w.g != nil {
		w.g.mu.Lock()
		defer w.g.mu.Unlock()
		if w.g.expired(w) {
			return
		}
	}
	w.writeHeader(code)
}

func (w *rw) writeHeader(code int) {
	if w.hijacked || w.discard {
		return
	}
	if w.wrote {
		w.w.WriteHeader(code) // superfluous: let the writer underneath report it
		return
	}
	if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
		w.copyHeader()
		w.w.WriteHeader(code)
		return
	}
	w.status = code
	w.wrote = true
	if w.before != nil {
		w.before(code, w.Header())
	}
	if w.beforeVals != nil {
		w.beforeVals(code, w.Header(), w.vals)
	}
	if w.intercept != nil && w.intercept(code) {
		w.discard = true
		return
	}
	w.copyHeader()
	w.w.WriteHeader(code)
}

// copyHeader copies the handler's header map to the real one when the
// handler has a map of its own (Timeout).
func (w *rw) copyHeader() {
	if w.g == nil {
		return
	}
	dst := w.w.Header()
	for k := range dst {
		if _, ok := w.g.h[k]; !ok {
			delete(dst, k)
		}
	}
	for k, v := range w.g.h {
		dst[k] = v
	}
}

func (w *rw) Write(p []byte) (int, error) {
	if w.g != nil {
		w.g.mu.Lock()
		defer w.g.mu.Unlock()
		if w.g.expired(w) {
			return 0, http.ErrHandlerTimeout
		}
	}
	if !w.wrote {
		w.writeHeader(http.StatusOK)
	}
	if w.discard {
		return len(p), nil
	}
	n, err := w.w.Write(p)
	w.bytes += int64(n)
	return n, err
}

func (w *rw) flush() {
	if w.g != nil {
		w.g.mu.Lock()
		defer w.g.mu.Unlock()
		if w.g.expired(w) {
			return
		}
	}
	if !w.wrote {
		w.writeHeader(http.StatusOK)
	}
	if w.discard || w.hijacked {
		return
	}
	w.w.(http.Flusher).Flush()
}

func (w *rw) hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.g != nil {
		w.g.mu.Lock()
		defer w.g.mu.Unlock()
		if w.g.expired(w) {
			return nil, nil, http.ErrHandlerTimeout
		}
	}
	c, brw, err := w.w.(http.Hijacker).Hijack()
	if err == nil {
		w.hijacked = true
	}
	return c, brw, err
}

func (w *rw) readFrom(src io.Reader) (int64, error) {
	if w.g != nil {
		w.g.mu.Lock()
		defer w.g.mu.Unlock()
		if w.g.expired(w) {
			return 0, http.ErrHandlerTimeout
		}
	}
	if !w.wrote {
		w.writeHeader(http.StatusOK)
	}
	if w.discard {
		return io.Copy(io.Discard, src)
	}
	n, err := w.w.(io.ReaderFrom).ReadFrom(src)
	w.bytes += n
	return n, err
}

func (w *rw) push(target string, opts *http.PushOptions) error {
	return w.w.(http.Pusher).Push(target, opts)
}

// recorder is implemented by every combination type.
type recorder interface {
	ResponseWriter
	base() *rw
}

// plainRecorder returns w's recorder state when w is a writer of this
// package that passes every write through as it comes, so that a middleware
// right inside another one that already records can share its record
// instead of wrapping again. A BeforeWriteHeader hook does not prevent
// sharing: it runs once, when the final header goes out, whichever layer
// the write came through. A writer that may discard the handler's response
// (BodyLimit's interception) or serializes it (Timeout) is not shared.
func plainRecorder(w http.ResponseWriter) (ResponseWriter, bool) {
	r, ok := w.(recorder)
	if !ok {
		return nil, false
	}
	b := r.base()
	if b.intercept != nil || b.g != nil {
		return nil, false
	}
	return r, true
}
