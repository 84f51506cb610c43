package aggregate

import (
	"errors"
	"net/http"
	"strconv"
	"sync"
)

// errBodyCap is returned by bodyWriter.Write past the cap.
var errBodyCap = errors.New("aggregate: response body over the cap")

// bodyWriter is the http.ResponseWriter an in-process call (a *pylon.Backend
// or another handler) answers into: it keeps the status and the body in
// memory, up to max bytes, and refuses writes past that.
type bodyWriter struct {
	header http.Header
	status int
	buf    []byte
	max    int64
	over   bool
}

// bufs holds response buffers for reuse; buffers that grew large are
// dropped rather than kept.
var bufs = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

const maxPooled = 256 << 10

func getBuf() []byte { return (*bufs.Get().(*[]byte))[:0] }

func putBuf(b []byte) {
	if cap(b) <= maxPooled && cap(b) > 0 {
		b = b[:0]
		bufs.Put(&b)
	}
}

func (w *bodyWriter) Header() http.Header { return w.header }

func (w *bodyWriter) WriteHeader(code int) {
	if w.status != 0 || code < 200 {
		return // 1xx responses and repeated calls are ignored
	}
	w.status = code
	if cl := w.header.Get("Content-Length"); cl != "" {
		if n, err := strconv.ParseInt(cl, 10, 64); err == nil {
			if n > w.max {
				w.over = true
			} else if w.buf == nil && n > 4<<10 {
				w.buf = make([]byte, 0, n)
			}
		}
	}
}

func (w *bodyWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.over || int64(len(w.buf))+int64(len(p)) > w.max {
		w.over = true
		return 0, errBodyCap
	}
	if w.buf == nil {
		w.buf = getBuf()
	}
	w.buf = append(w.buf, p...)
	return len(p), nil
}
