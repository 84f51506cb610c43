package breaker

import (
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/pylon-gateway/pylon"
)

// MaxTargets bounds how many breakers one TargetGuard creates. Targets past
// it are let through unguarded; a Backend has far fewer.
const MaxTargets = 4096

// TargetGuard keeps a circuit breaker per upstream target of a pylon
// Backend. It implements pylon.Guard: set it as BackendOptions.Guard, and
// the Backend skips a target whose breaker is open for another one, and
// answers 503 with Retry-After when every target is refused. Each attempt
// (retries included) is counted once, against the target it went to.
//
// Breakers are created on a target's first request, named
// "Settings.Name target-URL", and live as long as the guard, or until the
// Backend forgets the target (see ForgetTarget).
type TargetGuard struct {
	cfg      *config
	breakers sync.Map // *pylon.Target -> *Breaker
	mu       sync.Mutex
	n        atomic.Int32
	forget   []func(name string) // WatchForget's; under mu
}

var _ pylon.Guard = (*TargetGuard)(nil)

// PerTarget returns a TargetGuard whose breakers are configured by s. It
// fails on invalid settings, naming the breaker. Settings.Fallback does not
// apply: a Backend answers when every target is refused.
func PerTarget(s Settings) (*TargetGuard, error) {
	cfg, err := newConfig(s)
	if err != nil {
		return nil, err
	}
	return &TargetGuard{cfg: cfg}, nil
}

// MustPerTarget is like PerTarget but panics on error.
func MustPerTarget(s Settings) *TargetGuard {
	g, err := PerTarget(s)
	if err != nil {
		panic(err)
	}
	return g
}

// Allow implements pylon.Guard: it refuses t with a [*RefusedError] while
// t's breaker is open (or half-open with its probes under way), and
// otherwise returns the function that counts the attempt's outcome. It
// records the state seen in RequestInfo.Breaker.
func (g *TargetGuard) Allow(r *http.Request, t *pylon.Target) (func(int, error), error) {
	b := g.breaker(t)
	if b == nil {
		return noopFinish, nil
	}
	return b.guardAttempt(r)
}

// guardAttempt admits one Backend attempt through b, or refuses it with a
// [*RefusedError], and records the state seen in RequestInfo.Breaker.
func (b *Breaker) guardAttempt(r *http.Request) (func(int, error), error) {
	info := pylon.Info(r.Context())
	gdone, err := b.allow()
	if err != nil {
		ref := b.refusal(err)
		if info != nil {
			info.Breaker = StateOpen.String()
			if ref.Err == ErrTooManyRequests {
				info.Breaker = StateHalfOpen.String()
			}
		}
		return nil, ref
	}
	if info != nil {
		info.Breaker = b.State().String()
	}
	a := newAttempt()
	a.b, a.r, a.gdone = b, r, gdone
	return a.fn, nil
}

// BackendGuard is one circuit breaker for a whole pylon Backend, whichever
// target an attempt goes to. It implements pylon.Guard: while it is open
// the Backend refuses every request with 503 and Retry-After, without
// calling any target. Use it when the targets share their fate (one
// database behind them all); use PerTarget when they fail one by one.
type BackendGuard struct {
	b *Breaker
}

var _ pylon.Guard = (*BackendGuard)(nil)

// PerBackend returns a BackendGuard whose breaker is configured by s. It
// fails on invalid settings, naming the breaker. Settings.Fallback does not
// apply: the Backend answers when the breaker refuses.
func PerBackend(s Settings) (*BackendGuard, error) {
	cfg, err := newConfig(s)
	if err != nil {
		return nil, err
	}
	b, err := newBreaker(cfg, cfg.name, true)
	if err != nil {
		return nil, err
	}
	return &BackendGuard{b: b}, nil
}

// MustPerBackend is like PerBackend but panics on error.
func MustPerBackend(s Settings) *BackendGuard {
	g, err := PerBackend(s)
	if err != nil {
		panic(err)
	}
	return g
}

// Allow implements pylon.Guard: it refuses every target while the breaker
// is open, and otherwise counts the attempt's outcome.
func (g *BackendGuard) Allow(r *http.Request, _ *pylon.Target) (func(int, error), error) {
	return g.b.guardAttempt(r)
}

// State returns the breaker's state.
func (g *BackendGuard) State() State { return g.b.State() }

// Close stops the breaker's sync goroutine, as [Breaker.Close] does.
func (g *BackendGuard) Close() { g.b.Close() }

// Close stops the sync goroutines of the guard's breakers, as
// [Breaker.Close] does.
func (g *TargetGuard) Close() {
	g.breakers.Range(func(_, v any) bool {
		v.(*Breaker).Close()
		return true
	})
}

// State returns the state of t's breaker ("closed" when t has none yet).
func (g *TargetGuard) State(t *pylon.Target) State {
	if v, ok := g.breakers.Load(t); ok {
		return v.(*Breaker).State()
	}
	return StateClosed
}

// ForgetTarget drops t's breaker. A Backend calls it when a target that
// SetTargets removed is forgotten (a target that returns soon after its
// removal keeps its breaker), so that breakers do not pile up as targets
// churn. Attempts in flight on t still end through the dropped breaker.
func (g *TargetGuard) ForgetTarget(t *pylon.Target) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if v, ok := g.breakers.LoadAndDelete(t); ok {
		g.n.Add(-1)
		for _, fn := range g.forget {
			fn(v.(*Breaker).name)
		}
	}
}

// WatchForget calls fn with the name of each breaker the guard drops
// because its target left the Backend (ForgetTarget), so that a watcher
// (observe's metrics) forgets it too. fn must be quick and must not call
// the guard.
func (g *TargetGuard) WatchForget(fn func(name string)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.forget = append(g.forget, fn)
}

// Reset closes t's breaker (see [Breaker.Reset]); a target without one
// has nothing to reset.
func (g *TargetGuard) Reset(t *pylon.Target) error {
	if v, ok := g.breakers.Load(t); ok {
		return v.(*Breaker).Reset()
	}
	return nil
}

// Reset closes the breaker (see [Breaker.Reset]).
func (g *BackendGuard) Reset() error { return g.b.Reset() }

// Name returns the breaker's name.
func (g *BackendGuard) Name() string { return g.b.Name() }

// breaker returns t's breaker, creating it on first use; nil when the guard
// is full or a shared state store cannot be reached (the attempt is then
// let through, and creation tried again next time).
func (g *TargetGuard) breaker(t *pylon.Target) *Breaker {
	if v, ok := g.breakers.Load(t); ok {
		return v.(*Breaker)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if v, ok := g.breakers.Load(t); ok {
		return v.(*Breaker)
	}
	if g.n.Load() >= MaxTargets {
		return nil
	}
	b, err := newBreaker(g.cfg, g.cfg.name+" "+t.String(), true)
	if err != nil {
		g.cfg.logger.Error("breaker: cannot create target breaker; letting requests through",
			"breaker", g.cfg.name, "error", err.Error())
		return nil
	}
	g.breakers.Store(t, b)
	g.n.Add(1)
	g.cfg.watch.notify(b.name, StateClosed, StateClosed)
	return b
}

func noopFinish(int, error) {}

// attempt carries one admitted attempt to its end. Attempts are pooled and
// their done function made once, so that Allow allocates nothing of its own.
type attempt struct {
	b     *Breaker
	r     *http.Request
	gdone func(error)
	fn    func(int, error) // a.finish, bound once
}

var attemptPool sync.Pool

func newAttempt() *attempt {
	if a, ok := attemptPool.Get().(*attempt); ok {
		return a
	}
	a := new(attempt)
	a.fn = a.finish
	return a
}

// finish counts the attempt's outcome. pylon.Guard calls it exactly once.
func (a *attempt) finish(status int, err error) {
	b, r, gdone := a.b, a.r, a.gdone
	if gdone == nil {
		return // called twice: ignore rather than count twice
	}
	a.b, a.r, a.gdone = nil, nil, nil
	attemptPool.Put(a)
	gdone(b.cfg.outcome(r, status, err))
}
