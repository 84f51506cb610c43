package extauthz_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/middleware/extauthz"
)

type nopWriter struct{ h http.Header }

func (w *nopWriter) Header() http.Header         { return w.h }
func (w *nopWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *nopWriter) WriteHeader(int)             {}

// BenchmarkCached measures the whole middleware on a cached admitting
// answer that copies one header upstream.
func BenchmarkCached(b *testing.B) {
	auth := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("X-User-Id", "alice")
	}))
	defer auth.Close()
	mw, err := extauthz.New(extauthz.Options{
		URL: auth.URL, ResponseHeaders: []string{"X-User-Id"}, SubjectHeader: "X-User-Id", Logger: quiet,
		CacheKey: func(r *http.Request) string { return r.Header.Get("Authorization") },
	})
	if err != nil {
		b.Fatal(err)
	}
	h := mw(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	r := httptest.NewRequest("GET", "/reports", nil)
	r.Header.Set("Authorization", "Bearer some-session-token")
	r = r.WithContext(pylon.NewContext(r.Context(), &pylon.RequestInfo{}))
	w := &nopWriter{h: http.Header{}}
	h.ServeHTTP(w, r)
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(w, r)
	}
}
