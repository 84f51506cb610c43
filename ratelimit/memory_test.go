package ratelimit_test

import (
	"math/rand/v2"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/pylon-gateway/pylon/ratelimit"
)

var epoch = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func mustPrepare(t testing.TB, limits ...ratelimit.Limit) []ratelimit.Limit {
	t.Helper()
	p, err := ratelimit.PrepareLimits(limits...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Over a span, a limit admits rate × span + burst requests (± 1), whatever
// the pace of the requests, with time injected.
func TestAccuracyInjectedTime(t *testing.T) {
	tests := []struct {
		name  string
		limit ratelimit.Limit
		span  time.Duration
		step  time.Duration
	}{
		{"10/s burst 5 over 60s, every 1ms", ratelimit.PerSecond(10).WithBurst(5), 60 * time.Second, time.Millisecond},
		{"100/min over 10min, every 7ms", ratelimit.PerMinute(100), 10 * time.Minute, 7 * time.Millisecond},
		{"3/s burst 1 over 20s, every 1ms", ratelimit.PerSecond(3).WithBurst(1), 20 * time.Second, time.Millisecond},
		{"1000/h burst 50 over 2h, every 1s", ratelimit.PerHour(1000).WithBurst(50), 2 * time.Hour, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := ratelimit.NewMemoryStore(ratelimit.MemoryOptions{})
			limits := mustPrepare(t, tt.limit)
			admitted := 0
			for now := epoch; now.Before(epoch.Add(tt.span)); now = now.Add(tt.step) {
				if s.AllowAt("ip:192.0.2.1", limits, now).Allowed {
					admitted++
				}
			}
			l := limits[0]
			want := float64(l.Quota)*tt.span.Seconds()/l.Window.Seconds() + float64(l.Burst)
			if d := float64(admitted) - want; d < -1 || d > 1 {
				t.Fatalf("admitted %d, want %.0f ± 1", admitted, want)
			}
		})
	}
}

// The store decides as x/time/rate's Limiter with the same rate and burst.
func TestMatchesXTimeRate(t *testing.T) {
	tests := []ratelimit.Limit{
		ratelimit.PerSecond(10).WithBurst(3),
		ratelimit.PerSecond(1),
		ratelimit.PerMinute(600).WithBurst(20),
	}
	for _, l := range tests {
		l := mustPrepare(t, l)[0]
		t.Run(l.Name, func(t *testing.T) {
			s := ratelimit.NewMemoryStore(ratelimit.MemoryOptions{})
			ref := rate.NewLimiter(l.Rate(), l.Burst)
			rng := rand.New(rand.NewPCG(1, 2))
			now := epoch
			ref.AllowN(now, 0) // start the reference's clock at epoch with a full bucket
			for i := 0; i < 5000; i++ {
				// Gaps in odd microseconds, so that no request falls
				// exactly on a refill boundary where float rounding in
				// x/time/rate could tip either way.
				now = now.Add(time.Duration(rng.IntN(200_000)*2+1) * time.Microsecond)
				got := s.AllowAt("k", []ratelimit.Limit{l}, now).Allowed
				want := ref.AllowN(now, 1)
				if got != want {
					t.Fatalf("request %d at %v: store says %v, x/time/rate says %v", i, now.Sub(epoch), got, want)
				}
			}
		})
	}
}

// A request denied by one limit uses up none of the others.
func TestMultipleLimitsAllOrNothing(t *testing.T) {
	s := ratelimit.NewMemoryStore(ratelimit.MemoryOptions{})
	limits := mustPrepare(t, ratelimit.PerSecond(2), ratelimit.PerMinute(5))
	now := epoch
	var got []bool
	var remaining [][2]int
	for i := 0; i < 4; i++ { // 2 pass, 2 denied by the per-second limit
		d := s.AllowAt("k", limits, now)
		got = append(got, d.Allowed)
		remaining = append(remaining, [2]int{d.Results[0].Remaining, d.Results[1].Remaining})
	}
	want := []bool{true, true, false, false}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("decisions %v, want %v", got, want)
		}
	}
	if remaining[3] != [2]int{0, 3} {
		t.Fatalf("after denials remaining = %v, want [0 3]: a denied request must not count", remaining[3])
	}
	// One second later the per-second bucket is full again; the per-minute
	// one has 3 left (5 - 2 admitted), so 3 more pass, not 1.
	now = now.Add(time.Second)
	d := s.AllowAt("k", limits, now)
	if !d.Allowed || d.Results[1].Remaining != 2 {
		t.Fatalf("got %+v, want allowed with 2 left per minute", d.Results[:2])
	}
	d = s.AllowAt("k", limits, now)
	d = s.AllowAt("k", limits, now.Add(time.Second))
	if !d.Allowed || d.Results[1].Remaining != 0 {
		t.Fatalf("got %+v, want allowed with 0 left per minute", d.Results[:2])
	}
	d = s.AllowAt("k", limits, now.Add(2*time.Second))
	if d.Allowed || !d.Results[0].Allowed || d.Results[1].Allowed {
		t.Fatalf("got %+v, want denied by the per-minute limit only", d.Results[:2])
	}
	// 5 admitted by t=2s fill the per-minute bucket until t=60s; one
	// request's worth (12s) is back at t=12s, 9s after this request at t=3s.
	if got := d.RetryAfter(); got != 9*time.Second {
		t.Fatalf("RetryAfter = %v, want 9s", got)
	}
	if d.Results[0].Remaining != 2 {
		t.Fatalf("per-second remaining = %d, want 2: the denied request was not charged", d.Results[0].Remaining)
	}
	if d.Tightest() != 1 {
		t.Fatalf("Tightest = %d, want 1", d.Tightest())
	}
}

func TestDecisionFigures(t *testing.T) {
	s := ratelimit.NewMemoryStore(ratelimit.MemoryOptions{})
	limits := mustPrepare(t, ratelimit.PerSecond(10).WithBurst(3))
	tests := []struct {
		at                 time.Duration
		allowed            bool
		remaining          int
		retryAfter, resetD time.Duration
	}{
		{0, true, 2, 0, 100 * time.Millisecond},
		{0, true, 1, 0, 200 * time.Millisecond},
		{0, true, 0, 0, 300 * time.Millisecond},
		{0, false, 0, 100 * time.Millisecond, 300 * time.Millisecond},
		{50 * time.Millisecond, false, 0, 50 * time.Millisecond, 250 * time.Millisecond},
		{100 * time.Millisecond, true, 0, 0, 300 * time.Millisecond},
		{time.Second, true, 2, 0, 100 * time.Millisecond},
	}
	for i, tt := range tests {
		d := s.AllowAt("k", limits, epoch.Add(tt.at))
		r := d.Results[0]
		if r.Allowed != tt.allowed || r.Remaining != tt.remaining || r.RetryAfter != tt.retryAfter || r.Reset != tt.resetD {
			t.Errorf("step %d at %v: got %+v, want allowed=%v remaining=%d retry=%v reset=%v",
				i, tt.at, r, tt.allowed, tt.remaining, tt.retryAfter, tt.resetD)
		}
	}
}

func TestLimitValidate(t *testing.T) {
	tests := []struct {
		name string
		l    ratelimit.Limit
		ok   bool
	}{
		{"per second", ratelimit.PerSecond(10), true},
		{"defaults", ratelimit.Limit{Quota: 5}, true},
		{"zero quota", ratelimit.Limit{}, false},
		{"negative burst", ratelimit.PerSecond(1).WithBurst(-1), false},
		{"sub-second window", ratelimit.Limit{Quota: 1, Window: 500 * time.Millisecond}, false},
		{"fractional window", ratelimit.Limit{Quota: 1, Window: 1500 * time.Millisecond}, false},
		{"bad name", ratelimit.PerSecond(1).Named(`a"b`), false},
		{"too fast", ratelimit.PerSecond(2_000_000), false},
		{"huge burst", ratelimit.PerSecond(1).WithBurst(2_000_000_000), false},
		{"burst refilling for decades", ratelimit.PerHour(1).WithBurst(1_000_000), false},
		{"large hourly quota", ratelimit.PerHour(1_000_000_000), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.l.Validate(); (err == nil) != tt.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
		})
	}
	if _, err := ratelimit.PrepareLimits(ratelimit.PerSecond(1).Named("a"), ratelimit.PerMinute(1).Named("a")); err == nil {
		t.Fatal("duplicate names accepted")
	}
	if _, err := ratelimit.PrepareLimits(); err == nil {
		t.Fatal("no limits accepted")
	}
	if got := mustPrepare(t, ratelimit.PerHour(1000))[0].Name; got != "1000-per-3600s" {
		t.Fatalf("default name %q", got)
	}
}

// Many goroutines on one key at one instant admit exactly the burst.
func TestConcurrentSameKey(t *testing.T) {
	s := ratelimit.NewMemoryStore(ratelimit.MemoryOptions{})
	limits := mustPrepare(t, ratelimit.PerMinute(100).WithBurst(50))
	var admitted atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				if s.AllowAt("k", limits, epoch).Allowed {
					admitted.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if admitted.Load() != 50 {
		t.Fatalf("admitted %d, want 50", admitted.Load())
	}
}

func TestMemoryStoreBoundedLRU(t *testing.T) {
	s := ratelimit.NewMemoryStore(ratelimit.MemoryOptions{MaxKeys: 64, Shards: 1})
	limits := mustPrepare(t, ratelimit.PerHour(1).WithBurst(1))
	// "victim" uses its one request, then keeps being seen (denied) while
	// 1000 other keys pass through: as recently used, it is never evicted.
	if !s.AllowAt("victim", limits, epoch).Allowed {
		t.Fatal("first request denied")
	}
	for i := 0; i < 1000; i++ {
		s.AllowAt("k"+strconv.Itoa(i), limits, epoch)
		if i%10 == 0 && s.AllowAt("victim", limits, epoch).Allowed {
			t.Fatalf("victim admitted again after %d other keys", i)
		}
	}
	if n := s.Len(); n > 64 {
		t.Fatalf("Len = %d, want <= 64", n)
	}
	// A key not seen since is the least recently used and was evicted:
	// its client is forgiven.
	if !s.AllowAt("k0", limits, epoch).Allowed {
		t.Fatal("k0 still limited: least recently used key was not evicted")
	}
}

// Full (expired) buckets hold no information; their slots are reused before
// the store grows.
func TestMemoryStoreReusesExpired(t *testing.T) {
	s := ratelimit.NewMemoryStore(ratelimit.MemoryOptions{MaxKeys: 10_000, Shards: 1})
	limits := mustPrepare(t, ratelimit.PerSecond(10).WithBurst(1)) // a bucket expires 100ms after use
	now := epoch
	for i := 0; i < 5000; i++ {
		now = now.Add(time.Second)
		s.AllowAt("k"+strconv.Itoa(i), limits, now)
	}
	if n := s.Len(); n > 1 {
		t.Fatalf("Len = %d, want 1: expired buckets were not reused", n)
	}
}

// One million distinct keys stay under the configured bound; the test
// reports the memory per bucket at capacity.
func TestMillionKeysMemoryBound(t *testing.T) {
	keys := 1_000_000
	if testing.Short() {
		keys = 200_000
	}
	const maxKeys = 100_000
	const bytesPerKeyBound = 250 // documented as "about 200 bytes with a short key"
	limits := mustPrepare(t, ratelimit.PerMinute(10))

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	s := ratelimit.NewMemoryStore(ratelimit.MemoryOptions{MaxKeys: maxKeys})
	var buf []byte
	for i := 0; i < keys; i++ {
		buf = strconv.AppendInt(append(buf[:0], "ip:10."...), int64(i), 10)
		s.AllowAt(string(buf), limits, epoch)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	n := s.Len()
	if n > maxKeys {
		t.Fatalf("Len = %d after %d keys, want <= %d", n, keys, maxKeys)
	}
	used := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	perKey := float64(used) / float64(n)
	t.Logf("%d distinct keys: %d buckets kept, heap %d bytes, %.0f bytes per bucket (key ~13 bytes)", keys, n, used, perKey)
	if used > maxKeys*bytesPerKeyBound {
		t.Fatalf("heap grew by %d bytes, over the bound of %d (%d bytes per key)", used, maxKeys*bytesPerKeyBound, bytesPerKeyBound)
	}
	runtime.KeepAlive(s)
}
