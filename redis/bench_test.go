package pylonredis_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/pylon-gateway/pylon/ratelimit"
	pylonredis "github.com/pylon-gateway/pylon/redis"
)

// BenchmarkRedisDecision is one decision (one EVALSHA round trip) on the
// test Redis over loopback; it reports the p50 and p99 latency.
func BenchmarkRedisDecision(b *testing.B) {
	benchRedis(b, mustPrepare(b, ratelimit.PerSecond(1_000_000).WithBurst(1_000_000)))
}

// BenchmarkRedisDecisionTwoLimits is one decision against two limits (still
// one round trip).
func BenchmarkRedisDecisionTwoLimits(b *testing.B) {
	benchRedis(b, mustPrepare(b, ratelimit.PerSecond(1_000_000).WithBurst(1_000_000), ratelimit.PerHour(1_000_000_000)))
}

func benchRedis(b *testing.B, limits []ratelimit.Limit) {
	s := newStore(b, newClient(b, sharedAddr), pylonredis.RateLimitOptions{OnFailure: pylonredis.FailClosed, Timeout: time.Second})
	ctx := context.Background()
	if _, err := s.Allow(ctx, "ip:203.0.113.45", limits, time.Now()); err != nil { // load the script
		b.Fatal(err)
	}
	lat := make([]time.Duration, 0, 1<<16)
	b.ReportAllocs()
	for b.Loop() {
		start := time.Now()
		if _, err := s.Allow(ctx, "ip:203.0.113.45", limits, start); err != nil {
			b.Fatal(err)
		}
		if len(lat) < cap(lat) {
			lat = append(lat, time.Since(start))
		}
	}
	slices.Sort(lat)
	if len(lat) > 0 {
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	}
}
