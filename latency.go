package pylon

import (
	"math"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"
)

// The latency estimator behind HedgeOptions.Observed: one per target, made
// the first time the target's latency is recorded.
//
// Latencies are counted in microseconds in log-linear buckets: values
// below 8µs exactly, then 8 buckets per power of two up to 2^26µs (67s, and
// everything above), so that a bucket's midpoint is within 6.25 % of any
// value in it. There are two windows of latWindow each, the current one and
// the one before; a quantile is taken over both (the last 10 to 20 seconds)
// and is unknown while they hold fewer than latMinSamples samples. The
// memory is fixed (2 × 200 counters) and recording allocates nothing.
const (
	latSubBits    = 3
	latSub        = 1 << latSubBits // buckets per power of two
	latMaxExp     = 26              // 2^26µs ≈ 67s: the last bucket takes the rest
	latBuckets    = latSub + (latMaxExp-latSubBits+1)*latSub
	latWindow     = 10 * time.Second
	latMinSamples = 50
	// latRecompute is how many samples are recorded between two
	// computations of the quantile (every sample while there are few).
	latRecompute = 8
)

// latencyHist estimates one quantile of a target's latency. Record and
// quantile are safe for concurrent use; quantile takes no lock.
type latencyHist struct {
	q float64 // the quantile estimated, in (0, 1)

	mu     sync.Mutex
	epoch  int64 // the current window: UnixNano / latWindow
	counts [2][latBuckets]uint32
	n      [2]uint32 // samples per window
	cur    int       // index of the current window in counts
	since  int       // samples since the quantile was last computed

	// est is the last quantile computed, in nanoseconds, 0 while unknown;
	// estEpoch is the window it was computed in.
	est, estEpoch atomic.Int64
}

func newLatencyHist(q float64) *latencyHist { return &latencyHist{q: q} }

// latBucket returns the bucket of d.
func latBucket(d time.Duration) int {
	us := uint64(max(d, 0) / time.Microsecond)
	if us < latSub {
		return int(us)
	}
	e := bits.Len64(us) - 1
	if e > latMaxExp {
		return latBuckets - 1
	}
	m := int(us>>(e-latSubBits)) - latSub // 0..latSub-1
	return latSub + (e-latSubBits)*latSub + m
}

// latValue returns the midpoint of bucket i.
func latValue(i int) time.Duration {
	if i < latSub {
		return time.Duration(i)*time.Microsecond + time.Microsecond/2
	}
	e := (i-latSub)/latSub + latSubBits
	m := (i - latSub) % latSub
	width := uint64(1) << (e - latSubBits)
	low := uint64(latSub+m) * width
	return time.Duration(low)*time.Microsecond + time.Duration(width)*time.Microsecond/2
}

// record counts one latency d observed at now.
func (h *latencyHist) record(d time.Duration, now time.Time) {
	i := latBucket(d)
	h.mu.Lock()
	h.rotate(now.UnixNano() / int64(latWindow))
	c := h.cur
	if h.counts[c][i] < math.MaxUint32 {
		h.counts[c][i]++
		h.n[c]++
	}
	h.since++
	if h.since >= latRecompute || h.n[0]+h.n[1] <= latMinSamples {
		h.compute()
	}
	h.mu.Unlock()
}

// rotate makes e the current window; h.mu is held. The window before the
// current one is kept; older ones are cleared.
func (h *latencyHist) rotate(e int64) {
	switch {
	case e == h.epoch:
		return
	case e == h.epoch+1:
		h.cur ^= 1
		h.counts[h.cur] = [latBuckets]uint32{}
		h.n[h.cur] = 0
	default: // the first sample, a long pause, or a clock gone back
		h.counts = [2][latBuckets]uint32{}
		h.n = [2]uint32{}
	}
	h.epoch = e
	h.compute()
}

// compute stores the quantile of both windows in est; h.mu is held.
func (h *latencyHist) compute() {
	h.since = 0
	total := uint64(h.n[0]) + uint64(h.n[1])
	h.estEpoch.Store(h.epoch)
	if total < latMinSamples {
		h.est.Store(0)
		return
	}
	rank := uint64(math.Ceil(h.q * float64(total)))
	rank = max(rank, 1)
	var sum uint64
	for i := range latBuckets {
		sum += uint64(h.counts[0][i]) + uint64(h.counts[1][i])
		if sum >= rank {
			h.est.Store(int64(latValue(i)))
			return
		}
	}
	h.est.Store(int64(latValue(latBuckets - 1)))
}

// quantile returns the estimated quantile at now, or 0 when it is unknown:
// too few samples, or none recorded in the current window or the one
// before.
func (h *latencyHist) quantile(now time.Time) time.Duration {
	e := now.UnixNano() / int64(latWindow)
	if e-h.estEpoch.Load() > 1 {
		return 0
	}
	return time.Duration(h.est.Load())
}
