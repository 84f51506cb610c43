package breaker

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// memStore is a SharedStore in memory, with the semantics the Redis store's
// script has (see SharedStore). It counts its calls, and can fail or hang.
type memStore struct {
	mu     sync.Mutex
	st     map[string]*memState
	fail   error         // every call fails with it when set
	hang   chan struct{} // every call waits for it (or its context) when set
	calls  atomic.Int64
	probes atomic.Int64
}

type memState struct {
	state             State
	gen               uint64
	until             time.Time
	consec, oks, prob uint32
	bucket            []struct{ n, s, f int64 }
}

func newMemStore() *memStore { return &memStore{st: map[string]*memState{}} }

func (m *memStore) setFail(err error) {
	m.mu.Lock()
	m.fail = err
	m.mu.Unlock()
}

func (m *memStore) Sync(ctx context.Context, name string, req SyncRequest) (SharedState, error) {
	m.calls.Add(1)
	if req.Probe {
		m.probes.Add(1)
	}
	m.mu.Lock()
	fail, hang := m.fail, m.hang
	m.mu.Unlock()
	if hang != nil {
		select {
		case <-hang:
		case <-ctx.Done():
			return SharedState{}, ctx.Err()
		}
	}
	if fail != nil {
		return SharedState{}, fail
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	p := req.Policy
	s := m.st[name]
	if s == nil {
		s = &memState{bucket: make([]struct{ n, s, f int64 }, p.Buckets)}
		m.st[name] = s
	}
	now := time.Now()
	to := func(st State) {
		s.state, s.gen, s.consec, s.oks, s.prob = st, s.gen+1, 0, 0, 0
		clear(s.bucket)
		s.until = now.Add(p.OpenDuration)
	}
	if req.Gen > s.gen { // the state was lost: go on from the caller's generation
		*s = memState{gen: req.Gen, bucket: make([]struct{ n, s, f int64 }, p.Buckets)}
	}
	if s.state != StateClosed && !now.Before(s.until) {
		to(StateHalfOpen)
	}
	if req.Gen == s.gen && req.Successes+req.Failures > 0 {
		switch s.state {
		case StateClosed:
			if req.Successes > 0 {
				s.consec = req.TrailingFailures
			} else {
				s.consec += req.Failures
			}
			bp := int64(p.Window) / int64(p.Buckets)
			cur := now.UnixNano() / bp
			b := &s.bucket[cur%int64(p.Buckets)]
			if b.n != cur {
				b.n, b.s, b.f = cur, 0, 0
			}
			b.s += int64(req.Successes)
			b.f += int64(req.Failures)
			var ts, tf int64
			for _, b := range s.bucket {
				if b.n > cur-int64(p.Buckets) {
					ts, tf = ts+b.s, tf+b.f
				}
			}
			if p.ConsecutiveFailures > 0 && s.consec >= p.ConsecutiveFailures ||
				p.FailureRatio > 0 && ts+tf >= int64(p.MinRequests) && float64(tf) >= p.FailureRatio*float64(ts+tf) {
				to(StateOpen)
			}
		case StateHalfOpen:
			s.oks += req.Successes
			if req.Failures > 0 {
				to(StateOpen)
			} else if s.oks >= p.MaxRequests {
				to(StateClosed)
			}
		}
	}
	out := SharedState{State: s.state, Gen: s.gen}
	if s.state == StateOpen {
		out.Wait = s.until.Sub(now)
	}
	if req.Probe && s.state == StateHalfOpen && s.prob < p.MaxRequests {
		s.prob++
		out.Probe = true
	}
	return out, nil
}

func TestSharedState(t *testing.T) {
	store := newMemStore()
	s := Settings{Name: "orders", ConsecutiveFailures: 2, OpenDuration: 30 * time.Millisecond, Store: store, SyncInterval: 5 * time.Millisecond}
	a, _ := newTest(t, s)
	b, _ := newTest(t, s)

	upA, upB := newUpstream(500), newUpstream(200)
	ha, hb := a.Middleware(upA), b.Middleware(upB)
	do(ha)
	do(ha)
	// b never saw a failure, yet refuses once the trip reached it: the
	// state is shared.
	eventually(t, "b sees the trip", func() bool {
		w, info := do(hb)
		return w.Code == http.StatusServiceUnavailable && info.Breaker == "open" && w.Header().Get("Retry-After") != ""
	})

	// After the open period a probe through b closes it for a as well.
	hitsB := upB.hits.Load()
	eventually(t, "probe through b", func() bool {
		w, _ := do(hb)
		return w.Code == 200
	})
	if upB.hits.Load() != hitsB+1 {
		t.Fatalf("b let %d requests through in the half-open state, want 1", upB.hits.Load()-hitsB)
	}
	upA.status.Store(200)
	eventually(t, "a sees the close", func() bool {
		w, _ := do(ha)
		return w.Code == 200
	})
}

// A closed-state request makes no call to the store: only the sync loop
// does, about once per interval.
func TestSharedClosedNoRoundTrip(t *testing.T) {
	store := newMemStore()
	b, _ := newTest(t, Settings{Name: "orders", Store: store, SyncInterval: time.Hour})
	h := b.Middleware(newUpstream(200))
	eventually(t, "first sync", func() bool { return b.sh.lastOK.Load() != 0 })
	before := store.calls.Load()
	for range 1000 {
		if w, _ := do(h); w.Code != 200 {
			t.Fatal(w.Code)
		}
	}
	if n := store.calls.Load() - before; n != 0 {
		t.Fatalf("1000 closed-state requests made %d store calls", n)
	}
}

func TestSharedStateStoreDownFallsBackToLocal(t *testing.T) {
	store := newMemStore()
	b, _ := newTest(t, Settings{Name: "orders", ConsecutiveFailures: 2, Store: store, SyncInterval: 5 * time.Millisecond})
	store.setFail(errors.New("connection refused"))
	eventually(t, "fallback", func() bool { return b.sh.failing.Load() })
	up := newUpstream(500)
	h := b.Middleware(up)
	for range 4 {
		do(h)
	}
	// The local breaker tripped after two failures.
	if up.hits.Load() != 2 {
		t.Fatalf("backend hit %d times with the store down, want 2 (local breaker)", up.hits.Load())
	}
}

// A store that hangs holds up no request: they are decided locally once
// the shared state is stale, and no request waits for another.
func TestSharedStateStoreHangs(t *testing.T) {
	store := newMemStore()
	b, _ := newTest(t, Settings{Name: "orders", Store: store, SyncInterval: 5 * time.Millisecond, SyncTimeout: 20 * time.Millisecond})
	eventually(t, "first sync", func() bool { return b.sh.lastOK.Load() != 0 })
	hang := make(chan struct{})
	store.mu.Lock()
	store.hang = hang
	store.mu.Unlock()
	defer close(hang)
	h := b.Middleware(newUpstream(200))
	var wg sync.WaitGroup
	var slow atomic.Int64
	for range 8 {
		wg.Go(func() {
			for range 50 {
				start := time.Now()
				do(h)
				// A request held by the hung store would wait until the
				// test ends; a second is far beyond any scheduling delay of
				// a loaded machine and far below that.
				if time.Since(start) > time.Second {
					slow.Add(1)
				}
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("requests are still waiting for a hung store")
	}
	if slow.Load() > 0 {
		t.Fatalf("%d requests waited for a hung store", slow.Load())
	}
}

func TestSharedStatePerTarget(t *testing.T) {
	store := newMemStore()
	ups, urls := servers(t, 2)
	ups[0].status.Store(500)
	s := Settings{Name: "orders", ConsecutiveFailures: 1, Store: store, Logger: quiet, SyncInterval: 5 * time.Millisecond}
	g1, g2 := MustPerTarget(s), MustPerTarget(s)
	t.Cleanup(g1.Close)
	t.Cleanup(g2.Close)
	be1, be2 := guardedBackend(t, g1, urls, 0), guardedBackend(t, g2, urls, 0)
	for range 2 {
		do(be1) // trips target 0 through gateway 1
	}
	eventually(t, "gateway 2 skips target 0", func() bool {
		hits := ups[0].hits.Load()
		for range 4 {
			if w, _ := do(be2); w.Code != 200 {
				return false
			}
		}
		return ups[0].hits.Load() == hits
	})
}
