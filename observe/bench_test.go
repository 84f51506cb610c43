package observe_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/observe"
)

// nopWriter is a ResponseWriter that throws everything away without
// allocating.
type nopWriter struct{ h http.Header }

func (w *nopWriter) Header() http.Header         { return w.h }
func (w *nopWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *nopWriter) WriteHeader(int)             {}

// BenchmarkMetricsMiddleware measures what the metrics middleware adds to a
// request inside a Gateway: the RequestInfo is made by the caller, as the
// Gateway does, and the handler records a route as routing does.
func BenchmarkMetricsMiddleware(b *testing.B) {
	m, err := observe.NewMetrics(prometheus.NewRegistry(), observe.MetricsOptions{})
	if err != nil {
		b.Fatal(err)
	}
	body := []byte("hello")
	h := m.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info := pylon.Info(r.Context())
		info.Route = "GET /orders/{id}"
		info.Backend, info.Attempts, info.UpstreamDuration = "orders", 1, time.Millisecond
		info.RateLimit.Decided, info.RateLimit.Allowed = true, true
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(body)
	}))
	info := &pylon.RequestInfo{}
	r, _ := http.NewRequestWithContext(pylon.NewContext(context.Background(), info), "GET", "/orders/1", nil)
	w := &nopWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		*info = pylon.RequestInfo{Start: time.Now()}
		h.ServeHTTP(w, r)
	}
}

// BenchmarkMetricsMiddlewareParallel is BenchmarkMetricsMiddleware from
// every core at once, all requests on one route, as under load: the
// metrics' shared counters are written from several cores.
func BenchmarkMetricsMiddlewareParallel(b *testing.B) {
	m, err := observe.NewMetrics(prometheus.NewRegistry(), observe.MetricsOptions{})
	if err != nil {
		b.Fatal(err)
	}
	body := []byte("hello")
	h := m.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info := pylon.Info(r.Context())
		info.Route = "GET /orders/{id}"
		info.Backend, info.Attempts, info.UpstreamDuration = "orders", 1, time.Millisecond
		info.RateLimit.Decided, info.RateLimit.Allowed = true, true
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(body)
	}))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		info := &pylon.RequestInfo{}
		r, _ := http.NewRequestWithContext(pylon.NewContext(context.Background(), info), "GET", "/orders/1", nil)
		w := &nopWriter{h: http.Header{}}
		for pb.Next() {
			*info = pylon.RequestInfo{Start: time.Now()}
			h.ServeHTTP(w, r)
		}
	})
}
