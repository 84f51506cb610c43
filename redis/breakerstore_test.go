package pylonredis

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/breaker"
)

var quietLog = slog.New(slog.DiscardHandler)

func mustBreakerStore(t testing.TB, c goredis.UniversalClient, opts BreakerStoreOptions) *BreakerStore {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quietLog
	}
	s, err := NewBreakerStore(c, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// waitFor polls cond every millisecond until it holds or within passes.
func waitFor(t testing.TB, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		<-tick.C
	}
}

// The script's transitions, called directly.
func TestBreakerStoreScript(t *testing.T) {
	network, addr := breakerRedis(t)
	s := mustBreakerStore(t, breakerClient(t, network, addr), BreakerStoreOptions{Prefix: breakerPrefix()})
	ctx := context.Background()
	pol := breaker.SharedPolicy{ConsecutiveFailures: 3, MinRequests: 10, Window: 10 * time.Second, Buckets: 10,
		OpenDuration: 60 * time.Millisecond, MaxRequests: 2}
	sync := func(req breaker.SyncRequest) breaker.SharedState {
		t.Helper()
		req.Policy = pol
		st, err := s.Sync(ctx, "orders", req)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	st := sync(breaker.SyncRequest{})
	if st.State != breaker.StateClosed || st.Gen != 0 {
		t.Fatalf("new breaker: %+v", st)
	}
	if st = sync(breaker.SyncRequest{Failures: 2, TrailingFailures: 2}); st.State != breaker.StateClosed {
		t.Fatalf("two failures: %+v", st)
	}
	if st = sync(breaker.SyncRequest{Successes: 1, Failures: 1, TrailingFailures: 0}); st.State != breaker.StateClosed {
		t.Fatalf("a success ends the run: %+v", st)
	}
	if st = sync(breaker.SyncRequest{Failures: 2, TrailingFailures: 2}); st.State != breaker.StateClosed {
		t.Fatalf("run of two: %+v", st)
	}
	st = sync(breaker.SyncRequest{Failures: 1, TrailingFailures: 1})
	if st.State != breaker.StateOpen || st.Gen != 1 || st.Wait <= 0 || st.Wait > pol.OpenDuration {
		t.Fatalf("run of three: %+v", st)
	}
	// Outcomes of generation 0 arriving late are dropped.
	if st = sync(breaker.SyncRequest{Gen: 0, Successes: 5}); st.State != breaker.StateOpen || st.Gen != 1 {
		t.Fatalf("late outcomes: %+v", st)
	}
	if st = sync(breaker.SyncRequest{Gen: 1, Probe: true}); st.Probe {
		t.Fatalf("probe granted while open: %+v", st)
	}
	waitFor(t, "half-open", 2*time.Second, func() bool {
		st = sync(breaker.SyncRequest{Gen: 1})
		return st.State == breaker.StateHalfOpen
	})
	gen := st.Gen
	granted := 0
	for range 4 {
		if sync(breaker.SyncRequest{Gen: gen, Probe: true}).Probe {
			granted++
		}
	}
	if granted != 2 {
		t.Fatalf("%d probe places granted, want MaxRequests = 2", granted)
	}
	if st = sync(breaker.SyncRequest{Gen: gen, Successes: 1}); st.State != breaker.StateHalfOpen {
		t.Fatalf("one probe succeeded: %+v", st)
	}
	if st = sync(breaker.SyncRequest{Gen: gen, Successes: 1}); st.State != breaker.StateClosed || st.Gen != gen+1 {
		t.Fatalf("two probes succeeded: %+v", st)
	}

	// The failure ratio, over the window.
	rp := pol
	rp.ConsecutiveFailures, rp.FailureRatio = 0, 0.5
	st, _ = s.Sync(ctx, "ratio", breaker.SyncRequest{Policy: rp, Successes: 5, Failures: 4})
	if st.State != breaker.StateClosed {
		t.Fatalf("4 of 9: %+v", st)
	}
	st, _ = s.Sync(ctx, "ratio", breaker.SyncRequest{Policy: rp, Successes: 0, Failures: 1, TrailingFailures: 1})
	if st.State != breaker.StateOpen {
		t.Fatalf("5 of 10: %+v", st)
	}
}

func TestBreakerStoreRefusesClientWithoutTimeouts(t *testing.T) {
	c := goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:1"})
	defer c.Close()
	if _, err := NewBreakerStore(c, BreakerStoreOptions{}); !errors.Is(err, ErrContextTimeoutDisabled) {
		t.Fatalf("NewBreakerStore: %v", err)
	}
	if _, err := NewCacheStore(c, CacheStoreOptions{}); !errors.Is(err, ErrContextTimeoutDisabled) {
		t.Fatalf("NewCacheStore: %v", err)
	}
	if _, err := NewBreakerStore(nil, BreakerStoreOptions{}); err == nil {
		t.Fatal("nil client accepted")
	}
}

type counter struct {
	hits   atomic.Int64
	status atomic.Int64
}

func (c *counter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.hits.Add(1)
	w.WriteHeader(int(c.status.Load()))
}

func newCounter(status int) *counter {
	c := &counter{}
	c.status.Store(int64(status))
	return c
}

func send(h http.Handler) (*httptest.ResponseRecorder, *pylon.RequestInfo) {
	info := &pylon.RequestInfo{}
	r := httptest.NewRequest("GET", "/orders/1", nil)
	r = r.WithContext(pylon.NewContext(r.Context(), info))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w, info
}

func sharedBreaker(t testing.TB, store breaker.SharedStore, s breaker.Settings) *breaker.Breaker {
	t.Helper()
	s.Store = store
	if s.Logger == nil {
		s.Logger = quietLog
	}
	b, err := breaker.New(s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

// Two gateway instances, each with its own Redis client, store and
// breaker, see one state; an open state reaches the other within 100ms.
func TestSharedBreakerThroughRedis(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) }) // runs after the breakers' Close
	network, addr := breakerRedis(t)
	prefix := breakerPrefix()
	set := breaker.Settings{Name: "orders", ConsecutiveFailures: 3, OpenDuration: 300 * time.Millisecond}
	a := sharedBreaker(t, mustBreakerStore(t, breakerClient(t, network, addr), BreakerStoreOptions{Prefix: prefix}), set)
	b := sharedBreaker(t, mustBreakerStore(t, breakerClient(t, network, addr), BreakerStoreOptions{Prefix: prefix}), set)
	upA, upB := newCounter(502), newCounter(200)
	ha, hb := a.Middleware(upA), b.Middleware(upB)
	// Both are busy and in sync before the trip.
	for range 20 {
		send(hb)
	}
	waitFor(t, "b in sync", time.Second, func() bool { return b.State() == breaker.StateClosed })

	for range 3 {
		if w, _ := send(ha); w.Code != 502 {
			t.Fatalf("instance a: %d", w.Code)
		}
	}
	tripped := time.Now()
	var took time.Duration
	waitFor(t, "b refuses", time.Second, func() bool {
		w, info := send(hb)
		took = time.Since(tripped)
		return w.Code == http.StatusServiceUnavailable && w.Header().Get("Retry-After") != "" && info.Breaker == "open"
	})
	t.Logf("open state reached the other replica in %v", took)
	if took > 100*time.Millisecond {
		t.Fatalf("open state took %v to reach the other replica, want within 100ms", took)
	}
	if w, _ := send(ha); w.Code != http.StatusServiceUnavailable || upA.hits.Load() != 3 {
		t.Fatalf("instance a while open: %d, %d hits", w.Code, upA.hits.Load())
	}

	// After the open period one probe, through either, closes it for both.
	hits := upA.hits.Load() + upB.hits.Load()
	upA.status.Store(200)
	waitFor(t, "a probe closes the breaker", 3*time.Second, func() bool {
		wa, _ := send(ha)
		wb, _ := send(hb)
		return wa.Code == 200 && wb.Code == 200
	})
	if probes := upA.hits.Load() + upB.hits.Load() - hits; probes > 3 {
		t.Fatalf("%d backend calls while half-open and closing, want at most 3", probes)
	}
}

// While Redis is frozen (SIGSTOP), no request waits for it: they are
// decided by the local breaker, which still trips; after SIGCONT the shared
// state is used again.
func TestSharedBreakerRedisFrozen(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) }) // runs after the breakers' Close
	proc, sock := breakerRedisProc(t)
	const timeout = 50 * time.Millisecond
	store := mustBreakerStore(t, breakerClient(t, "unix", sock), BreakerStoreOptions{Prefix: breakerPrefix(), Timeout: timeout,
		FastFail: FastFail{Backoff: 100 * time.Millisecond}})
	br := sharedBreaker(t, store, breaker.Settings{Name: "frozen", ConsecutiveFailures: 5, OpenDuration: time.Hour})
	up := newCounter(200)
	h := br.Middleware(up)
	send(h)
	waitFor(t, "first sync", time.Second, func() bool { return store.Failures() == 0 && br.State() == breaker.StateClosed })

	if err := proc.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			_ = proc.Signal(syscall.SIGCONT)
		}
	}
	defer resume()
	lat := measure(h, 4, 500*time.Millisecond)
	p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
	t.Logf("Redis frozen: %d requests, p50 %v, p99 %v, max %v", len(lat), p50, p99, lat[len(lat)-1])
	if p99 > timeout+5*time.Millisecond {
		t.Fatalf("p99 %v with Redis frozen, want within the store timeout %v + 5ms", p99, timeout)
	}
	if !store.Down() {
		t.Fatal("store not in its fast-fail state with Redis frozen")
	}
	// The local breaker decides meanwhile: it trips.
	up.status.Store(500)
	for range 10 {
		send(h)
	}
	if w, _ := send(h); w.Code != http.StatusServiceUnavailable {
		t.Fatalf("local breaker did not trip while Redis was frozen: %d", w.Code)
	}
	resume()
	up.status.Store(200)
	waitFor(t, "recovery", 2*time.Second, func() bool {
		send(h)
		return !store.Down()
	})
	// The shared state (closed: the failures during the freeze were the
	// local breaker's) decides again.
	waitFor(t, "shared state again", time.Second, func() bool {
		w, _ := send(h)
		return w.Code == 200
	})
}

// measure sends requests through h from n goroutines for d and returns
// their latencies, sorted.
func measure(h http.Handler, n int, d time.Duration) []time.Duration {
	var mu sync.Mutex
	var all []time.Duration
	var wg sync.WaitGroup
	end := time.Now().Add(d)
	for range n {
		wg.Go(func() {
			var lat []time.Duration
			for time.Now().Before(end) {
				start := time.Now()
				send(h)
				lat = append(lat, time.Since(start))
			}
			mu.Lock()
			all = append(all, lat...)
			mu.Unlock()
		})
	}
	wg.Wait()
	slices.Sort(all)
	return all
}

// BenchmarkBreakerLocal and BenchmarkBreakerShared compare a request
// through an in-memory breaker and through one sharing its state in a real
// Redis (closed state: no round trip on the request's path).
func BenchmarkBreakerLocal(b *testing.B) {
	benchBreaker(b, breaker.MustNew(breaker.Settings{Name: "bench"}))
}

func BenchmarkBreakerShared(b *testing.B) {
	network, addr := breakerRedis(b)
	store := mustBreakerStore(b, breakerClient(b, network, addr), BreakerStoreOptions{Prefix: breakerPrefix()})
	benchBreaker(b, sharedBreaker(b, store, breaker.Settings{Name: "bench"}))
}

func benchBreaker(b *testing.B, br *breaker.Breaker) {
	h := br.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(200) }))
	r := httptest.NewRequest("GET", "/orders/1", nil)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		w := &nopWriter{h: http.Header{}}
		for pb.Next() {
			h.ServeHTTP(w, r)
		}
	})
}

type nopWriter struct{ h http.Header }

func (w *nopWriter) Header() http.Header         { return w.h }
func (w *nopWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *nopWriter) WriteHeader(int)             {}

// The shared state can be lost: the key expires (StateTTL) or is evicted,
// Redis restarts without persistence, a failover loses the last writes.
// The replicas know a newer generation than the one left in Redis; the
// breaker must go on from theirs and trip again, not drop their counts as
// old for good.
func TestSharedBreakerTripsAfterTheStateIsLost(t *testing.T) {
	network, addr := breakerRedis(t)
	prefix := breakerPrefix()
	set := breaker.Settings{Name: "lost", ConsecutiveFailures: 3, OpenDuration: 100 * time.Millisecond}
	storeA := mustBreakerStore(t, breakerClient(t, network, addr), BreakerStoreOptions{Prefix: prefix})
	a := sharedBreaker(t, storeA, set)
	b := sharedBreaker(t, mustBreakerStore(t, breakerClient(t, network, addr), BreakerStoreOptions{Prefix: prefix}), set)
	up := newCounter(200)
	ha, hb := a.Middleware(up), b.Middleware(up)
	admin := breakerClient(t, network, addr)
	key := storeA.Key("lost")
	ctx := context.Background()

	// tripAndClose opens the breaker through a, and closes it again with
	// a probe after the open period; both replicas end closed.
	tripAndClose := func(step string) {
		t.Helper()
		up.status.Store(502)
		waitFor(t, step+": a opens", 2*time.Second, func() bool {
			send(ha)
			return a.State() == breaker.StateOpen
		})
		waitFor(t, step+": b sees it open", time.Second, func() bool { return b.State() == breaker.StateOpen })
		up.status.Store(200)
		waitFor(t, step+": a probe closes it", 3*time.Second, func() bool {
			wa, _ := send(ha)
			wb, _ := send(hb)
			return wa.Code == 200 && wb.Code == 200 && a.State() == breaker.StateClosed && b.State() == breaker.StateClosed
		})
	}
	gen := func() int64 {
		g, _ := admin.HGet(ctx, key, "gen").Int64()
		return g
	}
	tripAndClose("before")
	before := gen()
	if before < 3 {
		t.Fatalf("generation %d after open, half-open and closed, want at least 3", before)
	}

	losses := []struct {
		name string
		lose func() error
	}{
		{"key gone (expired, evicted, restart)", func() error { return admin.Del(ctx, key).Err() }},
		{"older generation (failover lost writes)", func() error {
			return admin.HSet(ctx, key, "st", 0, "gen", 1, "consec", 0).Err()
		}},
	}
	for _, l := range losses {
		known := gen()
		if err := l.lose(); err != nil {
			t.Fatal(err)
		}
		// Failures must trip it again, on both replicas.
		tripAndClose(l.name)
		if g := gen(); g <= known {
			t.Fatalf("%s: generation %d after the trip, want past the replicas' %d", l.name, g, known)
		}
	}
}
