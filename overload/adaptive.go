package overload

import (
	"context"
	"errors"
	"math"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pylon-gateway/pylon"
)

// AdaptiveOptions configures an [AdaptiveLimit]. Every field's zero value
// is a safe default, written in its comment.
//
// The limit follows the gradient algorithm of Netflix's concurrency-limits
// (Gradient2), with the baseline taken as the minimum latency seen rather
// than a long average, so that it bounds latency and not only its growth.
// After each attempt that ended well (an upstream answer below 500, or a
// timeout, counted at its full length), with rtt its duration from Allow to
// done and minRTT the baseline:
//
//	gradient = clamp(Tolerance × minRTT / rtt, 0.5, 1)
//	target   = limit × gradient + QueueSize
//	limit    = clamp(limit × (1 − Smoothing) + target × Smoothing, MinLimit, MaxLimit)
//
// While the upstream answers in its uncontended time the gradient is 1 and
// the limit grows by Smoothing × QueueSize per attempt (not while fewer than
// half of its places are in use: an idle limit does not grow). Once
// concurrency makes the upstream slower than Tolerance × minRTT, the
// gradient falls below 1 and the limit shrinks, by at most half per step;
// for an upstream whose latency grows in proportion to its concurrency past
// some knee, the limit settles near Tolerance × knee + QueueSize, where
// latency is about Tolerance × minRTT. An attempt over the limit is refused
// at once (never queued): the Backend answers 503 with Retry-After.
//
// minRTT is the least rtt of the current MinRTTWindow and the one before;
// when a window ends with no lower sample, it may rise by at most 10 %, so
// an upstream that becomes slower for good is followed within a few windows,
// while sustained saturation (which hides the uncontended latency) lets the
// baseline creep up by at most 10 % per window. Attempts that failed (5xx,
// connection errors) or that the client cancelled are not samples.
type AdaptiveOptions struct {
	// Name names the limit in errors and RequestInfo.Shed. Empty means
	// "adaptive".
	Name string
	// InitialLimit is the limit to start from. Start low: the first
	// samples set the baseline, and a start above the upstream's knee
	// makes the baseline too high. Zero means 4 (within MinLimit and
	// MaxLimit).
	InitialLimit int
	// MinLimit is the least the limit falls to. Zero means 1.
	MinLimit int
	// MaxLimit is the most the limit grows to. Zero means 1000.
	MaxLimit int
	// Tolerance is how much slower than minRTT the upstream may answer
	// before the limit shrinks. Zero means 1.25; it must be at least 1.
	Tolerance float64
	// QueueSize is the growth term: how far past the concurrency that
	// keeps latency at Tolerance × minRTT the limit probes. Zero means 1.
	QueueSize float64
	// Smoothing is the weight of each new estimate, in (0, 1]. Zero means
	// 0.2.
	Smoothing float64
	// MinRTTWindow is how long a minimum latency is remembered. Zero means
	// 30s.
	MinRTTWindow time.Duration
	// RetryAfter is the delay sent in Retry-After with a refusal. Zero
	// means 1s.
	RetryAfter time.Duration
	// CriticalShare is the share of the limit (rounded up, at least 1)
	// kept for critical requests while any was seen in the last minute.
	// Zero means 0.1; negative means none is kept.
	CriticalShare float64
	// Now returns the current time. Zero means time.Now.
	Now func() time.Time
}

// AdaptiveLimit is a concurrency limit for a whole pylon Backend that adapts
// to the upstream's latency (see [AdaptiveOptions] for the algorithm). It
// implements pylon.Guard: set it as BackendOptions.Guard (with pylon.Guards
// to combine it with breakers). Each attempt takes one place, and its
// duration and outcome are a sample of the upstream's latency.
type AdaptiveLimit struct {
	cfg  AdaptiveOptions
	crit critical

	mu       sync.Mutex
	limit    float64
	inflight int
	winStart time.Time
	winMin   time.Duration // least sample of the current window, 0 when none
	baseline time.Duration // minRTT, 0 before the first sample

	admitted, shed, critShed atomic.Uint64
}

var _ pylon.Guard = (*AdaptiveLimit)(nil)

// Adaptive returns an AdaptiveLimit. It fails on invalid options, naming
// the limit.
func Adaptive(o AdaptiveOptions) (*AdaptiveLimit, error) {
	if o.Name == "" {
		o.Name = "adaptive"
	}
	bad := func(what string) error { return errors.New("overload: " + o.Name + ": " + what) }
	if o.MinLimit < 0 || o.MaxLimit < 0 || o.InitialLimit < 0 || o.MinRTTWindow < 0 || o.RetryAfter < 0 {
		return nil, bad("negative limit, window or RetryAfter")
	}
	if o.MinLimit == 0 {
		o.MinLimit = 1
	}
	if o.MaxLimit == 0 {
		o.MaxLimit = 1000
	}
	if o.MaxLimit < o.MinLimit {
		return nil, bad("MaxLimit below MinLimit")
	}
	if o.InitialLimit == 0 {
		o.InitialLimit = 4
	}
	o.InitialLimit = min(max(o.InitialLimit, o.MinLimit), o.MaxLimit)
	if o.Tolerance == 0 {
		o.Tolerance = 1.25
	}
	if o.Tolerance < 1 {
		return nil, bad("Tolerance below 1")
	}
	if o.QueueSize == 0 {
		o.QueueSize = 1
	}
	if o.QueueSize < 0 {
		return nil, bad("negative QueueSize")
	}
	if o.Smoothing == 0 {
		o.Smoothing = 0.2
	}
	if o.Smoothing < 0 || o.Smoothing > 1 {
		return nil, bad("Smoothing not in (0, 1]")
	}
	if o.MinRTTWindow == 0 {
		o.MinRTTWindow = 30 * time.Second
	}
	if o.RetryAfter == 0 {
		o.RetryAfter = time.Second
	}
	if o.CriticalShare == 0 {
		o.CriticalShare = 0.1
	}
	if o.CriticalShare >= 1 {
		return nil, bad("CriticalShare >= 1")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &AdaptiveLimit{cfg: o, limit: float64(o.InitialLimit)}, nil
}

// MustAdaptive is like Adaptive but panics on error.
func MustAdaptive(o AdaptiveOptions) *AdaptiveLimit {
	a, err := Adaptive(o)
	if err != nil {
		panic(err)
	}
	return a
}

// Allow implements pylon.Guard: it admits the attempt while fewer than the
// current limit are in flight (fewer than the limit less the critical share
// for a request that is not critical, while critical ones are about), and
// otherwise refuses it at once with a [*ShedError].
func (a *AdaptiveLimit) Allow(r *http.Request, _ *pylon.Target) (func(int, error), error) {
	now := a.cfg.Now()
	crit := isCritical(r)
	if crit {
		a.crit.seen(now)
	}
	a.mu.Lock()
	lim := int(a.limit)
	capN := lim
	if !crit && a.crit.recent(now) {
		capN -= reserve(lim, a.cfg.CriticalShare)
	}
	if a.inflight >= capN {
		a.mu.Unlock()
		a.shed.Add(1)
		if crit {
			a.critShed.Add(1)
		}
		recordShed(r, a.cfg.Name)
		return nil, &ShedError{Limit: a.cfg.Name, Retry: a.cfg.RetryAfter, Reason: "full"}
	}
	a.inflight++
	inflight := a.inflight
	a.mu.Unlock()
	a.admitted.Add(1)
	var once atomic.Bool
	return func(status int, err error) {
		if once.Swap(true) {
			return
		}
		a.sample(now, inflight, status, err)
	}, nil
}

// sample ends an attempt that began at start with inflight attempts in
// flight (itself included), and updates the limit from its latency.
func (a *AdaptiveLimit) sample(start time.Time, inflight, status int, err error) {
	now := a.cfg.Now()
	rtt := now.Sub(start)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.inflight--
	switch {
	case errors.Is(err, context.Canceled):
		return // the client went away: says nothing
	case err != nil && !isTimeout(err), err == nil && status >= 500:
		return // a failure is no latency sample; breakers judge failures
	}
	if rtt <= 0 {
		rtt = time.Nanosecond
	}
	a.observe(now, rtt, inflight)
}

// observe applies one latency sample; a.mu is held.
func (a *AdaptiveLimit) observe(now time.Time, rtt time.Duration, inflight int) {
	o := &a.cfg
	if a.winStart.IsZero() {
		a.winStart = now
	}
	if now.Sub(a.winStart) >= o.MinRTTWindow {
		if a.winMin > 0 {
			a.baseline = min(a.winMin, a.baseline+a.baseline/10)
		}
		a.winStart, a.winMin = now, 0
	}
	if a.winMin == 0 || rtt < a.winMin {
		a.winMin = rtt
	}
	if a.baseline == 0 || rtt < a.baseline {
		a.baseline = rtt
	}
	gradient := math.Max(0.5, math.Min(1, o.Tolerance*float64(a.baseline)/float64(rtt)))
	if gradient == 1 && float64(inflight) < a.limit/2 {
		return // not using its places: no reason to grow
	}
	target := a.limit*gradient + o.QueueSize
	l := a.limit*(1-o.Smoothing) + target*o.Smoothing
	a.limit = math.Min(float64(o.MaxLimit), math.Max(float64(o.MinLimit), l))
}

// Limit returns the current limit.
func (a *AdaptiveLimit) Limit() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return int(a.limit)
}

// MinRTT returns the baseline latency (zero before the first sample).
func (a *AdaptiveLimit) MinRTT() time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.baseline
}

// Stats returns the limit's counters.
func (a *AdaptiveLimit) Stats() Stats {
	a.mu.Lock()
	st := Stats{InFlight: a.inflight, Limit: int(a.limit)}
	a.mu.Unlock()
	st.Admitted, st.Shed, st.CriticalShed = a.admitted.Load(), a.shed.Load(), a.critShed.Load()
	return st
}

func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
