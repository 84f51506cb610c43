package breaker

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/pylon-gateway/pylon"
)

// servers starts n upstreams over loopback.
func servers(t *testing.T, n int) ([]*upstream, []string) {
	t.Helper()
	ups := make([]*upstream, n)
	urls := make([]string, n)
	for i := range n {
		ups[i] = newUpstream(200)
		srv := httptest.NewServer(ups[i])
		t.Cleanup(srv.Close)
		urls[i] = srv.URL
	}
	return ups, urls
}

func guardedBackend(t *testing.T, g *TargetGuard, urls []string, retries int) *pylon.Backend {
	t.Helper()
	be, err := pylon.NewBackend("orders", pylon.BackendOptions{
		Targets:      urls,
		Balancer:     pylon.RoundRobin(),
		Outlier:      pylon.OutlierDetection{ConsecutiveFailures: -1}, // the breaker alone decides
		Guard:        g,
		Retries:      retries,
		RetryBackoff: -1,
		Logger:       quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	return be
}

func targetBreaker(g *TargetGuard, t *pylon.Target) *Breaker {
	v, _ := g.breakers.Load(t)
	b, _ := v.(*Breaker)
	return b
}

func TestPerTargetSkipsOpenTargetAndTakesItBack(t *testing.T) {
	ups, urls := servers(t, 3)
	ups[1].status.Store(503)
	g := MustPerTarget(Settings{Name: "orders", ConsecutiveFailures: 2, OpenDuration: 30 * time.Millisecond, Logger: quiet})
	be := guardedBackend(t, g, urls, 0)
	bad := be.Targets()[1]

	// Round robin sends every third request to the bad target until its
	// breaker opens after two failures.
	for range 6 {
		do(be)
	}
	if s := g.State(bad); s != StateOpen {
		t.Fatalf("bad target's breaker %v, want open", s)
	}
	if ups[1].hits.Load() != 2 {
		t.Fatalf("bad target hit %d times, want 2", ups[1].hits.Load())
	}
	// While it is open, every request is served by the other two.
	okHits := ups[0].hits.Load() + ups[2].hits.Load()
	for range 30 {
		w, info := do(be)
		if w.Code != 200 {
			t.Fatalf("got %d with one target open", w.Code)
		}
		if info.Breaker != "closed" || info.Target == bad.String() {
			t.Fatalf("info %q %q", info.Breaker, info.Target)
		}
	}
	if ups[1].hits.Load() != 2 || ups[0].hits.Load()+ups[2].hits.Load() != okHits+30 {
		t.Fatalf("open target was called")
	}

	// It recovers: after the open period a probe succeeds and it serves again.
	ups[1].status.Store(200)
	waitHalfOpen(t, targetBreaker(g, bad))
	for range 6 {
		if w, _ := do(be); w.Code != 200 {
			t.Fatalf("got %d", w.Code)
		}
	}
	if s := g.State(bad); s != StateClosed {
		t.Fatalf("recovered target's breaker %v, want closed", s)
	}
	if h := ups[1].hits.Load(); h < 3 {
		t.Fatalf("recovered target hit %d times, want it back in rotation", h)
	}
}

func TestPerTargetAllOpen(t *testing.T) {
	ups, urls := servers(t, 2)
	for _, u := range ups {
		u.status.Store(500)
	}
	g := MustPerTarget(Settings{ConsecutiveFailures: 1, Logger: quiet})
	be := guardedBackend(t, g, urls, 0)
	for range 2 {
		do(be)
	}
	w, info := do(be)
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") != "30" {
		t.Fatalf("all open: %d, Retry-After %q", w.Code, w.Header().Get("Retry-After"))
	}
	if info.Breaker != "open" {
		t.Fatalf("RequestInfo.Breaker %q", info.Breaker)
	}
	if ups[0].hits.Load()+ups[1].hits.Load() != 2 {
		t.Fatal("an open target was called")
	}
}

func TestPerTargetRetriesCountOncePerAttempt(t *testing.T) {
	ups, urls := servers(t, 2)
	ups[0].status.Store(503)
	g := MustPerTarget(Settings{ConsecutiveFailures: 2, Logger: quiet})
	be, err := pylon.NewBackend("orders", pylon.BackendOptions{
		Targets: urls, Balancer: pylon.RoundRobin(), Guard: g, Retries: 1, RetryOnStatus: true,
		RetryBackoff: -1, Outlier: pylon.OutlierDetection{ConsecutiveFailures: -1}, Logger: quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	w, _ := do(be) // 503 from target 0, retried on target 1
	if w.Code != 200 {
		t.Fatalf("retry: %d", w.Code)
	}
	c0 := targetBreaker(g, be.Targets()[0]).ts.Load().Counts()
	c1 := targetBreaker(g, be.Targets()[1]).ts.Load().Counts()
	if c0.TotalFailures != 1 || c0.Requests != 1 || c1.TotalSuccesses != 1 || c1.Requests != 1 {
		t.Fatalf("counts %+v / %+v: want one failure on 0 and one success on 1", c0, c1)
	}
}

func TestPerTargetClientCancel(t *testing.T) {
	_, urls := servers(t, 1)
	g := MustPerTarget(Settings{ConsecutiveFailures: 1, Logger: quiet})
	be := guardedBackend(t, g, urls, 0)
	tg := be.Targets()[0]
	done, err := g.Allow(httptest.NewRequest("GET", "/", nil), tg)
	if err != nil {
		t.Fatal(err)
	}
	done(0, context.Canceled)
	if c := targetBreaker(g, tg).ts.Load().Counts(); c.TotalExclusions != 1 || c.TotalFailures != 0 {
		t.Fatalf("counts %+v", c)
	}
	done, _ = g.Allow(httptest.NewRequest("GET", "/", nil), tg)
	done(0, errors.New("connection reset"))
	if _, err := g.Allow(httptest.NewRequest("GET", "/", nil), tg); !errors.Is(err, ErrOpen) {
		t.Fatalf("err %v, want ErrOpen", err)
	}
	var ra interface{ RetryAfter() time.Duration }
	if _, err := g.Allow(httptest.NewRequest("GET", "/", nil), tg); !errors.As(err, &ra) || ra.RetryAfter() <= 0 {
		t.Fatalf("refusal without RetryAfter: %v", err)
	}
}

func TestPerTargetBounded(t *testing.T) {
	g := MustPerTarget(Settings{Logger: quiet})
	g.n.Store(MaxTargets)
	_, urls := servers(t, 1)
	be := guardedBackend(t, g, urls, 0)
	done, err := g.Allow(httptest.NewRequest("GET", "/", nil), be.Targets()[0])
	if err != nil || done == nil {
		t.Fatal(err)
	}
	done(200, nil)
	if targetBreaker(g, be.Targets()[0]) != nil {
		t.Fatal("created a breaker past MaxTargets")
	}
}

func TestPerBackendOpensForEveryTarget(t *testing.T) {
	ups, urls := servers(t, 2)
	ups[0].status.Store(503)
	ups[1].status.Store(503)
	g := MustPerBackend(Settings{Name: "orders", ConsecutiveFailures: 3, OpenDuration: time.Hour, Logger: quiet})
	be, err := pylon.NewBackend("orders", pylon.BackendOptions{
		Targets: urls, Guard: g, Logger: quiet,
		Outlier: pylon.OutlierDetection{ConsecutiveFailures: -1},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	serve := func() *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		be.ServeHTTP(w, httptest.NewRequest("GET", "/", nil))
		return w
	}
	for range 3 { // failures spread over both targets count against one breaker
		if w := serve(); w.Code != 503 {
			t.Fatalf("upstream answer: got %d", w.Code)
		}
	}
	if g.State() != StateOpen {
		t.Fatalf("state %v after 3 failures, want open", g.State())
	}
	hits := ups[0].hits.Load() + ups[1].hits.Load()
	w := serve()
	if w.Code != 503 || w.Header().Get("Retry-After") == "" {
		t.Fatalf("open backend: got %d, Retry-After %q", w.Code, w.Header().Get("Retry-After"))
	}
	if got := ups[0].hits.Load() + ups[1].hits.Load(); got != hits {
		t.Fatalf("an open backend breaker let %d requests through", got-hits)
	}
}

func TestPerTargetStateFollowsSetTargets(t *testing.T) {
	ups, urls := servers(t, 3)
	ups[0].status.Store(503)
	g := MustPerTarget(Settings{Name: "orders", ConsecutiveFailures: 1, OpenDuration: time.Hour, Logger: quiet})
	be := guardedBackend(t, g, urls[:2], 0)
	bad := be.Targets()[0]
	for range 2 { // round robin: one attempt each, the bad one opens
		be.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	}
	if g.State(bad) != StateOpen {
		t.Fatalf("bad target's breaker is %v, want open", g.State(bad))
	}
	// Kept by URL across an update: still open, still skipped.
	if err := be.SetTargets([]pylon.Endpoint{{URL: urls[2]}, {URL: urls[0]}}); err != nil {
		t.Fatal(err)
	}
	if be.Targets()[1] != bad || g.State(bad) != StateOpen {
		t.Fatal("the breaker did not carry over the update")
	}
	for range 4 {
		w := httptest.NewRecorder()
		be.ServeHTTP(w, httptest.NewRequest("GET", "/", nil))
		if w.Code != 200 {
			t.Fatalf("status %d: an open target was tried", w.Code)
		}
	}
	// Forgotten: the breaker goes, and its place is given back.
	n := g.n.Load()
	g.ForgetTarget(bad)
	if targetBreaker(g, bad) != nil || g.n.Load() != n-1 {
		t.Fatal("ForgetTarget kept the breaker")
	}
	g.ForgetTarget(bad) // idempotent
	if g.n.Load() != n-1 {
		t.Fatal("ForgetTarget counted twice")
	}
}
