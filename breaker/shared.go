package breaker

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"
)

// SharedStore keeps the state of breakers shared by several processes (the
// pylon redis module has one on Redis). A breaker with a store never calls
// it on the path of a closed-state request: it decides from a local copy of
// the shared state, counts outcomes in memory, and one goroutine per
// breaker sends them in batches with [SharedStore.Sync] every
// Settings.SyncInterval (at once after a failure), taking the shared state
// back in the same round trip. Only a half-open breaker calls the store
// while admitting a request, to take one of the MaxRequests probe places.
//
// Sync must apply one request atomically (for Redis, one Lua script):
//
//   - An open breaker whose OpenDuration has passed becomes half-open, with
//     a new generation. A half-open breaker whose probes have not decided
//     within OpenDuration (their processes died) is given new probe places,
//     with a new generation.
//   - Outcomes counted in an older generation than the current one are
//     dropped. In the closed state they are added to the rolling window
//     (Window, in Buckets buckets) and to the run of consecutive failures,
//     and the breaker opens when the policy says so. In the half-open state
//     a failure opens the breaker again and MaxRequests successes close it.
//   - When Probe is set and the breaker is half-open, one probe place is
//     granted if fewer than MaxRequests have been granted in this
//     generation.
//   - Each change of state increments the generation and clears the counts.
//   - A request whose generation is newer than the store's means the store
//     lost the state (it expired, was evicted, or the store restarted or
//     failed over without it): the store takes the request's generation,
//     as a closed breaker with no counts, before applying the request.
//     Generations never go back, so every process keeps counting.
//
// A store should fail fast (return an error at once) while it knows its
// backend to be down: the breaker then decides with its local breaker.
// Implementations must be safe for concurrent use.
type SharedStore interface {
	// Sync adds the outcomes in req to the shared state of the breaker
	// called name, applies the policy, and returns the state after.
	Sync(ctx context.Context, name string, req SyncRequest) (SharedState, error)
}

// SharedWatcher is implemented by a [SharedStore] that pushes changes of
// state to the processes sharing a breaker (the pylon redis module's store
// does, with Redis pub/sub). A breaker whose store is a SharedWatcher
// registers with Watch when it is created and installs each pushed state at
// once, if its generation is newer than its local copy's: a trip by one
// replica then reaches the others in the time of one push, not of one
// SyncInterval. The periodic Sync remains, for the pushes that are lost
// (a subscription being re-established, for one).
type SharedWatcher interface {
	// Watch calls fn with the shared state of the breaker called name after
	// each of its changes of state, made by any process, until stop is
	// called. fn must be quick; it may be called from several goroutines.
	// A Wait in the state counts from the moment fn is called.
	Watch(name string, fn func(SharedState)) (stop func())
}

// SharedPolicy is a breaker's trip policy as a [SharedStore] applies it:
// [Settings] with their defaults filled in.
type SharedPolicy struct {
	// ConsecutiveFailures opens the breaker after this many failures in a
	// row; 0 means off.
	ConsecutiveFailures uint32
	// FailureRatio opens the breaker when failures make up at least this
	// fraction of the outcomes in the window, once MinRequests are counted;
	// 0 means off.
	FailureRatio float64
	// MinRequests is how many outcomes the window must hold for
	// FailureRatio to apply.
	MinRequests uint32
	// Window is the length of the rolling window, in Buckets buckets.
	Window time.Duration
	// Buckets is how many buckets the window is divided into.
	Buckets int
	// OpenDuration is how long the breaker stays open, and how long
	// half-open probes have to decide before new probe places are given.
	OpenDuration time.Duration
	// MaxRequests is the number of half-open probes, and the number of
	// successes in a row that close the breaker.
	MaxRequests uint32
}

// SyncRequest is one batch of outcomes a process sends to a [SharedStore].
type SyncRequest struct {
	// Policy is the breaker's trip policy.
	Policy SharedPolicy
	// Gen is the generation the outcomes were counted in.
	Gen uint64
	// Successes and Failures are the outcomes counted since the last Sync.
	Successes, Failures uint32
	// TrailingFailures is the number of failures after the batch's last
	// success (all of Failures when the batch has no success).
	TrailingFailures uint32
	// Probe asks for a half-open probe place.
	Probe bool
}

// SharedState is the shared state of a breaker, as [SharedStore.Sync]
// returns it.
type SharedState struct {
	// State is the breaker's state.
	State State
	// Gen is the generation, incremented by every change of state.
	Gen uint64
	// Wait is, while open, the time left before the breaker turns half-open.
	Wait time.Duration
	// Probe reports that the probe place asked for was granted.
	Probe bool
}

// Defaults of the shared-state settings.
const (
	defaultSyncInterval = 50 * time.Millisecond
	defaultSyncTimeout  = 100 * time.Millisecond
)

// view is the local copy of the shared state.
type view struct {
	state State
	gen   uint64
	until int64 // mono() when the open period ends
}

// epoch is the origin of mono: monotonic nanoseconds for atomics.
var epoch = time.Now()

func mono() int64 { return int64(time.Since(epoch)) }

// shared is the part of a Breaker that keeps its state in a SharedStore.
// No lock is held across a call to the store: mu guards the outcome counts
// only, and the one goroutine that syncs (run) is the only caller of the
// store besides half-open probes.
type shared struct {
	b      *Breaker
	store  SharedStore
	policy SharedPolicy
	every  time.Duration // sync interval
	limit  time.Duration // timeout of one Sync
	local  *gobreaker.TwoStepCircuitBreaker[struct{}]
	record func(error) // s.done, bound once so that admitting allocates nothing

	cur      atomic.Pointer[view]
	lastOK   atomic.Int64 // mono() of the last successful Sync; 0: none yet
	inflight atomic.Int64 // mono() when the loop's Sync under way began; 0: none
	failing  atomic.Bool  // the last Sync failed
	probes   atomic.Int32 // this process's probes in flight
	lastUse  atomic.Int64 // mono() of the last request
	running  atomic.Bool  // run is running
	kick     chan struct{}
	stop     chan struct{}
	once     sync.Once
	wg       sync.WaitGroup
	unwatch  func() // ends the store's pushes; nil without a SharedWatcher

	mu         sync.Mutex // guards the counts below; never held across I/O
	gen        uint64
	succ, fail uint32
	trail      uint32
}

func newShared(b *Breaker, cfg *config, name string) *shared {
	s := &shared{
		b:     b,
		store: cfg.store,
		policy: SharedPolicy{
			ConsecutiveFailures: cfg.consecutive,
			FailureRatio:        cfg.ratio,
			MinRequests:         cfg.minRequests,
			Window:              cfg.window,
			Buckets:             cfg.buckets,
			OpenDuration:        cfg.open,
			MaxRequests:         cfg.maxRequests,
		},
		every: cfg.syncInterval,
		limit: cfg.syncTimeout,
		local: gobreaker.NewTwoStepCircuitBreaker[struct{}](cfg.gobreakerSettings(name+" (local fallback)", b.changed)),
		kick:  make(chan struct{}, 1),
		stop:  make(chan struct{}),
	}
	s.record = s.done
	s.cur.Store(&view{state: StateClosed})
	if w, ok := cfg.store.(SharedWatcher); ok {
		s.unwatch = w.Watch(name, s.pushed)
	}
	return s
}

// pushed installs a state the store pushed, when it is newer than the
// local copy. It leaves the failing flag alone: a push says nothing of
// whether this process's Syncs get through.
func (s *shared) pushed(st SharedState) {
	if st.Gen > s.cur.Load().gen {
		s.install(st)
	}
}

// stale reports that a Sync has been under way for longer than its timeout
// and an interval: a store that ignores its context does not leave the
// breaker on old shared state.
func (s *shared) stale(now int64) bool {
	f := s.inflight.Load()
	return f != 0 && now-f > int64(s.every+s.limit)
}

// allow admits or refuses one request. In the closed state it costs two
// atomic loads; it calls the store only to take a half-open probe place.
func (s *shared) allow() (func(error), error) {
	now := mono()
	s.lastUse.Store(now)
	s.wake()
	if s.failing.Load() || s.stale(now) {
		return s.local.Allow() // the store is down or hung
	}
	v := s.cur.Load()
	switch v.state {
	case StateClosed:
		return s.record, nil
	case StateOpen:
		if now < v.until {
			return nil, gobreaker.ErrOpenState
		}
	}
	return s.probe(v)
}

// probe asks the store for a half-open probe place. At most MaxRequests
// requests of this process ask at a time; the others are refused at once.
func (s *shared) probe(v *view) (func(error), error) {
	if s.probes.Add(1) > int32(s.policy.MaxRequests) {
		s.probes.Add(-1)
		return nil, gobreaker.ErrTooManyRequests
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.limit)
	st, err := s.store.Sync(ctx, s.b.name, SyncRequest{Policy: s.policy, Gen: v.gen, Probe: true})
	cancel()
	if err != nil {
		s.probes.Add(-1)
		s.failed(err)
		return s.local.Allow()
	}
	s.synced(st)
	switch {
	case st.Probe:
		return func(o error) {
			s.probes.Add(-1)
			s.done(o)
			s.kickNow() // the probe's outcome decides: send it now
		}, nil
	case st.State == StateClosed:
		s.probes.Add(-1)
		return s.record, nil
	case st.State == StateOpen:
		s.probes.Add(-1)
		return nil, gobreaker.ErrOpenState
	}
	s.probes.Add(-1)
	return nil, gobreaker.ErrTooManyRequests
}

// done counts one outcome of a request admitted on the shared state.
func (s *shared) done(o error) {
	if o == errExcluded || o == errAdmit {
		return
	}
	gen := s.cur.Load().gen
	s.mu.Lock()
	if s.gen != gen {
		s.gen, s.succ, s.fail, s.trail = gen, 0, 0, 0
	}
	if o == nil {
		s.succ++
		s.trail = 0
	} else {
		s.fail++
		s.trail++
	}
	s.mu.Unlock()
	if o != nil {
		s.kickNow() // a failure may trip the breaker: send it now
	}
}

// wake starts the sync loop if it is not running.
func (s *shared) wake() {
	if !s.running.Load() && s.running.CompareAndSwap(false, true) {
		select {
		case <-s.stop:
			s.running.Store(false)
			return
		default:
		}
		s.wg.Add(1)
		go s.run()
	}
}

// kickNow asks the running loop to sync before its next tick.
func (s *shared) kickNow() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// idleAfter is how long the sync loop runs without requests before it
// exits; the next request starts it again.
func (s *shared) idleAfter() int64 { return int64(max(20*s.every, time.Second)) }

// run syncs every interval, and at once when kicked, until the breaker is
// idle or closed. After a failed Sync it waits for the next tick.
func (s *shared) run() {
	defer s.wg.Done()
	t := time.NewTicker(s.every)
	defer t.Stop()
	for {
		ok := s.flush()
		if !ok {
			select {
			case <-s.kick: // drain: no retry before the tick
			default:
			}
		}
		if mono()-s.lastUse.Load() > s.idleAfter() {
			s.running.Store(false)
			// A request that came in meanwhile saw running and did not
			// start a loop: carry on for it.
			if mono()-s.lastUse.Load() > s.idleAfter() || !s.running.CompareAndSwap(false, true) {
				return
			}
		}
		if ok {
			select {
			case <-t.C:
			case <-s.kick:
			case <-s.stop:
				return
			}
			continue
		}
		select {
		case <-t.C:
		case <-s.stop:
			return
		}
	}
}

// flush sends the counted outcomes and takes the shared state back.
func (s *shared) flush() bool {
	s.mu.Lock()
	req := SyncRequest{Policy: s.policy, Gen: s.gen, Successes: s.succ, Failures: s.fail, TrailingFailures: s.trail}
	s.succ, s.fail, s.trail = 0, 0, 0
	s.mu.Unlock()
	if req.Successes+req.Failures == 0 {
		req.Gen = s.cur.Load().gen
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.limit)
	s.inflight.Store(mono())
	st, err := s.store.Sync(ctx, s.b.name, req)
	s.inflight.Store(0)
	cancel()
	if err != nil {
		s.failed(err) // the batch is dropped: the local breaker counts from here
		return false
	}
	s.synced(st)
	return true
}

func (s *shared) failed(err error) {
	s.failing.Store(true)
	s.b.logStoreError(err)
}

// synced installs the state a Sync returned and records that the store
// answers.
func (s *shared) synced(st SharedState) {
	s.install(st)
	s.lastOK.Store(mono())
	s.failing.Store(false)
}

// install makes st the local copy, unless a newer generation is already
// installed, and reports the change of state.
func (s *shared) install(st SharedState) {
	now := mono()
	nv := &view{state: st.State, gen: st.Gen}
	if st.State == StateOpen {
		nv.until = now + int64(st.Wait)
	}
	for {
		old := s.cur.Load()
		if old.gen > nv.gen {
			break
		}
		if s.cur.CompareAndSwap(old, nv) {
			if st.State == StateOpen {
				s.b.openUntil.Store(s.b.cfg.now().Add(st.Wait).UnixNano())
			}
			if old.state != nv.state {
				s.b.changed(s.b.name, old.state, nv.state)
			}
			break
		}
	}
}

// close stops the sync loop and waits for it.
func (s *shared) close() {
	s.once.Do(func() {
		close(s.stop)
		if s.unwatch != nil {
			s.unwatch()
		}
	})
	s.wg.Wait()
}
