package overload

import (
	"net/http"
	"sync"

	"github.com/pylon-gateway/pylon"
)

// MaxTargets bounds how many per-target limits one TargetLimit keeps.
// Targets past it are let through unlimited; a Backend has far fewer.
const MaxTargets = 4096

// TargetLimit is a static concurrency limit per upstream target of a pylon
// Backend. It implements pylon.Guard: set it as BackendOptions.Guard, and
// an attempt to a full target waits in that target's queue (when MaxQueued
// allows) and is otherwise refused, so that the Backend tries another
// target, and answers 503 with Retry-After when every one is refused. Each
// attempt (retries included) takes one place until it ends. A request waits
// in a queue at most once: after a limit refused it, the other targets'
// limits admit it only to a free place, without queueing (read from
// RequestInfo.Shed, so outside a Gateway each may wait again), so that its
// wait is bounded by one MaxWait whatever the number of targets.
type TargetLimit struct {
	cfg  Limits
	mu   sync.Mutex
	sems map[*pylon.Target]*sem
}

var _ pylon.Guard = (*TargetLimit)(nil)

// PerTarget returns a TargetLimit applying l to each target. It fails on
// invalid limits, naming them.
func PerTarget(l Limits) (*TargetLimit, error) {
	if _, err := newSem(l); err != nil {
		return nil, err
	}
	return &TargetLimit{cfg: l, sems: make(map[*pylon.Target]*sem)}, nil
}

// MustPerTarget is like PerTarget but panics on error.
func MustPerTarget(l Limits) *TargetLimit {
	g, err := PerTarget(l)
	if err != nil {
		panic(err)
	}
	return g
}

func (g *TargetLimit) sem(t *pylon.Target, create bool) *sem {
	g.mu.Lock()
	defer g.mu.Unlock()
	s := g.sems[t]
	if s == nil && create && len(g.sems) < MaxTargets {
		cfg := g.cfg
		cfg.Name = cfg.Name + " " + t.String()
		if cfg.Name[0] == ' ' {
			cfg.Name = "overload" + cfg.Name
		}
		s, _ = newSem(cfg) // validated by PerTarget
		g.sems[t] = s
	}
	return s
}

// Allow implements pylon.Guard: it admits the attempt to t, or refuses it
// with a [*ShedError] when t's limit and queue are full.
func (g *TargetLimit) Allow(r *http.Request, t *pylon.Target) (func(int, error), error) {
	s := g.sem(t, true)
	if s == nil {
		return nil, nil
	}
	// Refused by a limit already (counted then): a free place or nothing.
	wait := true
	if info := pylon.Info(r.Context()); info != nil && info.Shed != "" {
		wait = false
	}
	if err := s.acquire(r.Context(), isCritical(r), wait); err != nil {
		recordShed(r, s.cfg.Name)
		return nil, err
	}
	return releaser(s), nil
}

// releaser returns a done that releases s once.
func releaser(s *sem) func(int, error) {
	var once sync.Once
	return func(int, error) { once.Do(s.release) }
}

// Stats returns t's counters (zero when t had no attempt yet).
func (g *TargetLimit) Stats(t *pylon.Target) Stats {
	if s := g.sem(t, false); s != nil {
		return s.stats()
	}
	return Stats{Limit: g.cfg.MaxInFlight}
}

// ForgetTarget drops t's limit, as a Backend does for a target SetTargets
// removed. Attempts in flight on t end through the dropped limit.
func (g *TargetLimit) ForgetTarget(t *pylon.Target) {
	g.mu.Lock()
	delete(g.sems, t)
	g.mu.Unlock()
}

// BackendLimit is a static concurrency limit for a whole pylon Backend,
// whichever target an attempt goes to (Envoy's per-cluster max_requests and
// max_pending_requests). It implements pylon.Guard: set it as
// BackendOptions.Guard. A request waits in its queue at most once: when the
// wait fails, the other targets the Backend asks about are refused at once
// (read from RequestInfo.Shed, so outside a Gateway each may wait again).
type BackendLimit struct {
	s *sem
}

var _ pylon.Guard = (*BackendLimit)(nil)

// PerBackend returns a BackendLimit applying l. It fails on invalid limits,
// naming them.
func PerBackend(l Limits) (*BackendLimit, error) {
	s, err := newSem(l)
	if err != nil {
		return nil, err
	}
	return &BackendLimit{s: s}, nil
}

// MustPerBackend is like PerBackend but panics on error.
func MustPerBackend(l Limits) *BackendLimit {
	g, err := PerBackend(l)
	if err != nil {
		panic(err)
	}
	return g
}

// Allow implements pylon.Guard: it admits the attempt or refuses it with a
// [*ShedError].
func (g *BackendLimit) Allow(r *http.Request, _ *pylon.Target) (func(int, error), error) {
	crit := isCritical(r)
	if info := pylon.Info(r.Context()); info != nil && info.Shed == g.s.cfg.Name {
		// Refused already for this request (counted then): at once.
		return nil, &ShedError{Limit: g.s.cfg.Name, Retry: g.s.cfg.RetryAfter, Reason: "full"}
	}
	if err := g.s.acquire(r.Context(), crit, true); err != nil {
		recordShed(r, g.s.cfg.Name)
		return nil, err
	}
	return releaser(g.s), nil
}

// Stats returns the limit's counters.
func (g *BackendLimit) Stats() Stats { return g.s.stats() }
