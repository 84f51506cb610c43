package breaker

import "sync"

// StateFunc receives a breaker's state: from and to differ for a change of
// state, and are equal when the breaker is first seen (see
// [Breaker.WatchState]). name is the breaker's name ("Settings.Name
// target-URL" for a [TargetGuard]'s). It is called while the breaker is
// locked: it must be quick and must not use the breaker.
type StateFunc func(name string, from, to State)

// watchers is the list of StateFuncs of a config, shared by every breaker
// built on it (all of a TargetGuard's).
type watchers struct {
	mu  sync.Mutex // held while calling fns, so that no change is seen out of order
	fns []StateFunc
}

// notify calls every watcher.
func (w *watchers) notify(name string, from, to State) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, fn := range w.fns {
		fn(name, from, to)
	}
}

// add registers fn, first calling it with the current state of each named
// breaker that current lists.
func (w *watchers) add(fn StateFunc, current func(yield func(name string, s State))) {
	if fn == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	current(func(name string, s State) { fn(name, s, s) })
	w.fns = append(w.fns, fn)
}

// WatchState registers fn to be told of the breaker's state, for metrics
// without wiring Settings.OnStateChange by hand: fn is called at once with
// from and to both the current state (closed for a new breaker), then once
// for each change of state, after Settings.OnStateChange. Observers such as
// observe.Metrics.WatchBreaker use it.
func (b *Breaker) WatchState(fn StateFunc) {
	b.cfg.watch.add(fn, func(yield func(string, State)) { yield(b.name, b.State()) })
}

// WatchState registers fn to be told of the breaker's state, as
// [Breaker.WatchState] does.
func (g *BackendGuard) WatchState(fn StateFunc) { g.b.WatchState(fn) }

// WatchState registers fn to be told of the state of each of the guard's
// breakers, as [Breaker.WatchState] does: fn is called at once for each
// breaker the guard holds, then with from and to both closed for each
// breaker it creates (on a target's first attempt), and once for each
// change of state of any of them.
func (g *TargetGuard) WatchState(fn StateFunc) {
	g.mu.Lock() // no breaker is created meanwhile
	defer g.mu.Unlock()
	g.cfg.watch.add(fn, func(yield func(string, State)) {
		g.breakers.Range(func(_, v any) bool {
			b := v.(*Breaker)
			yield(b.name, b.State())
			return true
		})
	})
}

// Name returns the guard's name, Settings.Name: each of its breakers is
// named after it and its target's URL.
func (g *TargetGuard) Name() string { return g.cfg.name }
