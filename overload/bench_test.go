package overload_test

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/overload"
	"github.com/pylon-gateway/pylon/ratelimit"
)

// discardWriter keeps nothing but a header map, so that the benchmarks
// measure the middleware and not a recorder.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(int)             {}

// clientRequest is a request from ip inside a context holding a
// RequestInfo, as a Gateway provides.
func clientRequest(ip string) *http.Request {
	req := httptest.NewRequest("GET", "http://api.example.com/orders/7", nil)
	info := &pylon.RequestInfo{ClientIP: netip.MustParseAddr(ip), Route: "orders"}
	return req.WithContext(pylon.NewContext(req.Context(), info))
}

// BenchmarkPerClient: a request admitted by overload.PerClient (keyed by
// IP; its key is counted, then forgotten as it ends), and one refused
// because its client already holds its one place.
func BenchmarkPerClient(b *testing.B) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
	b.Run("admitted", func(b *testing.B) {
		h := overload.PerClient(ratelimit.ByIP, 10)(ok)
		req, w := clientRequest("10.0.0.1"), &discardWriter{h: http.Header{}}
		b.ReportAllocs()
		for b.Loop() {
			h.ServeHTTP(w, req)
		}
	})
	b.Run("admitted/parallel", func(b *testing.B) {
		h := overload.PerClient(ratelimit.ByIP, 10)(ok)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			req, w := clientRequest("10.0.0.2"), &discardWriter{h: http.Header{}}
			for pb.Next() {
				h.ServeHTTP(w, req)
			}
		})
	})
	b.Run("shed", func(b *testing.B) {
		hold, held := make(chan struct{}), make(chan struct{})
		h := overload.PerClient(ratelimit.ByIP, 1)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("X-Hold") != "" {
				close(held)
				<-hold
			}
		}))
		holder := clientRequest("10.0.0.3")
		holder.Header.Set("X-Hold", "1")
		go h.ServeHTTP(&discardWriter{h: http.Header{}}, holder)
		<-held
		defer close(hold)
		req, w := clientRequest("10.0.0.3"), &discardWriter{h: http.Header{}}
		b.ReportAllocs()
		for b.Loop() {
			clear(w.h)
			h.ServeHTTP(w, req)
		}
	})
}
