package cache

import (
	"errors"
	"net/http"
	"strings"
	"sync"
)

// Modes of a captureWriter once the response header is known.
const (
	modePass    = iota + 1 // the response goes to the client
	modeNoBody             // the client got 304; the body is only captured
	modeDiscard            // nothing goes to the client (revalidation, stale-if-error, background)
)

// captureWriter is the ResponseWriter the backend writes a fill's response
// to. When the header arrives it decides where the response goes and
// whether to capture the body; the body is captured into a buffer bounded
// by MaxObjectSize and abandoned as soon as it would exceed it, while it
// keeps streaming to the client. While it captures, the client is sent the
// buffer from another goroutine (clientCopy), so that the backend is read
// at its own pace and the fill ends, and its waiters are served, however
// slowly the client reads. It keeps Flush (through FlushError) and Unwrap,
// so streams flush and http.ResponseController reaches the connection.
type captureWriter struct {
	w         http.ResponseWriter
	header    http.Header
	f         *fill
	wrote     bool
	status    int
	mode      int
	buffering bool
	buf       []byte
	entry     *Entry      // the entry being filled (times and flags); nil when not storable
	cc        *clientCopy // sends buf to the client while it is captured; nil when none
	err       error       // the first error writing to the client
}

func (cw *captureWriter) Header() http.Header { return cw.header }

func (cw *captureWriter) WriteHeader(code int) {
	if cw.wrote {
		return
	}
	if code >= 100 && code <= 199 {
		cw.informational(code)
		return
	}
	cw.wrote, cw.status = true, code
	f := cw.f
	f.respTime = f.c.now()
	if s := f.stale; s != nil {
		if f.conditional && code == http.StatusNotModified {
			f.outcome, cw.mode = outcomeRevalidated, modeDiscard
			if !selects(s, cw.header) {
				f.outcome = outcomeMismatch
			}
			return
		}
		if code >= 500 && s.staleIfError(f.respTime) {
			f.outcome, cw.mode = outcomeStaleError, modeDiscard
			return
		}
	}
	f.reason = f.storeReason(code, cw.header)
	if f.reason != "" {
		f.unshared(code)
	} else {
		cw.buffering = true
		if n := contentLength(cw.header); n > 0 && n <= f.c.maxObj {
			cw.buf = make([]byte, 0, n)
		}
		cw.entry = f.c.entryTimes(f, code, cw.header)
		// The live header until the body is complete, for the validators
		// keep looks at; lead replaces it with the stored copy.
		cw.entry.header = cw.header
	}
	if f.background {
		cw.mode = modeDiscard
		return
	}
	dst := cw.w.Header()
	for k, vv := range cw.header {
		if f.c.stripped(k) {
			continue
		}
		if old, ok := dst[k]; ok && k != "Content-Type" && k != "Content-Length" {
			dst[k] = append(old[:len(old):len(old)], vv...)
		} else {
			dst[k] = vv
		}
	}
	params := make([]string, 0, 3)
	params = append(params, f.fwd)
	if f.stale != nil && f.conditional {
		params = append(params, "fwd-status="+itoa(int64(code)))
	}
	// stored (RFC 9211 §2.7) goes out with the header, before the body is
	// known: it is claimed for a storable response the store will keep for
	// a while (so not for a lifetime of 0 without a validator or stale
	// window), whatever its length. What can still keep it out of the
	// store is a body of unknown length that grows past MaxObjectSize, a
	// body cut short, or a failing store.
	if f.reason == "" && cw.entry.keep(f.respTime, f.c.keepStale) > 0 {
		params = append(params, "stored")
	} else if f.reason != "" {
		params = append(params, "detail="+f.reason)
	}
	old := dst["Cache-Status"]
	dst["Cache-Status"] = append(old[:len(old):len(old)], f.c.cs(params...))
	if code == http.StatusOK && notModified(f.r, first(cw.header["Etag"]), first(cw.header["Last-Modified"]), f.respTime) {
		delete(dst, "Content-Length")
		cw.mode = modeNoBody
		cw.w.WriteHeader(http.StatusNotModified)
		return
	}
	cw.mode = modePass
	cw.w.WriteHeader(code)
}

// informational relays an interim response, such as 103 Early Hints (RFC
// 8297), to the client with the header fields set so far, the way net/http
// sends them, and leaves the client's header as it was. Interim responses
// are never stored, and a background refresh has no client to relay to.
func (cw *captureWriter) informational(code int) {
	if cw.f.background || code == http.StatusSwitchingProtocols {
		return
	}
	dst := cw.w.Header()
	type saved struct {
		vv  []string
		had bool
	}
	prev := make(map[string]saved, len(cw.header))
	for k, vv := range cw.header {
		if cw.f.c.stripped(k) {
			continue
		}
		old, had := dst[k]
		prev[k] = saved{old, had}
		dst[k] = vv
	}
	cw.w.WriteHeader(code)
	for k, p := range prev {
		if p.had {
			dst[k] = p.vv
		} else {
			delete(dst, k)
		}
	}
}

func (cw *captureWriter) Write(p []byte) (int, error) {
	if !cw.wrote {
		cw.WriteHeader(http.StatusOK)
	}
	if cw.buffering {
		need := len(cw.buf) + len(p)
		if int64(need) > cw.f.c.maxObj {
			cw.buffering = false
			cw.f.reason = "too-large"
			cw.f.unshared(cw.status)
			// From here the client is written to directly, after what
			// was buffered for it.
			cw.finish()
			cw.buf = nil
			if cw.err != nil {
				return 0, cw.err
			}
		} else {
			if need > cap(cw.buf) {
				// Grow by doubling, never past MaxObjectSize.
				nc := int(min(int64(max(2*cap(cw.buf), need, 4096)), cw.f.c.maxObj))
				nb := make([]byte, len(cw.buf), nc)
				copy(nb, cw.buf)
				cw.buf = nb
			}
			cw.buf = append(cw.buf, p...)
			if cw.mode == modePass {
				if err := cw.copier().send(cw.buf, false); err != nil {
					if cw.err == nil {
						cw.err = err
					}
					return 0, err
				}
				return len(p), nil
			}
		}
	}
	if cw.mode != modePass {
		return len(p), nil
	}
	n, err := cw.w.Write(p)
	if err != nil && cw.err == nil {
		cw.err = err
	}
	return n, err
}

// copier returns the clientCopy sending the captured body to the client,
// starting it the first time.
func (cw *captureWriter) copier() *clientCopy {
	if cw.cc == nil {
		cw.cc = newClientCopy(cw.w)
	}
	return cw.cc
}

// finish waits until the client has been sent what was buffered for it,
// and ends the clientCopy; the client's response is then written directly.
func (cw *captureWriter) finish() {
	if cw.cc != nil {
		if err := cw.cc.close(); err != nil && cw.err == nil {
			cw.err = err
		}
		cw.cc = nil
	}
}

// FlushError flushes the client's response when it is being streamed.
func (cw *captureWriter) FlushError() error {
	if !cw.wrote {
		cw.WriteHeader(http.StatusOK)
	}
	if cw.mode != modePass {
		return nil
	}
	if cw.buffering {
		return cw.copier().send(cw.buf, true)
	}
	return http.NewResponseController(cw.w).Flush()
}

// Flush implements http.Flusher.
func (cw *captureWriter) Flush() { _ = cw.FlushError() }

// Unwrap returns the client's ResponseWriter, for http.ResponseController.
func (cw *captureWriter) Unwrap() http.ResponseWriter { return cw.w }

// contentLength returns the Content-Length field's value, or -1.
func contentLength(h http.Header) int64 {
	v := h["Content-Length"]
	if len(v) == 0 || v[0] == "" || len(v[0]) > 18 {
		return -1
	}
	var n int64
	for _, ch := range []byte(v[0]) {
		if ch < '0' || ch > '9' {
			return -1
		}
		n = n*10 + int64(ch-'0')
	}
	return n
}

func first(vv []string) string {
	if len(vv) > 0 {
		return vv[0]
	}
	return ""
}

// passWriter adds the cache's Cache-Status member to a response the cache
// does not handle, and records its status. It keeps Flush and Unwrap.
type passWriter struct {
	http.ResponseWriter
	cs     string
	strip  []string // header fields removed before the response leaves
	status int
}

func (pw *passWriter) WriteHeader(code int) {
	if code >= 100 && code <= 199 {
		pw.ResponseWriter.WriteHeader(code)
		return
	}
	if pw.status == 0 {
		pw.status = code
		h := pw.ResponseWriter.Header()
		for _, name := range pw.strip {
			delete(h, name)
		}
		old := h["Cache-Status"]
		h["Cache-Status"] = append(old[:len(old):len(old)], pw.cs)
	}
	pw.ResponseWriter.WriteHeader(code)
}

func (pw *passWriter) Write(p []byte) (int, error) {
	if pw.status == 0 {
		pw.WriteHeader(http.StatusOK)
	}
	return pw.ResponseWriter.Write(p)
}

// FlushError flushes the client's response.
func (pw *passWriter) FlushError() error {
	if pw.status == 0 {
		pw.WriteHeader(http.StatusOK)
	}
	return http.NewResponseController(pw.ResponseWriter).Flush()
}

// Flush implements http.Flusher.
func (pw *passWriter) Flush() { _ = pw.FlushError() }

// Unwrap returns the wrapped ResponseWriter, for http.ResponseController.
func (pw *passWriter) Unwrap() http.ResponseWriter { return pw.ResponseWriter }

// discardWriter is the client of a background refresh: nobody.
type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) WriteHeader(int)             {}
func (d *discardWriter) Write(p []byte) (int, error) { return len(p), nil }

// stripped reports whether the response field k is removed before the
// response leaves the cache.
func (c *Cache) stripped(k string) bool {
	for _, name := range c.stripTargeted {
		if k == name {
			return true
		}
	}
	return false
}

// clientCopy sends a body being captured to the client from its own
// goroutine, so that the backend is read at the backend's pace, not the
// client's: a fill ends (its response stored, its waiters served) once the
// backend is done, however slowly its client reads. It holds no copy: it
// sends from the capture buffer, which only grows by appending (bytes once
// handed over are never written again), bounded by MaxObjectSize.
type clientCopy struct {
	w    http.ResponseWriter
	mu   sync.Mutex
	wake sync.Cond
	buf  []byte // the body so far
	// flush: a flush is asked for after buf; closed: nothing more comes.
	flush, closed bool
	err           error // the first error sending to the client
	panicked      any   // what the client's writer panicked with, to go on on the handler's goroutine
	done          chan struct{}
}

// errCopyPanicked is the error sends meet after the client's writer
// panicked; close then panics with the same value.
var errCopyPanicked = errors.New("cache: the client's ResponseWriter panicked")

func newClientCopy(w http.ResponseWriter) *clientCopy {
	cc := &clientCopy{w: w, done: make(chan struct{})}
	cc.wake.L = &cc.mu
	go cc.run()
	return cc
}

// send hands the body so far to the goroutine, with a flush after it when
// flush is set, and returns the error sending already met, if any.
func (cc *clientCopy) send(buf []byte, flush bool) error {
	cc.mu.Lock()
	cc.buf = buf
	cc.flush = cc.flush || flush
	err := cc.err
	cc.wake.Signal()
	cc.mu.Unlock()
	return err
}

// close waits until everything handed over has been sent (or sending
// failed) and the goroutine has ended, and returns the error, if any. A
// panic of the client's writer goes on here, on the handler's goroutine,
// where net/http recovers it as it would have without the copy.
func (cc *clientCopy) close() error {
	cc.mu.Lock()
	cc.closed = true
	cc.wake.Signal()
	cc.mu.Unlock()
	<-cc.done
	if cc.panicked != nil {
		panic(cc.panicked)
	}
	return cc.err
}

func (cc *clientCopy) run() {
	defer close(cc.done)
	defer func() {
		if p := recover(); p != nil {
			cc.mu.Lock()
			cc.err, cc.panicked = errCopyPanicked, p
			cc.mu.Unlock()
		}
	}()
	sent := 0
	for {
		cc.mu.Lock()
		for sent == len(cc.buf) && !cc.flush && !cc.closed {
			cc.wake.Wait()
		}
		buf, flush, closed := cc.buf, cc.flush, cc.closed
		cc.flush = false
		cc.mu.Unlock()
		var err error
		if sent < len(buf) {
			_, err = cc.w.Write(buf[sent:])
			sent = len(buf)
		}
		if err == nil && flush {
			if err = http.NewResponseController(cc.w).Flush(); errors.Is(err, http.ErrNotSupported) {
				err = nil
			}
		}
		if err != nil {
			cc.mu.Lock()
			cc.err = err
			cc.mu.Unlock()
			return
		}
		if closed {
			return // buf was final: nothing is handed over after close
		}
	}
}

// copyTrailers gives the client the trailers the backend set, after the
// body, in cw's own header: the "Trailer:"-prefixed fields and the fields
// the Trailer header announced. A response with trailers is never stored
// (their values are not known when it is), but the client it streams to
// gets them.
func (cw *captureWriter) copyTrailers() {
	if cw.mode != modePass {
		return
	}
	dst := cw.w.Header()
	for k, vv := range cw.header {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			dst[k] = vv
		}
	}
	for _, v := range cw.header["Trailer"] {
		for _, name := range strings.Split(v, ",") {
			name = http.CanonicalHeaderKey(strings.TrimSpace(name))
			if vv, ok := cw.header[name]; ok && name != "" {
				dst[name] = vv
			}
		}
	}
}
