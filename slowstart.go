package pylon

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"time"
)

// SlowStartOptions configures [SlowStart]. Every field's zero value is a
// safe default, written in its comment.
type SlowStartOptions struct {
	// Window is how long a new or returning target takes to reach its full
	// weight. Zero means 30s.
	Window time.Duration
	// Aggression shapes the ramp: after a time e into the window, the
	// target's weight is its full weight times (e / Window) ^ (1 /
	// Aggression), as in Envoy's slow_start_config. 1 ramps linearly; above
	// 1 the weight rises fast and then levels off; below 1 it stays low
	// and rises late. Zero means 1.
	Aggression float64
	// MinWeightPercent is the least share of its full weight a ramping
	// target gets (0 < p <= 100), so that it is tried at all early in the
	// window. Zero means 10.
	MinWeightPercent float64
}

// SlowStart returns a Balancer that picks with b while letting new and
// returning targets ramp up their share of requests over a window (Envoy's
// slow start, HAProxy's slowstart), so that a cold instance (empty caches,
// a JIT still warming, a connection pool to fill) is not flattened by a
// full share the moment it appears. Set it as BackendOptions.Balancer:
//
//	Balancer: pylon.SlowStart(pylon.LeastRequests(), pylon.SlowStartOptions{Window: time.Minute})
//
// A target ramps when it joins the set through [Backend.SetTargets] (a new
// one, or a removed one that returns), when its passive ejection ends, and
// when it passes its active health checks again. The targets a Backend is
// built with start at full weight: they start together, so a ramp would
// change nothing between them. While a target ramps, its
// [Target.EffectiveWeight] is its [Target.Weight] scaled down as
// SlowStartOptions says; [WeightedRoundRobin], [LeastRequests] and
// [PowerOfTwoChoices] read it, and [RoundRobin] (which ignores weights)
// picks at random by effective weight while some target ramps, round robin
// otherwise. [ConsistentHash] ignores slow start: ramping a hash weight
// would move keys back and forth. A custom Balancer may read
// EffectiveWeight.
//
// The Backend reads time from its clock, so tests need not wait. Options
// out of range fail NewBackend with an error that names the backend. Pick
// does not allocate beyond what b does.
func SlowStart(b Balancer, opts SlowStartOptions) Balancer {
	if b == nil {
		b = RoundRobin()
	}
	return &slowStart{inner: b, opts: opts}
}

type slowStart struct {
	inner Balancer
	opts  SlowStartOptions // as given; validated by newPool
}

// slowStartConfig is SlowStartOptions, validated and normalized.
type slowStartConfig struct {
	window     int64   // nanoseconds, > 0
	invAggr    float64 // 1 / Aggression
	minFactor  float64 // MinWeightPercent / 100
	linear     bool    // invAggr == 1
	randomPick bool    // the inner balancer ignores weights: pick by weight while ramping
}

func (o SlowStartOptions) config() (*slowStartConfig, error) {
	switch {
	case o.Window < 0:
		return nil, fmt.Errorf("SlowStart Window %v is negative", o.Window)
	case o.Aggression < 0 || math.IsNaN(o.Aggression) || math.IsInf(o.Aggression, 0):
		return nil, fmt.Errorf("SlowStart Aggression %v is not a positive number", o.Aggression)
	case o.MinWeightPercent < 0 || o.MinWeightPercent > 100 || math.IsNaN(o.MinWeightPercent):
		return nil, fmt.Errorf("SlowStart MinWeightPercent %v is not in (0, 100]", o.MinWeightPercent)
	}
	c := &slowStartConfig{window: int64(o.Window), invAggr: 1, minFactor: 0.1}
	if c.window == 0 {
		c.window = int64(30 * time.Second)
	}
	if o.Aggression != 0 {
		c.invAggr = 1 / o.Aggression
	}
	c.linear = c.invAggr == 1
	if o.MinWeightPercent != 0 {
		c.minFactor = o.MinWeightPercent / 100
	}
	return c, nil
}

// factor is the share of its full weight a target has e nanoseconds into
// its ramp, in [minFactor, 1).
func (c *slowStartConfig) factor(e int64) float64 {
	// Envoy counts at least one second in, so the first requests after a
	// return see the minimum rather than zero.
	f := float64(max(e, int64(time.Second))) / float64(c.window)
	if !c.linear {
		f = math.Pow(f, c.invAggr)
	}
	return min(max(f, c.minFactor), 1)
}

func (s *slowStart) Pick(r *http.Request, targets []*Target) *Target {
	if p := targets[0].pool; p != nil && p.slow != nil && p.slow.randomPick {
		for _, t := range targets {
			if t.rampFrom.Load() != 0 {
				return pickByWeight(targets)
			}
		}
	}
	return s.inner.Pick(r, targets)
}

// pickByWeight picks one of targets at random in proportion to their
// effective weights.
func pickByWeight(targets []*Target) *Target {
	var total int64
	for _, t := range targets {
		total += t.effWeight()
	}
	n := rand.Int64N(total)
	for _, t := range targets {
		if n -= t.effWeight(); n < 0 {
			return t
		}
	}
	return targets[len(targets)-1] // weights changed under us
}

// weightShift scales effective weights, so that a ramping target of weight
// 1 still weighs more than nothing and ramps smoothly.
const weightShift = 10

// maxScaledWeight keeps scaled weights and their products with in-flight
// counts far from overflow.
const maxScaledWeight = 1 << 40

// EffectiveWeight returns the weight weighted balancers give the target
// now: its [Target.Weight], scaled down while it ramps up under
// [SlowStart] (by at most MinWeightPercent), else the Weight itself.
func (t *Target) EffectiveWeight() float64 {
	return float64(t.effWeight()) / (1 << weightShift)
}

// effWeight is the effective weight in units of 1/1024, at least 1. It
// reads the clock only while the target ramps, and ends a ramp found over.
func (t *Target) effWeight() int64 {
	w := min(int64(t.Weight())<<weightShift, maxScaledWeight)
	from := t.rampFrom.Load()
	if from == 0 || t.pool == nil || t.pool.slow == nil {
		return w
	}
	c := t.pool.slow
	e := t.pool.now().UnixNano() - from
	if e >= c.window {
		t.rampFrom.CompareAndSwap(from, 0)
		return w
	}
	return max(int64(float64(w)*c.factor(e)), 1)
}

// startRamp begins t's slow start at now (UnixNano), when the pool has
// slow start.
func (t *Target) startRamp(now int64) {
	if t.pool != nil && t.pool.slow != nil {
		t.rampFrom.Store(max(now, 1))
	}
}

// Ramping reports whether the target is ramping up under [SlowStart].
func (t *Target) Ramping() bool {
	return t.effWeight() < min(int64(t.Weight())<<weightShift, maxScaledWeight)
}
