package admin

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/pylon-gateway/pylon"
)

// BenchmarkStatsMiddleware measures what Stats adds to each request: the
// writer wrapper, one bucket update for the route and one for the target.
func BenchmarkStatsMiddleware(b *testing.B) {
	s := NewStats(StatsOptions{})
	h := s.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info := pylon.Info(r.Context())
		info.Route, info.Backend, info.Target = "orders", "orders", "http://10.0.0.5:8080"
		w.WriteHeader(http.StatusOK)
	}))
	b.Run("serial", func(b *testing.B) {
		r := httptest.NewRequest("GET", "/orders/1", nil)
		r = r.WithContext(pylon.NewContext(r.Context(), &pylon.RequestInfo{Start: time.Now()}))
		w := httptest.NewRecorder()
		b.ReportAllocs()
		for b.Loop() {
			h.ServeHTTP(w, r)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			r := httptest.NewRequest("GET", "/orders/1", nil)
			r = r.WithContext(pylon.NewContext(r.Context(), &pylon.RequestInfo{Start: time.Now()}))
			w := httptest.NewRecorder()
			for pb.Next() {
				h.ServeHTTP(w, r)
			}
		})
	})
}
