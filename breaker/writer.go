package breaker

import (
	"bufio"
	"net"
	"net/http"
	"sync"
)

// statusWriter records the status a handler answers with. It keeps
// flushing and hijacking working whatever the writer it wraps (through
// http.ResponseController, which follows Unwrap), and has Unwrap itself.
type statusWriter struct {
	w      http.ResponseWriter
	status int // 0 until the handler writes
}

var writerPool = sync.Pool{New: func() any { return new(statusWriter) }}

func getWriter(w http.ResponseWriter) *statusWriter {
	sw := writerPool.Get().(*statusWriter)
	sw.w = w
	return sw
}

func putWriter(sw *statusWriter) {
	*sw = statusWriter{}
	writerPool.Put(sw)
}

func (s *statusWriter) Header() http.Header { return s.w.Header() }

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		s.status = code
	}
	s.w.WriteHeader(code)
}

func (s *statusWriter) Write(p []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.w.Write(p)
}

// Flush implements http.Flusher.
func (s *statusWriter) Flush() {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	if f, ok := s.w.(http.Flusher); ok {
		f.Flush()
		return
	}
	_ = http.NewResponseController(s.w).Flush()
}

// Hijack implements http.Hijacker; it fails with http.ErrNotSupported when
// the wrapped writer cannot be hijacked.
func (s *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(s.w).Hijack()
}

// Unwrap returns the wrapped writer, for http.ResponseController.
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.w }
