package introspect_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/middleware/introspect"
	"github.com/pylon-gateway/pylon/middleware/jwtauth"
)

type nopWriter struct{ h http.Header }

func (w *nopWriter) Header() http.Header         { return w.h }
func (w *nopWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *nopWriter) WriteHeader(int)             {}

// BenchmarkRequireCached measures the whole middleware on a cached
// introspection answer with a scope rule and one forwarded claim.
func BenchmarkRequireCached(b *testing.B) {
	as := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"active":true,"sub":"alice","scope":"orders:read"}`))
	}))
	defer as.Close()
	i, err := introspect.New(introspect.Options{URL: as.URL, ClientID: "gw", Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	defer i.Close()
	h := jwtauth.RequireWithOptions(i, jwtauth.RequireOptions{
		Rules:                []jwtauth.Rule{jwtauth.Scopes("orders:read")},
		ForwardClaims:        map[string]string{"X-User-Id": "sub"},
		ForwardAuthorization: true,
	})(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	r := httptest.NewRequest("GET", "/orders/1", nil)
	r.Header.Set("Authorization", "Bearer 2YotnFZFEjr1zCsicMWpAA-an-opaque-access-token")
	r = r.WithContext(pylon.NewContext(r.Context(), &pylon.RequestInfo{}))
	w := &nopWriter{h: http.Header{}}
	h.ServeHTTP(w, r)
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(w, r)
	}
}
