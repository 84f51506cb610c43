package ratelimit_test

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/ratelimit"
)

// BenchmarkMemoryDecision is one decision for an IP key in a warm store.
func BenchmarkMemoryDecision(b *testing.B) {
	s := ratelimit.NewMemoryStore(ratelimit.MemoryOptions{})
	limits := mustPrepare(b, ratelimit.PerSecond(1_000_000).WithBurst(1000))
	key := "ip:203.0.113.45"
	now := epoch
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(time.Microsecond)
		s.AllowAt(key, limits, now)
	}
}

// BenchmarkMemoryDecisionTwoLimits is one decision against 10/s and 1000/h.
func BenchmarkMemoryDecisionTwoLimits(b *testing.B) {
	s := ratelimit.NewMemoryStore(ratelimit.MemoryOptions{})
	limits := mustPrepare(b, ratelimit.PerSecond(10), ratelimit.PerHour(1000))
	key := "ip:203.0.113.45"
	b.ReportAllocs()
	for b.Loop() {
		s.AllowAt(key, limits, epoch)
	}
}

// BenchmarkMemoryDecisionParallel is decisions from all cores over 10,000
// IP keys, to show that sharding avoids lock contention.
func BenchmarkMemoryDecisionParallel(b *testing.B) {
	s := ratelimit.NewMemoryStore(ratelimit.MemoryOptions{})
	limits := mustPrepare(b, ratelimit.PerSecond(100))
	keys := make([]string, 10_000)
	for i := range keys {
		keys[i] = "ip:10.0." + strconv.Itoa(i/256) + "." + strconv.Itoa(i%256)
	}
	var seq atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := int(seq.Add(1)) * 7919
		for pb.Next() {
			i++
			s.AllowAt(keys[i%len(keys)], limits, epoch)
		}
	})
}

// BenchmarkMiddleware is the whole middleware for an admitted request keyed
// by IP, headers included.
func BenchmarkMiddleware(b *testing.B) {
	h := ratelimit.MustNewWithOptions(ratelimit.Options{
		Limits: []ratelimit.Limit{ratelimit.PerSecond(1_000_000_000 / 1000).WithBurst(1_000_000)},
	})(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	r := httptest.NewRequest("GET", "/", nil)
	r = r.WithContext(pylon.NewContext(r.Context(), &pylon.RequestInfo{ClientIP: netip.MustParseAddr("203.0.113.45")}))
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		h.ServeHTTP(w, r)
	}
}

type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(int)             {}
