package pylon

import (
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// epoch0 is a time at the start of a latency window, for the tests' clocks.
var epoch0 = time.Unix(1_700_000_000, 0).Truncate(latWindow)

func TestLatencyBuckets(t *testing.T) {
	prev := time.Duration(-1)
	for i := range latBuckets {
		v := latValue(i)
		assert.Equal(t, i, latBucket(v), "bucket of bucket %d's midpoint %v", i, v)
		assert.Greater(t, v, prev, "midpoints increase")
		prev = v
	}
	assert.Equal(t, 0, latBucket(-time.Second))
	assert.Equal(t, latBuckets-1, latBucket(time.Hour))
	// Every value is within 6.25 % of its bucket's midpoint.
	for d := 8 * time.Microsecond; d < 60*time.Second; d = d*17/16 + time.Microsecond {
		got := latValue(latBucket(d))
		assert.InEpsilon(t, float64(d), float64(got), 0.0625, "%v", d)
	}
}

// TestLatencyQuantileAccuracy compares the estimate with the exact
// quantile of the same samples, for a few distributions.
func TestLatencyQuantileAccuracy(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	dists := []struct {
		name string
		draw func() time.Duration
	}{
		{"uniform 1-100ms", func() time.Duration { return time.Millisecond + time.Duration(rng.Int64N(int64(99*time.Millisecond))) }},
		{"lognormal around 5ms", func() time.Duration {
			return time.Duration(float64(5*time.Millisecond) * math.Exp(0.6*rng.NormFloat64()))
		}},
		{"5ms with a 3% tail at 200ms", func() time.Duration {
			if rng.IntN(100) < 3 {
				return 200*time.Millisecond + time.Duration(rng.Int64N(int64(50*time.Millisecond)))
			}
			return 4*time.Millisecond + time.Duration(rng.Int64N(int64(2*time.Millisecond)))
		}},
		{"sub-millisecond", func() time.Duration { return time.Duration(50+rng.Int64N(400)) * time.Microsecond }},
	}
	for _, d := range dists {
		t.Run(d.name, func(t *testing.T) {
			for _, q := range []float64{0.5, 0.9, 0.95, 0.99} {
				h := newLatencyHist(q)
				xs := make([]time.Duration, 5000)
				for i := range xs {
					xs[i] = d.draw()
					h.record(xs[i], epoch0.Add(time.Duration(i)*time.Millisecond))
				}
				h.mu.Lock()
				h.compute()
				h.mu.Unlock()
				slices.Sort(xs)
				exact := xs[int(math.Ceil(q*float64(len(xs))))-1]
				got := h.quantile(epoch0.Add(5 * time.Second))
				assert.InEpsilon(t, float64(exact), float64(got), 0.07, "q%v: exact %v, estimate %v", q, exact, got)
			}
		})
	}
}

// TestLatencyMinSamples: the quantile is unknown until 50 samples.
func TestLatencyMinSamples(t *testing.T) {
	h := newLatencyHist(0.95)
	for i := range latMinSamples - 1 {
		h.record(10*time.Millisecond, epoch0.Add(time.Duration(i)))
	}
	assert.Zero(t, h.quantile(epoch0))
	h.record(10*time.Millisecond, epoch0)
	assert.InEpsilon(t, float64(10*time.Millisecond), float64(h.quantile(epoch0)), 0.0625)
}

// TestLatencyWindows: the estimate covers the current window and the one
// before; older samples drop out, and after two windows without a sample it
// is unknown.
func TestLatencyWindows(t *testing.T) {
	h := newLatencyHist(0.5)
	at := func(w int, i int) time.Time {
		return epoch0.Add(time.Duration(w)*latWindow + time.Duration(i)*time.Millisecond)
	}
	for i := range 100 {
		h.record(10*time.Millisecond, at(0, i))
	}
	assert.InEpsilon(t, float64(10*time.Millisecond), float64(h.quantile(at(0, 100))), 0.0625)
	// Window 1: a slower upstream. Both windows count: 100 at 10ms, 150 at 100ms.
	for i := range 150 {
		h.record(100*time.Millisecond, at(1, i))
	}
	assert.InEpsilon(t, float64(100*time.Millisecond), float64(h.quantile(at(1, 150))), 0.0625)
	// Window 2: the 10ms samples are gone, the 100ms ones remain.
	for i := range 10 {
		h.record(time.Millisecond, at(2, i))
	}
	assert.InEpsilon(t, float64(100*time.Millisecond), float64(h.quantile(at(2, 10))), 0.0625)
	// Still known in window 3 (the estimate of window 2), unknown in window 4.
	assert.NotZero(t, h.quantile(at(3, 0)))
	assert.Zero(t, h.quantile(at(4, 0)))
	// A sample after a long pause starts afresh.
	h.record(time.Millisecond, at(9, 0))
	assert.Zero(t, h.quantile(at(9, 1)), "one sample is too few")
	h.mu.Lock()
	assert.Equal(t, uint32(1), h.n[h.cur])
	assert.Zero(t, h.n[h.cur^1])
	h.mu.Unlock()
}

func TestLatencyConcurrent(t *testing.T) {
	h := newLatencyHist(0.95)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 1000 {
				h.record(time.Duration(g+1)*time.Millisecond, epoch0.Add(time.Duration(i)))
				_ = h.quantile(epoch0)
			}
		})
	}
	wg.Wait()
	h.mu.Lock()
	assert.Equal(t, uint32(4000), h.n[0]+h.n[1])
	h.mu.Unlock()
	assert.InEpsilon(t, float64(4*time.Millisecond), float64(h.quantile(epoch0)), 0.0625)
}

func TestLatencyRecordAllocs(t *testing.T) {
	h := newLatencyHist(0.95)
	now := epoch0
	allocs := testing.AllocsPerRun(1000, func() {
		now = now.Add(time.Millisecond)
		h.record(5*time.Millisecond, now)
		_ = h.quantile(now)
	})
	assert.Zero(t, allocs)
}

// TestHedgeOptionsValidation: bad hedge settings fail NewBackend, naming
// the backend and the field.
func TestHedgeOptionsValidation(t *testing.T) {
	for _, tc := range []struct {
		h    HedgeOptions
		want string
	}{
		{HedgeOptions{Delay: -1}, "negative Hedge.Delay"},
		{HedgeOptions{Delay: time.Millisecond, Quantile: 0.9}, "Hedge.Quantile is set without Hedge.Observed"},
		{HedgeOptions{Observed: true}, "Hedge.Observed needs a Hedge.Delay"},
		{HedgeOptions{Delay: time.Millisecond, Observed: true, Quantile: 1}, "Hedge.Quantile 1 is not in (0, 1)"},
		{HedgeOptions{Delay: time.Millisecond, Observed: true, Quantile: -0.5}, "not in (0, 1)"},
		{HedgeOptions{Delay: time.Millisecond, Observed: true, Quantile: math.NaN()}, "not in (0, 1)"},
	} {
		_, err := NewBackend("orders", BackendOptions{Targets: []string{"http://127.0.0.1:1"}, Hedge: tc.h})
		require.Error(t, err, "%+v", tc.h)
		assert.Contains(t, err.Error(), `backend "orders"`)
		assert.Contains(t, err.Error(), tc.want)
	}
	b, err := NewBackend("orders", BackendOptions{Targets: []string{"http://127.0.0.1:1"},
		Hedge: HedgeOptions{Delay: time.Millisecond, Observed: true}})
	require.NoError(t, err)
	defer b.Close()
	assert.Equal(t, 0.95, b.opts.Hedge.Quantile, "the default quantile")
	tg := b.Targets()[0]
	assert.Equal(t, time.Millisecond, b.hedgeDelay(tg, time.Now()), "Delay until there are samples")
	now := time.Now()
	for range latMinSamples {
		b.recordLatency(tg, 20*time.Millisecond, now)
	}
	assert.InEpsilon(t, float64(20*time.Millisecond), float64(b.hedgeDelay(tg, now)), 0.0625)
	for range 20 * latMinSamples { // the 20ms ones are now under 5 %
		b.recordLatency(tg, 100*time.Microsecond, now)
	}
	assert.Equal(t, time.Millisecond, b.hedgeDelay(tg, now), "never below Delay")
}

func BenchmarkLatencyRecord(b *testing.B) {
	h := newLatencyHist(0.95)
	now := time.Now()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			h.record(5*time.Millisecond, now)
			_ = h.quantile(now)
		}
	})
}
