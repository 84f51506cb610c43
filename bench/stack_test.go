package main

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardWriter) WriteHeader(int)             {}

type statusWriter struct {
	discardWriter
	code int
}

func (s *statusWriter) WriteHeader(code int) { s.code = code }
func (s *statusWriter) Write(p []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return len(p), nil
}

// BenchmarkStack measures the whole stack of the load benchmark's
// pylon-stack route, proxying to a loopback upstream, per request.
func BenchmarkStack(b *testing.B) {
	benchRoute(b, stackGateway)
}

// BenchmarkPlain is BenchmarkStack's route without the stack: the
// difference between the two is what the stack costs per request.
func BenchmarkPlain(b *testing.B) {
	benchRoute(b, func(up string) (http.Handler, string) { return plainGateway(up), "" })
}

// benchRoute serves GET /bench through the handler gw builds for a
// loopback upstream, with the bearer token gw returns (if any).
func benchRoute(b *testing.B, gw func(upstream string) (http.Handler, string)) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	defer up.Close()
	h, token := gw(up.URL)
	req := httptest.NewRequest("GET", "/bench", nil)
	var auth []string
	if token != "" {
		auth = []string{"Bearer " + token}
	}
	w := &statusWriter{discardWriter: discardWriter{h: http.Header{}}}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		if auth != nil {
			req.Header["Authorization"] = auth // the gateway strips it before proxying
		}
		h.ServeHTTP(w, req)
		if w.code != http.StatusOK {
			b.Fatalf("status %d", w.code)
		}
	}
}
