package breaker

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/pylon-gateway/pylon"
)

// ErrOpen is the error a breaker refuses requests with while it is open.
// Refusals are [*RefusedError] values that wrap it.
var ErrOpen = errors.New("breaker: circuit open")

// ErrTooManyRequests is the error a half-open breaker refuses requests with
// once its probes are under way. Refusals are [*RefusedError] values that
// wrap it.
var ErrTooManyRequests = errors.New("breaker: too many requests while half-open")

// RefusedError is the error returned for a request a breaker refused: it
// wraps ErrOpen or ErrTooManyRequests, and says how long to wait.
type RefusedError struct {
	// Name is the name of the breaker that refused.
	Name string
	// Err is ErrOpen or ErrTooManyRequests.
	Err error
	// Wait is the time left before the breaker lets probes through.
	Wait time.Duration
}

// Error returns the message of Err.
func (e *RefusedError) Error() string { return e.Err.Error() }

// Unwrap returns Err, for errors.Is(err, breaker.ErrOpen).
func (e *RefusedError) Unwrap() error { return e.Err }

// RetryAfter returns Wait. A pylon Backend reads it for its Retry-After
// header when every target is refused.
func (e *RefusedError) RetryAfter() time.Duration { return e.Wait }

// Breaker is a circuit breaker around one dependency. Use it as route
// middleware ([Breaker.Middleware]) or around an [http.RoundTripper]
// ([Breaker.Transport]); every use shares the one state. For a breaker per
// upstream target of a pylon Backend, see [PerTarget].
//
// It is built on sony/gobreaker: in memory, its CircuitBreaker; with
// Settings.Store, a local copy of the shared state (see [SharedStore]) and a
// gobreaker TwoStepCircuitBreaker that decides while the store is down.
type Breaker struct {
	cfg  *config
	name string

	// One of these is set: cb for a breaker used around a call, ts for one
	// used in two steps (a TargetGuard's), sh for shared state. cb and ts
	// are replaced by Reset; gen numbers their generations, so that a state
	// change of a replaced one is ignored.
	cb  atomic.Pointer[gobreaker.CircuitBreaker[struct{}]]
	ts  atomic.Pointer[gobreaker.TwoStepCircuitBreaker[struct{}]]
	sh  *shared
	gen atomic.Uint64

	state     atomic.Int32 // State last seen by OnStateChange
	openUntil atomic.Int64 // UnixNano (by cfg.now) when the current open period ends
	storeErr  atomic.Int64 // UnixNano of the last logged store error
}

// New returns a Breaker configured by s. It fails on invalid settings; the
// error names the breaker. With a Store it does not wait for the store: it
// decides with its local breaker until the first Sync answers.
func New(s Settings) (*Breaker, error) {
	cfg, err := newConfig(s)
	if err != nil {
		return nil, err
	}
	return newBreaker(cfg, cfg.name, false)
}

// MustNew is like New but panics on error. It is meant for main.go, where a
// misconfigured breaker should stop the program at start.
func MustNew(s Settings) *Breaker {
	b, err := New(s)
	if err != nil {
		panic(err)
	}
	return b
}

func newBreaker(cfg *config, name string, twoStep bool) (*Breaker, error) {
	b := &Breaker{cfg: cfg, name: name}
	if cfg.store != nil {
		b.sh = newShared(b, cfg, name)
		b.sh.wake()
		return b, nil
	}
	b.renew(twoStep)
	return b, nil
}

// renew replaces the in-memory gobreaker with a new, closed one.
func (b *Breaker) renew(twoStep bool) {
	gen := b.gen.Add(1)
	st := b.cfg.gobreakerSettings(b.name, func(name string, from, to State) {
		if b.gen.Load() == gen {
			b.changed(name, from, to)
		}
	})
	if twoStep {
		b.ts.Store(gobreaker.NewTwoStepCircuitBreaker[struct{}](st))
	} else {
		b.cb.Store(gobreaker.NewCircuitBreaker[struct{}](st))
	}
}

// ErrShared is returned by Reset for a breaker whose state is shared
// through Settings.Store: one replica does not reset the others' breaker.
var ErrShared = errors.New("breaker: shared state is not reset by one replica")

// Reset closes the breaker at once and forgets its counts, for an operator
// who knows the dependency is back (a status page's action). Requests under
// way count against the replaced state, not the new one. A state change to
// closed is logged and reported to Settings.OnStateChange as usual. It
// returns ErrShared, and changes nothing, for a breaker with a Store.
func (b *Breaker) Reset() error {
	if b.sh != nil {
		return ErrShared
	}
	from := b.State()
	b.renew(b.ts.Load() != nil)
	if from != StateClosed {
		b.changed(b.name, from, StateClosed)
	}
	return nil
}

// Close stops the goroutine that syncs a breaker's shared state, and waits
// for it. The goroutine also stops by itself after a second without
// requests (and starts again on the next one), so Close is needed only to
// stop it at once, as tests checking for leaked goroutines do. A closed
// breaker keeps deciding, with its local breaker once its shared state is
// stale. With a store that pushes changes (a [SharedWatcher]), Close also
// ends the breaker's registration with it: a breaker dropped without Close
// stays registered, and is pushed to, for the life of the store. Close does
// nothing for a breaker without a Store.
func (b *Breaker) Close() {
	if b.sh != nil {
		b.sh.close()
	}
}

// Name returns the breaker's name.
func (b *Breaker) Name() string { return b.name }

// State returns the breaker's state as this process last saw it change.
// With a Store, other processes may have changed the shared state since.
func (b *Breaker) State() State { return State(b.state.Load()) }

// changed is gobreaker's OnStateChange: it runs under the breaker's lock,
// once per transition.
func (b *Breaker) changed(name string, from, to State) {
	b.state.Store(int32(to))
	if to == StateOpen {
		b.openUntil.Store(b.cfg.now().Add(b.cfg.open).UnixNano())
	}
	level := slog.LevelInfo
	if to == StateOpen {
		level = slog.LevelWarn
	}
	b.cfg.logger.LogAttrs(context.Background(), level, "breaker: state change",
		slog.String("breaker", name), slog.String("from", from.String()), slog.String("to", to.String()))
	if b.cfg.onChange != nil {
		b.cfg.onChange(name, from, to)
	}
	b.cfg.watch.notify(name, from, to)
}

// refusal turns gobreaker's refusal into ours, with the time to wait.
func (b *Breaker) refusal(err error) *RefusedError {
	if err == gobreaker.ErrTooManyRequests {
		return &RefusedError{Name: b.name, Err: ErrTooManyRequests, Wait: time.Second}
	}
	wait := b.cfg.open
	if until := b.openUntil.Load(); until != 0 {
		if d := time.Duration(until - b.cfg.now().UnixNano()); d > 0 && d <= b.cfg.open {
			wait = d
		} else if d <= 0 {
			wait = time.Second // the open period is ending
		}
	}
	return &RefusedError{Name: b.name, Err: ErrOpen, Wait: wait}
}

// execute runs fn if the breaker admits it, and records fn's outcome (nil,
// errFailure or errExcluded). It reports whether fn ran; when it did not,
// err is the refusal.
func (b *Breaker) execute(fn func() error) (ran bool, err error) {
	switch {
	case b.cb.Load() != nil:
		_, err = b.cb.Load().Execute(func() (struct{}, error) {
			ran = true
			return struct{}{}, fn()
		})
		if ran {
			return true, nil
		}
		return false, err
	default:
		done, err := b.allow()
		if err != nil {
			return false, err
		}
		var o error = errFailure // a panic in fn is a failure
		defer func() { done(o) }()
		o = fn()
		return true, nil
	}
}

// allow is the first of two steps: it admits a request or refuses it with
// gobreaker's error; done records the outcome. It is not used for cb.
func (b *Breaker) allow() (done func(error), err error) {
	if ts := b.ts.Load(); ts != nil {
		return ts.Allow()
	}
	return b.sh.allow()
}

// logStoreError logs a store failure at most once a second; the store
// itself should log once per its own interval and count failures.
func (b *Breaker) logStoreError(err error) {
	now := time.Now().UnixNano()
	last := b.storeErr.Load()
	if now-last < int64(time.Second) || !b.storeErr.CompareAndSwap(last, now) {
		return
	}
	b.cfg.logger.LogAttrs(context.Background(), slog.LevelError, "breaker: shared state store failed; deciding with the local breaker",
		slog.String("breaker", b.name), slog.String("error", err.Error()))
}

// refuse answers a refused request: the fallback, or 503 with Retry-After.
func (b *Breaker) refuse(w http.ResponseWriter, r *http.Request, info *pylon.RequestInfo, err error) {
	ref := b.refusal(err)
	if info != nil {
		info.Breaker = StateOpen.String()
		if ref.Err == ErrTooManyRequests {
			info.Breaker = StateHalfOpen.String()
		}
		info.Error = ref.Error()
	}
	if b.cfg.fallback != nil {
		b.cfg.fallback.ServeHTTP(w, r)
		return
	}
	w.Header().Set("Retry-After", retryAfter(ref.Wait))
	pylon.Error(w, r, http.StatusServiceUnavailable, "The service is temporarily unavailable.")
}

// retryAfter formats d as whole seconds, rounded up, at least 1.
func retryAfter(d time.Duration) string {
	s := int64((d + time.Second - 1) / time.Second)
	if s < 1 {
		s = 1
	}
	return strconv.FormatInt(s, 10)
}
