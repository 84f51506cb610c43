package breaker

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/pylon-gateway/pylon"
)

// nopWriter is a ResponseWriter that keeps nothing, so that benchmarks
// measure the breaker rather than the recorder.
type nopWriter struct{ h http.Header }

func (w nopWriter) Header() http.Header         { return w.h }
func (w nopWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w nopWriter) WriteHeader(int)             {}

var okHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(200) })

func benchRequest() *http.Request {
	r := httptest.NewRequest("GET", "/orders/1", nil)
	return r.WithContext(pylon.NewContext(r.Context(), &pylon.RequestInfo{}))
}

// BenchmarkBaseline is the handler alone, to subtract from the others.
func BenchmarkBaseline(b *testing.B) {
	w, r := nopWriter{h: http.Header{}}, benchRequest()
	b.ReportAllocs()
	for b.Loop() {
		okHandler.ServeHTTP(w, r)
	}
}

// BenchmarkMiddlewareClosed is the closed-state overhead of the middleware.
func BenchmarkMiddlewareClosed(b *testing.B) {
	br := MustNew(Settings{Logger: quiet})
	h := br.Middleware(okHandler)
	w, r := nopWriter{h: http.Header{}}, benchRequest()
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(w, r)
	}
}

// BenchmarkMiddlewareOpen is a refusal: a 503 problem response.
func BenchmarkMiddlewareOpen(b *testing.B) {
	br := MustNew(Settings{ConsecutiveFailures: 1, Logger: quiet})
	do(br.Middleware(newUpstream(500)))
	h := br.Middleware(okHandler)
	r := benchRequest()
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(nopWriter{h: http.Header{}}, r)
	}
}

// BenchmarkTransportClosed is the closed-state overhead of the RoundTripper.
func BenchmarkTransportClosed(b *testing.B) {
	res := &http.Response{StatusCode: 200}
	rt := MustNew(Settings{Logger: quiet}).Transport(rtFunc(func(*http.Request) (*http.Response, error) { return res, nil }))
	r := benchRequest()
	b.ReportAllocs()
	for b.Loop() {
		_, _ = rt.RoundTrip(r)
	}
}

type rtFunc func(*http.Request) (*http.Response, error)

func (f rtFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// BenchmarkTargetGuardClosed is one attempt through a TargetGuard: Allow,
// then done.
func BenchmarkTargetGuardClosed(b *testing.B) {
	g := MustPerTarget(Settings{Logger: quiet})
	be := pylon.MustNewBackend("orders", pylon.BackendOptions{Targets: []string{"http://127.0.0.1:1"}})
	defer be.Close()
	t := be.Targets()[0]
	r := benchRequest()
	b.ReportAllocs()
	for b.Loop() {
		done, err := g.Allow(r, t)
		if err != nil {
			b.Fatal(err)
		}
		done(200, nil)
	}
}

// BenchmarkMiddlewareClosedParallel shows contention on the breaker's lock.
func BenchmarkMiddlewareClosedParallel(b *testing.B) {
	br := MustNew(Settings{Logger: quiet})
	h := br.Middleware(okHandler)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		w, r := nopWriter{h: http.Header{}}, benchRequest()
		for pb.Next() {
			h.ServeHTTP(w, r)
		}
	})
}
