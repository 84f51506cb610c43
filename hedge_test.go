package pylon

import (
	"context"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// countGuard counts Allow and done calls, and the dones told of a
// cancellation.
type countGuard struct {
	allowed, done, canceled, failed atomic.Int64
}

func (g *countGuard) Allow(*http.Request, *Target) (func(int, error), error) {
	g.allowed.Add(1)
	var once atomic.Bool
	return func(status int, err error) {
		if !once.CompareAndSwap(false, true) {
			panic("done called twice")
		}
		g.done.Add(1)
		switch {
		case errors.Is(err, context.Canceled):
			g.canceled.Add(1)
		case err != nil:
			g.failed.Add(1)
		}
	}, nil
}

// TestHedgeSlowTarget: of two upstreams, one answers in 300ms; with a 20ms
// hedge delay every request is answered near the fast one's latency, the
// slow one's requests are cancelled, in-flight returns to 0 and nothing is
// ejected or told of a failure.
func TestHedgeSlowTarget(t *testing.T) {
	var slowHits, slowCanceled atomic.Int64
	slow := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		slowHits.Add(1)
		select {
		case <-time.After(300 * time.Millisecond):
			io.WriteString(w, "slow")
		case <-r.Context().Done():
			slowCanceled.Add(1)
		}
	})
	fast := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "fast")
	})
	g := &countGuard{}
	be := backend(t, BackendOptions{
		Targets: []string{slow.URL, fast.URL},
		Hedge:   HedgeOptions{Delay: 20 * time.Millisecond},
		Guard:   g,
	})
	gw := front(t, Options{}, be)

	const n = 20
	lat := make([]time.Duration, 0, n)
	for range n {
		began := time.Now()
		res, err := http.Get(gw.URL + "/x")
		require.NoError(t, err)
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		lat = append(lat, time.Since(began))
		assert.Equal(t, http.StatusOK, res.StatusCode)
		assert.Equal(t, "fast", string(body))
	}
	slices.Sort(lat)
	p50 := lat[n/2]
	t.Logf("p50 %v, max %v; slow hits %d", p50, lat[n-1], slowHits.Load())
	assert.Less(t, p50, 150*time.Millisecond, "p50 near the fast target, not the slow one")
	assert.Less(t, lat[n-1], 250*time.Millisecond, "no request waited for the slow target")
	require.Positive(t, slowHits.Load())
	until(t, "slow requests cancelled", func() bool { return slowCanceled.Load() == slowHits.Load() })
	for _, tg := range be.Targets() {
		until(t, "in-flight back to 0", func() bool { return tg.InFlight() == 0 })
		assert.Zero(t, tg.Ejections(), "%s ejected", tg)
		assert.True(t, tg.Healthy())
	}
	until(t, "done once per attempt", func() bool { return g.done.Load() == g.allowed.Load() })
	assert.Equal(t, slowHits.Load(), g.canceled.Load(), "losers neutral")
	assert.Zero(t, g.failed.Load())
	until(t, "retry budget given back", func() bool { return be.retriesInUse.Load() == 0 })
}

// TestHedgeOnlySafeMethods: GET, HEAD, OPTIONS and TRACE are hedged; no
// other method is, not even an idempotent one or one with an
// Idempotency-Key: a hedge runs the request twice at once.
func TestHedgeOnlySafeMethods(t *testing.T) {
	var hits atomic.Int64
	h := func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1) == 1 {
			select { // the first attempt is slow
			case <-time.After(200 * time.Millisecond):
			case <-r.Context().Done():
			}
		}
	}
	u1, u2 := upstream(t, h), upstream(t, h)
	be := backend(t, BackendOptions{Targets: []string{u1.URL, u2.URL}, Hedge: HedgeOptions{Delay: 10 * time.Millisecond}})
	gw := front(t, Options{}, be)

	tests := []struct {
		method, key string
		hedged      bool
	}{
		{"GET", "", true},
		{"HEAD", "", true},
		{"OPTIONS", "", true},
		{"TRACE", "", true},
		{"POST", "", false},
		{"POST", "Idempotency-Key", false},
		{"POST", "X-Idempotency-Key", false},
		{"PATCH", "Idempotency-Key", false},
		{"PUT", "", false},
		{"DELETE", "Idempotency-Key", false},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.key, func(t *testing.T) {
			hits.Store(0)
			req, _ := http.NewRequest(tt.method, gw.URL+"/x", nil)
			if tt.key != "" {
				req.Header.Set(tt.key, "k1")
			}
			res, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			res.Body.Close()
			assert.Equal(t, http.StatusOK, res.StatusCode)
			want := int64(1)
			if tt.hedged {
				want = 2
			}
			assert.Equal(t, want, hits.Load(), "attempts")
			for _, tg := range be.Targets() {
				until(t, "in-flight back to 0", func() bool { return tg.InFlight() == 0 })
			}
		})
	}
}

// TestHedgeKeyedPostRunsOnce: a POST with an Idempotency-Key to a backend
// that hedges is sent once, and its upstream's answer reaches the client:
// it is neither run twice by two upstreams nor answered with an upstream's
// 409 for the hedge's duplicate. The key still lets it be retried after a
// 503, one attempt after the other.
func TestHedgeKeyedPostRunsOnce(t *testing.T) {
	var mu sync.Mutex
	inFlight := map[string]bool{}
	running, maxRunning := 0, 0 // under mu
	var runs, answers503 atomic.Int64
	h := func(w http.ResponseWriter, r *http.Request) {
		k := r.Header.Get("Idempotency-Key")
		mu.Lock()
		running++
		maxRunning = max(maxRunning, running)
		dup := inFlight[k]
		inFlight[k] = true
		mu.Unlock()
		defer func() {
			mu.Lock()
			running--
			if !dup {
				delete(inFlight, k)
			}
			mu.Unlock()
		}()
		if dup { // the upstream's own idempotency: a concurrent duplicate
			w.WriteHeader(http.StatusConflict)
			return
		}
		if r.Header.Get("X-Fail-First") != "" && answers503.Add(1) == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		runs.Add(1)
		// The upstream's latency, well past the hedge delay: a hedge, if
		// one were sent, would arrive while this attempt runs.
		select {
		case <-time.After(60 * time.Millisecond):
		case <-r.Context().Done():
			return
		}
		w.WriteHeader(http.StatusCreated)
	}
	u1, u2 := upstream(t, h), upstream(t, h)
	be := backend(t, BackendOptions{
		Targets: []string{u1.URL, u2.URL}, Hedge: HedgeOptions{Delay: 5 * time.Millisecond},
		Retries: 1, RetryOnStatus: true,
	})
	gw := front(t, Options{}, be)
	post := func(key string, hdr ...string) int {
		req, _ := http.NewRequest("POST", gw.URL+"/pay", nil)
		req.Header.Set("Idempotency-Key", key)
		for _, h := range hdr {
			req.Header.Set(h, "1")
		}
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		res.Body.Close()
		return res.StatusCode
	}
	assert.Equal(t, http.StatusCreated, post("order-1"), "the client got its upstream's answer")
	assert.Equal(t, int64(1), runs.Load(), "run once")

	assert.Equal(t, http.StatusCreated, post("order-2", "X-Fail-First"), "retried after the 503")
	assert.Equal(t, int64(2), answers503.Load(), "the 503 and its retry")
	assert.Equal(t, int64(2), runs.Load())
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, 1, maxRunning, "never two attempts at once")
}

// until polls cond every millisecond until it holds or 5s pass.
func until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// TestHedgeFailover: an attempt that fails before the delay sends the hedge
// at once.
func TestHedgeFailover(t *testing.T) {
	refused := closedAddr(t)
	ok := upstream(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	be := backend(t, BackendOptions{Targets: []string{refused, ok.URL}, Hedge: HedgeOptions{Delay: time.Second}})
	gw := front(t, Options{}, be)
	for range 4 {
		began := time.Now()
		res, err := http.Get(gw.URL + "/x")
		require.NoError(t, err)
		res.Body.Close()
		assert.Equal(t, http.StatusOK, res.StatusCode)
		assert.Less(t, time.Since(began), 500*time.Millisecond)
	}
}

// TestHedgeChargedToRetryBudget: with the retry budget spent, no hedge is
// sent; the slow first attempt answers.
func TestHedgeChargedToRetryBudget(t *testing.T) {
	var hits atomic.Int64
	h := func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1) == 1 {
			select { // the first attempt is slow
			case <-time.After(100 * time.Millisecond):
			case <-r.Context().Done():
			}
		}
	}
	u1, u2 := upstream(t, h), upstream(t, h)
	be := backend(t, BackendOptions{Targets: []string{u1.URL, u2.URL}, Hedge: HedgeOptions{Delay: 5 * time.Millisecond}, MinRetryConcurrency: 1})
	gw := front(t, Options{}, be)
	be.retriesInUse.Add(1) // the budget's one place is taken
	res, err := http.Get(gw.URL + "/x")
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, int64(1), hits.Load(), "no hedge past the budget")
	be.retriesInUse.Add(-1)

	hits.Store(0)
	res, err = http.Get(gw.URL + "/x")
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, int64(2), hits.Load(), "hedged within the budget")
	until(t, "its place given back", func() bool { return be.retriesInUse.Load() == 0 })
}

// TestHedgeObservedP95: two upstreams whose time to headers is 4-8ms, with
// one request in 25 taking 300ms. With Observed hedging and a 1ms floor,
// the backend learns each target's p95 (about 8ms) and sends the hedge of
// a slow request after about that long (measured at the upstreams, from
// the first attempt's arrival to the hedge's), neither after the 1ms floor
// nor after the slow answer.
func TestHedgeObservedP95(t *testing.T) {
	type arrival struct {
		first time.Time
		gap   time.Duration // to the hedge; 0 when there was none
	}
	var mu sync.Mutex
	seen := map[string]*arrival{}
	h := func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Req")
		n, _ := strconv.Atoi(id)
		mu.Lock()
		a := seen[id]
		hedge := a != nil
		if hedge {
			a.gap = time.Since(a.first)
		} else {
			seen[id] = &arrival{first: time.Now()}
		}
		mu.Unlock()
		d := time.Duration(4+n%5) * time.Millisecond // the body: 4-8ms
		if hedge {
			d = time.Duration(4+(n+2)%5) * time.Millisecond
		} else if r.Header.Get("X-Slow") != "" {
			d = 300 * time.Millisecond // the tail
		}
		tm := time.NewTimer(d) // the upstream's latency
		defer tm.Stop()
		select {
		case <-tm.C:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "ok")
	}
	u1, u2 := upstream(t, h), upstream(t, h)
	be := backend(t, BackendOptions{
		Targets: []string{u1.URL, u2.URL},
		Hedge:   HedgeOptions{Delay: time.Millisecond, Observed: true},
	})
	gw := front(t, Options{}, be)

	const warm, n = 100, 300
	var slow []string
	for i := range warm + n {
		req, _ := http.NewRequest("GET", gw.URL+"/x", nil)
		id := strconv.Itoa(i)
		req.Header.Set("X-Req", id)
		if i >= warm && i%25 == 0 {
			req.Header.Set("X-Slow", "1")
			slow = append(slow, id)
		}
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		require.Equal(t, http.StatusOK, res.StatusCode)
	}

	for _, tg := range be.Targets() {
		d := be.hedgeDelay(tg, time.Now())
		t.Logf("%s: hedge delay %v", tg, d)
		assert.GreaterOrEqual(t, d, 6*time.Millisecond, "about the p95 of 4-8ms, not the 1ms floor")
		assert.Less(t, d, 60*time.Millisecond, "the p95, not the 300ms tail")
	}
	mu.Lock()
	var gaps []time.Duration
	hedged := 0
	for i := warm; i < warm+n; i++ {
		if seen[strconv.Itoa(i)].gap > 0 {
			hedged++
		}
	}
	for _, id := range slow {
		gaps = append(gaps, seen[id].gap)
	}
	mu.Unlock()
	slices.Sort(gaps)
	t.Logf("slow requests' hedges sent after %v; %d of %d requests hedged after warm-up", gaps, hedged, n)
	require.NotEmpty(t, gaps)
	med := gaps[len(gaps)/2]
	assert.GreaterOrEqual(t, med, 5*time.Millisecond, "hedged after about the p95, not the 1ms floor")
	assert.Less(t, med, 100*time.Millisecond, "hedged well before the slow answer")
	assert.Less(t, hedged, n/4, "the p95 delay hedges few requests (the fixed 1ms one would hedge them all)")
	for _, tg := range be.Targets() {
		until(t, "in-flight back to 0", func() bool { return tg.InFlight() == 0 })
	}
}
