package compress_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	chimw "github.com/go-chi/chi/v5/middleware"

	"github.com/pylon-gateway/pylon/middleware/compress"
)

// BenchmarkCompress compares the middleware with chi's Compress on the same
// 6.4 KB JSON body, gzip at level 5 for both, and shows the other codings.
func BenchmarkCompress(b *testing.B) {
	body := []byte(big)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	})
	run := func(b *testing.B, hh http.Handler, accept string) {
		b.ReportAllocs()
		b.SetBytes(int64(len(body)))
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set("Accept-Encoding", accept)
		for b.Loop() {
			w := discardWriter{h: http.Header{}}
			hh.ServeHTTP(&w, r)
		}
	}
	b.Run("chi-gzip", func(b *testing.B) { run(b, chimw.Compress(5, "application/json")(h), "gzip") })
	for _, c := range []string{"gzip", "br", "zstd"} {
		m, err := compress.New(compress.Options{Encodings: []string{c}})
		if err != nil {
			b.Fatal(err)
		}
		b.Run("pylon-"+c, func(b *testing.B) { run(b, m(h), c) })
	}
	m, _ := compress.New(compress.Options{})
	b.Run("pylon-identity", func(b *testing.B) { run(b, m(h), "identity") })
}

type discardWriter struct {
	h    http.Header
	code int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) WriteHeader(code int)        { w.code = code }
func (w *discardWriter) Write(p []byte) (int, error) { return io.Discard.Write(p) }
