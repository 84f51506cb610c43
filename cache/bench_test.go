package cache

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
)

// benchWriter is a reusable ResponseWriter, so benchmarks measure the
// cache, not the recorder.
type benchWriter struct {
	h    http.Header
	code int
	n    int
}

func (w *benchWriter) Header() http.Header         { return w.h }
func (w *benchWriter) WriteHeader(c int)           { w.code = c }
func (w *benchWriter) Write(p []byte) (int, error) { w.n += len(p); return len(p), nil }

var kib = []byte(strings.Repeat("x", 1024))

func benchOrigin(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h["Cache-Control"] = []string{"max-age=3600"}
	h["Content-Type"] = []string{"application/json"}
	h["Content-Length"] = []string{"1024"}
	w.WriteHeader(200)
	_, _ = w.Write(kib)
}

// BenchmarkHit serves a stored 1 KiB response.
func BenchmarkHit(b *testing.B) {
	c := newTestCache(b, Options{})
	h := c.Middleware(http.HandlerFunc(benchOrigin))
	r := httptest.NewRequest("GET", "http://api.example.com/orders/42?b=2&a=1", nil)
	w := &benchWriter{h: make(http.Header)}
	h.ServeHTTP(w, r)
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		w.n = 0
		h.ServeHTTP(w, r)
	}
	if w.n != 1024 || !strings.Contains(w.h.Get("Cache-Status"), "hit") {
		b.Fatalf("not a hit: %d %q", w.n, w.h.Get("Cache-Status"))
	}
}

// BenchmarkMiss fetches and stores a 1 KiB response (every key is new);
// compare with BenchmarkNoCache.
func BenchmarkMiss(b *testing.B) {
	c := newTestCache(b, Options{MaxBytes: 8 << 20})
	h := c.Middleware(http.HandlerFunc(benchOrigin))
	w := &benchWriter{h: make(http.Header)}
	reqs := make([]*http.Request, 4096)
	keys := make([]string, len(reqs))
	for i := range reqs {
		reqs[i] = httptest.NewRequest("GET", "http://api.example.com/orders/"+strconv.Itoa(i), nil)
		keys[i] = c.Key(reqs[i])
	}
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		r := reqs[i%len(reqs)]
		_ = c.store.Delete(r.Context(), keys[i%len(reqs)])
		i++
		h.ServeHTTP(w, r)
	}
}

// BenchmarkNoCache is the origin handler alone, the baseline for Miss.
func BenchmarkNoCache(b *testing.B) {
	h := http.HandlerFunc(benchOrigin)
	r := httptest.NewRequest("GET", "http://api.example.com/orders/42", nil)
	w := &benchWriter{h: make(http.Header)}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		h.ServeHTTP(w, r)
	}
}

// BenchmarkMemoryStoreGet is the store lookup alone.
func BenchmarkMemoryStoreGet(b *testing.B) {
	s := NewMemoryStore(MemoryOptions{})
	_ = s.Set(b.Context(), "k", body(1024), 1<<62)
	b.ReportAllocs()
	for b.Loop() {
		_, _ = s.Get(b.Context(), "k")
	}
}
