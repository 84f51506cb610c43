package pylon

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
)

// discardWriter is a minimal ResponseWriter, so the benchmarks measure the
// proxy, not a recorder.
type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardWriter) WriteHeader(int)             {}

func benchUpstream(b *testing.B) *httptest.Server {
	body := []byte(strings.Repeat("x", 1024))
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	}))
	b.Cleanup(s.Close)
	return s
}

func benchProxy(b *testing.B, h http.Handler) {
	req := httptest.NewRequest("GET", "http://gw.example/orders/42?x=1", nil)
	req.RemoteAddr = "192.0.2.1:1234"
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "bench")
	w := &discardWriter{h: make(http.Header)}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		clear(w.h)
		h.ServeHTTP(w, req)
	}
}

// BenchmarkProxy compares, in one run, a bare httputil.ReverseProxy with
// Pylon's Backend alone and behind a Gateway route, all with the same
// transport settings and the same loopback upstream.
func BenchmarkProxy(b *testing.B) {
	up := benchUpstream(b)
	target, _ := url.Parse(up.URL)
	opts := BackendOptions{Targets: []string{up.URL}}
	b.Run("httputil", func(b *testing.B) {
		tr := NewTransport(opts)
		defer tr.CloseIdleConnections()
		rp := &httputil.ReverseProxy{Transport: tr, Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.SetXForwarded()
		}}
		benchProxy(b, rp)
	})
	b.Run("backend", func(b *testing.B) {
		be := MustNewBackend("bench", opts)
		defer be.Close()
		benchProxy(b, be)
	})
	b.Run("gateway", func(b *testing.B) {
		be := MustNewBackend("bench", opts)
		defer be.Close()
		g := New(Options{})
		g.Route("GET /orders/{id}").To(be)
		benchProxy(b, g)
	})
}

// BenchmarkRouting measures matching alone, on a table of 50 routes.
func BenchmarkRouting(b *testing.B) {
	g := New(Options{})
	ok := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	for i := range 50 {
		g.Route("GET /svc" + string(rune('a'+i%26)) + string(rune('a'+i/26)) + "/{id}").Handler(ok)
	}
	if err := g.Err(); err != nil {
		b.Fatal(err)
	}
	req := httptest.NewRequest("GET", "/svcxa/42", nil)
	w := &discardWriter{h: make(http.Header)}
	b.ReportAllocs()
	for b.Loop() {
		g.ServeHTTP(w, req)
	}
}
