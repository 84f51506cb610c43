package pylon

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Endpoint is one target of a Backend as given to [Backend.SetTargets]: a
// discovery source (package discovery) reports its targets as Endpoints.
type Endpoint struct {
	// URL is the target's base URL, as in BackendOptions.Targets.
	URL string
	// Weight is the target's weight for weighted balancers (>= 0). Zero
	// keeps the weight the target already has when it is in the set (or
	// was recently), and means 1 for a new target.
	Weight int
	// Priority orders targets in tiers, lower first (DNS SRV priorities):
	// requests go to the lowest tier that has a healthy target left to try
	// and at least PanicThreshold percent of its targets healthy (drained
	// targets, see [Target.SetDrained], count neither way: draining part of
	// a tier keeps its traffic on the rest); the next tier takes over when
	// it has not. Zero is the highest priority; when
	// every target has the same priority there is one tier.
	Priority int
}

// ErrNoTargets is the error a Backend answers with when its target set is
// empty: it was built with no Targets (a Backend fed by package discovery,
// before the source's first answer) or [Backend.SetTargets] was given no
// endpoints. The answer is 503 problem+json (gRPC: UNAVAILABLE) with
// Retry-After: 1, and RequestInfo.Error is this error's text. Discovery
// sources keep the last good set rather than empty a Backend, unless told
// otherwise.
var ErrNoTargets error = noTargetsError{}

// noTargetsError is [ErrNoTargets]: its RetryAfter is the Retry-After a
// Backend with no targets answers with.
type noTargetsError struct{}

func (noTargetsError) Error() string { return "pylon: backend has no targets" }

// RetryAfter tells the client to come back in a second: targets come with
// the next discovery answer, not with a backoff.
func (noTargetsError) RetryAfter() time.Duration { return time.Second }

// maxRetired bounds how many removed targets a Backend remembers, so that a
// target that leaves the set and comes back (a DNS answer that missed it
// once, a pod restarted on the same address) keeps its health, ejection
// history and breaker state.
const maxRetired = 1024

// maxAcquire bounds how many times one attempt re-picks after finding its
// chosen target removed by a concurrent SetTargets. Each re-pick reads the
// newer set, so only a storm of updates ever exhausts it.
const maxAcquire = 64

// errTargetRemoved is what a Guard is told when its admitted target was
// removed before the attempt began. It wraps context.Canceled: it says
// nothing about the target.
var errTargetRemoved = fmt.Errorf("pylon: target removed before the attempt: %w", context.Canceled)

// targetSet is one immutable generation of a pool's targets.
type targetSet struct {
	all   []*Target
	tiers [][]*Target // by priority, lowest first; nil when there is one tier
}

// SetTargets replaces the backend's targets with eps, atomically, while it
// serves. It validates every endpoint first and changes nothing when one is
// invalid, returning an error that names the backend and the endpoint.
//
// A target whose URL is in both the old and the new set is the same
// [*Target]: its in-flight count, passive and active health, ejection
// history, breaker state (a Guard keys it by target) and weight (unless
// eps gives one) carry over. A removed target takes no new attempt once
// SetTargets returns and finishes those in flight; when the last one ends,
// the transport's idle connections to it are closed (a transport with a
// CloseIdleConnectionsTo(*url.URL) method is asked for that target's alone;
// one with only CloseIdleConnections, like *http.Transport, closes all its
// idle connections). A removed target is remembered for a while: if it
// returns, it returns with its state. When a remembered target is
// forgotten, a Guard with a ForgetTarget(*Target) method is told, so that
// per-target state does not grow with churn. Active health checks start
// with new targets (a round runs at once) and stop with removed ones; a
// removed target that returns is checked at once too, so that one that was
// down when removed and is fixed since counts that check towards
// HealthyThreshold now rather than an Interval later.
//
// An empty eps empties the backend: it answers 503 ([ErrNoTargets]) until
// targets are set again, as a Backend built with no Targets does until its
// first SetTargets. Discovery sources keep the last good set rather than
// call it with an empty one, unless asked to. Targets that join an empty
// backend start together at full weight, as a Backend's first targets do:
// [SlowStart] ramps only targets that join a non-empty set.
//
// Calls are serialized; requests are never blocked by them.
func (b *Backend) SetTargets(eps []Endpoint) error {
	return b.pool.update(eps)
}

// Priority returns the target's priority tier, lower first (see
// [Endpoint.Priority]).
func (t *Target) Priority() int { return int(t.priority.Load()) }

// newTarget builds a target of p for the parsed URL u.
func (p *pool) newTarget(u *url.URL, raw string) (*Target, error) {
	t := &Target{url: u, str: u.String(), pool: p}
	t.weight.Store(1)
	t.hash = mix64(hashString(t.str))
	if p.hc.Path != "" {
		t.checkURL = strings.TrimSuffix(t.str, "/") + p.hc.Path
		if p.hc.GRPC { // a gRPC method's path is absolute
			t.checkURL = u.Scheme + "://" + u.Host + p.hc.Path
		}
		if _, err := url.Parse(t.checkURL); err != nil {
			return nil, fmt.Errorf("pylon: backend %q: target %q: health check URL: %w", p.name, raw, errors.Unwrap(err))
		}
	}
	return t, nil
}

// update replaces p's target set with eps (see Backend.SetTargets). The
// first call, from newPool, builds the initial set.
func (p *pool) update(eps []Endpoint) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var old []*Target
	if s := p.set.Load(); s != nil {
		old = s.all
	}
	cur := make(map[string]*Target, len(old))
	for _, t := range old {
		cur[t.str] = t
	}

	// Validate everything before changing anything.
	type entry struct {
		t      *Target
		weight int
		prio   int
	}
	next := make([]entry, len(eps))
	seen := make(map[string]bool, len(eps))
	for i, ep := range eps {
		u, err := parseTargetURL(ep.URL)
		if err != nil {
			return fmt.Errorf("pylon: backend %q: target %q: %w", p.name, ep.URL, err)
		}
		if ep.Weight < 0 {
			return fmt.Errorf("pylon: backend %q: target %q: weight %d, want at least 1", p.name, ep.URL, ep.Weight)
		}
		if ep.Priority < 0 {
			return fmt.Errorf("pylon: backend %q: target %q: negative priority %d", p.name, ep.URL, ep.Priority)
		}
		str := u.String()
		if seen[str] {
			return fmt.Errorf("pylon: backend %q: target %q: listed twice (use weights to favour a target)", p.name, ep.URL)
		}
		seen[str] = true
		t := cur[str]
		if t == nil {
			t = p.retired[str]
		}
		if t == nil {
			if t, err = p.newTarget(u, ep.URL); err != nil {
				return err
			}
		}
		next[i] = entry{t: t, weight: ep.Weight, prio: ep.Priority}
	}

	// Commit: revive and configure the targets, publish the set, then mark
	// the removed ones, so that an attempt that finds its target unmarked
	// was counted in flight before SetTargets returned.
	s := &targetSet{all: make([]*Target, len(next))}
	var added []*Target
	multiTier := false
	for i, e := range next {
		t := e.t
		if e.weight > 0 {
			t.weight.Store(int64(e.weight))
		}
		t.priority.Store(int32(min(e.prio, 1<<30)))
		if e.prio != next[0].prio {
			multiTier = true
		}
		if cur[t.str] == nil {
			if len(old) > 0 {
				t.startRamp(p.now().UnixNano())
			}
			delete(p.retired, t.str)
			t.drainClosed.Store(false)
			t.removed.Store(false)
			t.recheck.Store(true) // a returning target is checked at once too
			added = append(added, t)
		}
		s.all[i] = t
	}
	if multiTier {
		byPrio := slices.Clone(s.all)
		slices.SortStableFunc(byPrio, func(a, b *Target) int { return a.Priority() - b.Priority() })
		for i := 0; i < len(byPrio); {
			j := i + 1
			for j < len(byPrio) && byPrio[j].Priority() == byPrio[i].Priority() {
				j++
			}
			s.tiers = append(s.tiers, byPrio[i:j:j])
			i = j
		}
	}
	p.set.Store(s)

	for _, t := range old {
		if seen[t.str] {
			continue
		}
		t.removed.Store(true)
		p.retire(t)
		if t.inflight.Load() == 0 {
			p.drained(t)
		}
	}
	if len(added) > 0 && old != nil {
		p.kickChecks()
	}
	return nil
}

// retire remembers the removed target t, forgetting another one when too
// many are remembered. p.mu is held.
func (p *pool) retire(t *Target) {
	if p.retired == nil {
		p.retired = make(map[string]*Target)
	}
	if len(p.retired) >= maxRetired {
		for k, o := range p.retired {
			delete(p.retired, k)
			if p.forget != nil {
				p.forget(o)
			}
			break
		}
	}
	p.retired[t.str] = t
}

// acquire counts an attempt in flight on t, or reports false when t has
// been removed from the set (the caller picks again, from the newer set).
func (p *pool) acquire(t *Target) bool {
	t.inflight.Add(1)
	if t.removed.Load() {
		p.release(t)
		return false
	}
	return true
}

// release undoes acquire for an attempt that did not happen.
func (p *pool) release(t *Target) {
	if t.inflight.Add(-1) == 0 && t.removed.Load() {
		p.drained(t)
	}
}

// drained runs once when a removed target has no attempt left in flight.
func (p *pool) drained(t *Target) {
	if p.onDrained != nil && t.drainClosed.CompareAndSwap(false, true) {
		p.onDrained(t)
	}
}

// closeIdleTo closes the idle connections rt keeps to the drained target
// t: only t's when rt has CloseIdleConnectionsTo(*url.URL), else all of
// them when it has CloseIdleConnections.
func closeIdleTo(rt any, t *Target) {
	switch c := rt.(type) {
	case interface{ CloseIdleConnectionsTo(*url.URL) }:
		c.CloseIdleConnectionsTo(t.URL())
	case interface{ CloseIdleConnections() }:
		c.CloseIdleConnections()
	}
}

// forgetTarget tells g, when it keeps per-target state, that t is gone.
func forgetTarget(g Guard, t *Target) {
	if f, ok := g.(interface{ ForgetTarget(*Target) }); ok {
		f.ForgetTarget(t)
	}
}

// endpoints turns BackendOptions' Targets and Weights into Endpoints.
func endpoints(targets []string, weights []int) []Endpoint {
	eps := make([]Endpoint, len(targets))
	for i, u := range targets {
		eps[i] = Endpoint{URL: u, Weight: 1}
		if weights != nil {
			eps[i].Weight = weights[i]
		}
	}
	return eps
}
