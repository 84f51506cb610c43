package pylon

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// eps turns URLs into Endpoints of weight zero (keep, or 1).
func eps(urls ...string) []Endpoint {
	out := make([]Endpoint, len(urls))
	for i, u := range urls {
		out[i] = Endpoint{URL: u}
	}
	return out
}

func targetNames(ts []*Target) []string {
	s := make([]string, len(ts))
	for i, t := range ts {
		s[i] = t.String()
	}
	return s
}

// waitFor polls cond until it holds or a deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond) // polling, with a deadline
	}
}

func TestSetTargetsKeepsStateByURL(t *testing.T) {
	u := testURLs(4)
	b := backend(t, BackendOptions{Targets: u[:2], Weights: []int{3, 1}})
	a := b.Targets()[0]
	fail(b.pool, a, defaultConsecutiveFailures)
	require.False(t, a.Healthy())
	b.pool.acquire(a) // one attempt in flight on a

	require.NoError(t, b.SetTargets([]Endpoint{{URL: u[2], Weight: 2}, {URL: u[0]}}))
	ts := b.Targets()
	assert.Equal(t, []string{u[2], u[0]}, targetNames(ts))
	assert.Same(t, a, ts[1], "a target kept by URL is the same *Target")
	assert.False(t, ts[1].Healthy(), "ejection carries over")
	assert.Equal(t, uint64(1), ts[1].Ejections())
	assert.Equal(t, 1, ts[1].InFlight(), "in-flight count carries over")
	assert.Equal(t, 3, ts[1].Weight(), "weight zero keeps the target's weight")
	assert.Equal(t, 2, ts[0].Weight())
	b.pool.finish(a, outcomeNeutral)

	// A target that leaves and comes back returns with its state.
	old := ts[1]
	require.NoError(t, b.SetTargets(eps(u[2])))
	assert.True(t, old.removed.Load())
	require.NoError(t, b.SetTargets(eps(u[2], u[0])))
	assert.Same(t, old, b.Targets()[1])
	assert.False(t, old.removed.Load())
	assert.False(t, old.Healthy(), "still ejected after coming back")

	// Invalid updates change nothing.
	for _, bad := range [][]Endpoint{
		eps(u[3], "ftp://x"),
		eps(u[3], u[3]),
		{{URL: u[3], Weight: -1}},
		{{URL: u[3], Priority: -1}},
	} {
		err := b.SetTargets(bad)
		require.Error(t, err)
		assert.Contains(t, err.Error(), `backend "test"`)
		assert.Equal(t, []string{u[2], u[0]}, targetNames(b.Targets()))
	}
}

func TestSetTargetsEmptyAnswers503(t *testing.T) {
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	b := backend(t, BackendOptions{Targets: []string{up.URL}})
	require.NoError(t, b.SetTargets(nil))
	assert.Empty(t, b.Targets())
	rec := httptest.NewRecorder()
	b.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	assert.Equal(t, http.StatusServiceUnavailable, rec.Code)

	require.NoError(t, b.SetTargets(eps(up.URL)))
	rec = httptest.NewRecorder()
	b.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	assert.Equal(t, http.StatusOK, rec.Code)
}

// TestBackendStartsWithoutTargets: a Backend fed by discovery is built with
// no Targets (no placeholder). Until its first SetTargets it answers 503
// problem+json with Retry-After, is not ready, and its health checks, stats
// and Targets have nothing to go through; then it serves, checks the target
// it was given, and that first target starts at full weight.
func TestBackendStartsWithoutTargets(t *testing.T) {
	up := newCheckServer(t, 200)
	b := backend(t, BackendOptions{
		HealthCheck: HealthCheck{Path: "/healthz", Interval: time.Hour},
		Balancer:    SlowStart(RoundRobin(), SlowStartOptions{Window: time.Hour}),
	})
	assert.Empty(t, b.Targets())
	b.pool.checkNow() // a round over no target

	g := New(Options{})
	g.Route("/api/").To(b)
	_, ready := g.Health(b)
	g.Handle("GET /readyz", ready)
	require.NoError(t, g.Err())
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	get := func(path string) (*http.Response, string) {
		t.Helper()
		res, err := http.Get(srv.URL + path)
		require.NoError(t, err)
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		require.NoError(t, err)
		return res, string(body)
	}

	res, body := get("/api/orders")
	assert.Equal(t, http.StatusServiceUnavailable, res.StatusCode)
	assert.Equal(t, ProblemContentType, res.Header.Get("Content-Type"))
	assert.Equal(t, "1", res.Header.Get("Retry-After"))
	assert.NotContains(t, body, "pylon:", "no internal detail")
	res, _ = get("/readyz")
	assert.Equal(t, http.StatusServiceUnavailable, res.StatusCode, "a critical backend with no target is not ready")

	require.NoError(t, b.SetTargets(eps(up.URL)))
	select {
	case <-up.hit: // the health check round the new target kicked
	case <-time.After(10 * time.Second):
		t.Fatal("the first target was never health-checked")
	}
	assert.False(t, b.Targets()[0].Ramping(), "the first targets start at full weight")
	res, body = get("/api/orders")
	assert.Equal(t, http.StatusOK, res.StatusCode)
	assert.Equal(t, "ok", body)
	res, _ = get("/readyz")
	assert.Equal(t, http.StatusOK, res.StatusCode)

	// A target joining a set that has targets still ramps.
	other := newCheckServer(t, 200)
	require.NoError(t, b.SetTargets(eps(up.URL, other.URL)))
	assert.True(t, b.Targets()[1].Ramping())
}

// closeRecorder is a transport that records per-target idle closes.
type closeRecorder struct {
	http.RoundTripper
	mu     sync.Mutex
	closed []string
}

func (c *closeRecorder) CloseIdleConnectionsTo(u *url.URL) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = append(c.closed, u.String())
}

func (c *closeRecorder) list() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.closed)
}

func TestRemovedTargetFinishesInFlightThenClosesIdle(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	slow := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		w.Write([]byte("slow"))
	})
	fast := upstream(t, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("fast")) })
	tr := &closeRecorder{RoundTripper: &http.Transport{}}
	defer tr.RoundTripper.(*http.Transport).CloseIdleConnections()
	b := backend(t, BackendOptions{Targets: []string{slow.URL}, Transport: tr})

	done := make(chan *httptest.ResponseRecorder)
	go func() {
		rec := httptest.NewRecorder()
		b.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
		done <- rec
	}()
	<-entered
	removed := b.Targets()[0]
	require.NoError(t, b.SetTargets(eps(fast.URL)))
	assert.Equal(t, 1, removed.InFlight())
	assert.Empty(t, tr.list(), "idle connections are closed only once the target drained")

	// New requests go to the new set only.
	for range 5 {
		rec := httptest.NewRecorder()
		b.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
		assert.Equal(t, "fast", rec.Body.String())
	}
	close(release)
	rec := <-done
	assert.Equal(t, http.StatusOK, rec.Code)
	assert.Equal(t, "slow", rec.Body.String(), "the removed target's in-flight request finishes")
	assert.Equal(t, 0, removed.InFlight())
	assert.Equal(t, []string{slow.URL}, tr.list())

	// Removing an idle target closes at once, with CloseIdleConnections
	// when that is all the transport has.
	var n atomic.Int32
	b2 := backend(t, BackendOptions{Targets: []string{slow.URL, fast.URL}, Transport: idleCloser{http.DefaultTransport, &n}})
	require.NoError(t, b2.SetTargets(eps(fast.URL)))
	assert.Equal(t, int32(1), n.Load())
}

type idleCloser struct {
	http.RoundTripper
	n *atomic.Int32
}

func (c idleCloser) CloseIdleConnections() { c.n.Add(1) }

// forgetGuard records the targets it is told to forget.
type forgetGuard struct {
	mu     sync.Mutex
	forgot map[*Target]bool
}

func (g *forgetGuard) Allow(*http.Request, *Target) (func(int, error), error) {
	return func(int, error) {}, nil
}

func (g *forgetGuard) ForgetTarget(t *Target) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.forgot[t] = true
}

func TestRetiredTargetsAreBounded(t *testing.T) {
	g := &forgetGuard{forgot: map[*Target]bool{}}
	b := backend(t, BackendOptions{Targets: []string{"http://10.1.0.1"}, Guard: g})
	batch := func(k int) []Endpoint {
		out := make([]Endpoint, 600)
		for i := range out {
			out[i] = Endpoint{URL: fmt.Sprintf("http://10.%d.%d.%d", 2+k, i/250, i%250)}
		}
		return out
	}
	for k := range 3 {
		require.NoError(t, b.SetTargets(batch(k)))
	}
	// 1 + 600 + 600 targets removed; at most maxRetired remembered.
	assert.LessOrEqual(t, len(b.pool.retired), maxRetired)
	g.mu.Lock()
	defer g.mu.Unlock()
	assert.Equal(t, 1+600+600-maxRetired, len(g.forgot))
}

func TestPriorityTiers(t *testing.T) {
	u := testURLs(3)
	b := backend(t, BackendOptions{Targets: u[:1]})
	require.NoError(t, b.SetTargets([]Endpoint{{URL: u[0], Priority: 1}, {URL: u[1], Priority: 0}, {URL: u[2], Priority: 1}}))
	p := b.pool
	req := httptest.NewRequest("GET", "/", nil)
	assert.Equal(t, map[string]int{u[1]: 10}, pickCounts(p, req, 10), "the lowest priority tier takes everything")
	// A retry moves to the next tier rather than back to the one tried.
	assert.NotEqual(t, u[1], p.pick(req, []*Target{b.Targets()[1]}).String())

	fail(p, b.Targets()[1], defaultConsecutiveFailures) // the first tier is out
	got := pickCounts(p, req, 10)
	assert.Equal(t, map[string]int{u[0]: 5, u[2]: 5}, got)
}

func TestSetTargetsStartsAndStopsHealthChecks(t *testing.T) {
	a, c := newCheckServer(t, 200), newCheckServer(t, 503)
	b := backend(t, BackendOptions{
		Targets:     []string{a.URL},
		HealthCheck: HealthCheck{Path: "/healthz", Interval: time.Hour, UnhealthyThreshold: 1},
	})
	b.pool.checkNow() // the first round is done
	require.NoError(t, b.SetTargets(eps(a.URL, c.URL)))
	nt := b.Targets()[1]
	waitFor(t, "the new target's first check", func() bool { return !nt.Healthy() })

	require.NoError(t, b.SetTargets(eps(c.URL)))
	before := a.hits.Load()
	b.pool.checkNow()
	assert.Equal(t, before, a.hits.Load(), "a removed target is no longer checked")
}

// TestSwapsUnderLoad swaps the target set many times while requests flow:
// none fails, and once SetTargets returns no new attempt goes to a target it
// removed: the requests a removed target still receives are at most those
// it had in flight when SetTargets returned.
func TestSwapsUnderLoad(t *testing.T) {
	const nUp = 5
	urls := make([]string, nUp)
	for i := range urls {
		urls[i] = upstream(t, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }).URL
	}
	arrivals := map[string]*atomic.Int64{}
	for _, u := range urls {
		arrivals[u] = new(atomic.Int64)
	}
	check := &checkTransport{rt: &http.Transport{MaxIdleConnsPerHost: 64}}
	defer check.rt.(*http.Transport).CloseIdleConnections()
	check.check = func(r *http.Request) { arrivals["http://"+r.URL.Host].Add(1) }
	// The balancer yields, widening the window between reading the set
	// and counting the attempt in flight, where a swap must be caught.
	b := backend(t, BackendOptions{Targets: urls[:2], Transport: check, Balancer: yieldBalancer{LeastRequests()}})

	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var served, failed atomic.Int64
	for range 8 {
		wg.Go(func() {
			for ctx.Err() == nil {
				rec := httptest.NewRecorder()
				b.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
				served.Add(1)
				if rec.Code != http.StatusOK {
					failed.Add(1)
				}
			}
		})
	}
	type window struct{ arrived, inflight int64 }
	removed := map[string]window{} // since the last swap returned
	violations := 0
	rng := rand.New(rand.NewPCG(1, 2))
	var last []string
	for range 300 {
		start := served.Load()
		waitFor(t, "requests between swaps", func() bool { return served.Load() > start+3 })
		for u, w := range removed {
			if got := arrivals[u].Load() - w.arrived; got > w.inflight {
				violations++
				t.Errorf("%s received %d requests after its removal, with %d in flight", u, got, w.inflight)
			}
		}
		var next []string
		for len(next) == 0 {
			for _, u := range urls {
				if rng.IntN(2) == 0 {
					next = append(next, u)
				}
			}
		}
		before := map[string]*Target{}
		for _, tg := range b.Targets() {
			before[tg.String()] = tg
		}
		require.NoError(t, b.SetTargets(eps(next...)))
		clear(removed)
		for u, tg := range before {
			if !slices.Contains(next, u) {
				// In-flight first: an attempt that arrives after the
				// arrivals are read was in flight when it was read.
				n := int64(tg.InFlight())
				removed[u] = window{arrived: arrivals[u].Load(), inflight: n}
			}
		}
		last = next
	}
	stop()
	wg.Wait()
	assert.Zero(t, failed.Load(), "failed requests during swaps")
	assert.Zero(t, violations)
	t.Logf("%d requests over 300 swaps", served.Load())

	// Removed targets drain, and their idle connections are closed once.
	for _, u := range urls {
		if slices.Contains(last, u) {
			continue
		}
		tg := b.pool.retired[u]
		require.NotNil(t, tg)
		assert.Zero(t, tg.InFlight())
		assert.True(t, tg.drainClosed.Load())
	}
}

type checkTransport struct {
	rt    http.RoundTripper
	check func(*http.Request)
}

func (c *checkTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.check(r)
	return c.rt.RoundTrip(r)
}

type yieldBalancer struct{ Balancer }

func (y yieldBalancer) Pick(r *http.Request, ts []*Target) *Target {
	runtime.Gosched()
	return y.Balancer.Pick(r, ts)
}

// BenchmarkPickDuringSwaps measures target choice while another goroutine
// swaps the target set: it stays allocation-free.
func BenchmarkPickDuringSwaps(b *testing.B) {
	u := testURLs(8)
	p := newTestPool(b, poolConfig{Targets: u, Balancer: LeastRequests()})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		sets := [][]Endpoint{eps(u...), eps(u[:5]...), eps(u[3:]...)}
		tick := time.NewTicker(time.Millisecond) // swaps allocate; picks must not
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if err := p.update(sets[i%len(sets)]); err != nil {
				panic(err)
			}
		}
	})
	req := httptest.NewRequest("GET", "/", nil)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		t := p.pick(req, nil)
		if p.acquire(t) {
			p.finish(t, outcomeSuccess)
		}
	}
	b.StopTimer()
	close(stop)
	wg.Wait()
}

// TestDrainingPartOfTierKeepsItsTraffic: draining two of a tier's three
// targets leaves the tier serving on its third, healthy one; the failover
// tier gets nothing.
func TestDrainingPartOfTierKeepsItsTraffic(t *testing.T) {
	urls, hits := countingUpstreams(t, 4)
	b := MustNewBackend("tiers", BackendOptions{})
	defer b.Close()
	require.NoError(t, b.SetTargets([]Endpoint{{URL: urls[0]}, {URL: urls[1]}, {URL: urls[2]}, {URL: urls[3], Priority: 1}}))
	b.Targets()[0].SetDrained(true)
	b.Targets()[1].SetDrained(true)
	for range 30 {
		rec := httptest.NewRecorder()
		b.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
		require.Equal(t, http.StatusOK, rec.Code)
	}
	got := []int64{hits[0].Load(), hits[1].Load(), hits[2].Load(), hits[3].Load()}
	assert.Equal(t, []int64{0, 0, 30, 0}, got, "requests per target: the undrained tier-0 target should take all")
}

// TestReturningTargetIsCheckedAtOnce: a target that was down when removed,
// and is fixed before it is added back, is checked as soon as it returns,
// as a new target is, not an Interval later.
func TestReturningTargetIsCheckedAtOnce(t *testing.T) {
	a, c := newCheckServer(t, 200), newCheckServer(t, 503)
	b := backend(t, BackendOptions{
		Targets:     []string{a.URL, c.URL},
		HealthCheck: HealthCheck{Path: "/healthz", Interval: time.Hour, HealthyThreshold: 1, UnhealthyThreshold: 1},
	})
	b.pool.checkNow()
	ct := b.Targets()[1]
	require.False(t, ct.Healthy(), "the failing target is down after a round")

	require.NoError(t, b.SetTargets(eps(a.URL))) // removed while down
	c.status.Store(200)                          // then fixed
	require.NoError(t, b.SetTargets(eps(a.URL, c.URL)))
	require.Same(t, ct, b.Targets()[1], "the target returns with its state")
	waitFor(t, "the returning target's check", ct.Healthy)
}
