package overload_test

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/breaker"
	"github.com/pylon-gateway/pylon/overload"
	"github.com/pylon-gateway/pylon/ratelimit"
)

func TestPerBackendSheds(t *testing.T) {
	up := newHoldBackend(t)
	lim := overload.MustPerBackend(overload.Limits{Name: "orders", MaxInFlight: 2, RetryAfter: 3 * time.Second})
	_, url := gateway(t, lim, []string{up.srv.URL})

	a, b := get(t, url+"/x"), get(t, url+"/x")
	waitFor(t, "two requests upstream", func() bool { return up.arrived.Load() == 2 })
	r := recv(t, get(t, url+"/x"))
	checkShed(t, r, http.StatusServiceUnavailable)
	if got := r.header.Get("Retry-After"); got != "3" {
		t.Errorf("Retry-After = %q, want 3", got)
	}
	up.open()
	for _, ch := range []<-chan result{a, b} {
		if r := recv(t, ch); r.status != 200 {
			t.Errorf("held request: %d", r.status)
		}
	}
	if r := recv(t, get(t, url+"/x")); r.status != 200 {
		t.Errorf("after release: %d", r.status)
	}
	st := lim.Stats()
	if st.Admitted != 3 || st.Shed != 1 || st.InFlight != 0 {
		t.Errorf("stats = %+v", st)
	}
}

func TestPerBackendQueue(t *testing.T) {
	tests := []struct {
		name    string
		maxWait time.Duration
		want    int // the queued request's status
	}{
		{"admitted when a place frees", 10 * time.Second, 200},
		{"refused when the wait is over", 20 * time.Millisecond, 503},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := newHoldBackend(t)
			lim := overload.MustPerBackend(overload.Limits{MaxInFlight: 1, MaxQueued: 1, MaxWait: tt.maxWait})
			_, url := gateway(t, lim, []string{up.srv.URL})
			first := get(t, url+"/x")
			waitFor(t, "first upstream", func() bool { return up.arrived.Load() == 1 })
			queued := get(t, url+"/x")
			if tt.want == 200 {
				waitFor(t, "second queued", func() bool { return lim.Stats().Queued == 1 })
				checkShed(t, recv(t, get(t, url+"/x")), 503) // queue full: at once
				up.open()
			}
			if r := recv(t, queued); r.status != tt.want {
				t.Errorf("queued: %d, want %d", r.status, tt.want)
			}
			up.open()
			recv(t, first)
			if st := lim.Stats(); tt.want == 200 && st.Waited != 1 {
				t.Errorf("stats = %+v", st)
			}
		})
	}
}

func TestPerTargetSkipsFullTarget(t *testing.T) {
	up1, up2 := newHoldBackend(t), newHoldBackend(t)
	lim := overload.MustPerTarget(overload.Limits{MaxInFlight: 1})
	gw, url := gateway(t, lim, []string{up1.srv.URL, up2.srv.URL})
	a, b := get(t, url+"/x"), get(t, url+"/x")
	waitFor(t, "one request on each target", func() bool { return up1.arrived.Load() == 1 && up2.arrived.Load() == 1 })
	checkShed(t, recv(t, get(t, url+"/x")), 503)
	up1.open()
	up2.open()
	recv(t, a)
	recv(t, b)
	for _, tg := range gw.Backends()[0].Targets() {
		if st := lim.Stats(tg); st.Admitted != 1 || st.InFlight != 0 {
			t.Errorf("%s: %+v", tg, st)
		}
	}
}

// A request waits in one target's queue at most once: when that wait fails,
// the next target admits it only to a free place, so its wait is one
// MaxWait, not one per target.
func TestPerTargetQueuesARequestOnce(t *testing.T) {
	up1, up2 := newHoldBackend(t), newHoldBackend(t)
	lim := overload.MustPerTarget(overload.Limits{MaxInFlight: 1, MaxQueued: 1, MaxWait: 200 * time.Millisecond})
	gw, url := gateway(t, lim, []string{up1.srv.URL, up2.srv.URL})
	a, b := get(t, url+"/x"), get(t, url+"/x")
	waitFor(t, "one request on each target", func() bool { return up1.arrived.Load() == 1 && up2.arrived.Load() == 1 })
	targets := gw.Backends()[0].Targets()
	c := get(t, url+"/x")
	queuedOn := map[string]bool{}
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	var r result
	for waiting := true; waiting; {
		select {
		case r = <-c:
			waiting = false
		case <-tick.C:
			for _, tg := range targets {
				if lim.Stats(tg).Queued > 0 {
					queuedOn[tg.String()] = true
				}
			}
		}
	}
	checkShed(t, r, 503)
	if len(queuedOn) != 1 {
		t.Errorf("the request queued on %d targets (%v), want 1", len(queuedOn), queuedOn)
	}
	up1.open()
	up2.open()
	recv(t, a)
	recv(t, b)
}

func TestCriticalTakesReservedPlaces(t *testing.T) {
	up := newHoldBackend(t)
	lim := overload.MustPerBackend(overload.Limits{MaxInFlight: 4, CriticalShare: 0.5})
	_, url := gateway(t, lim, []string{up.srv.URL})
	held := []<-chan result{get(t, url+"/critical")}
	waitFor(t, "critical upstream", func() bool { return up.arrived.Load() == 1 })
	held = append(held, get(t, url+"/x"))
	waitFor(t, "normal upstream", func() bool { return up.arrived.Load() == 2 })
	// 2 in flight of 4, 2 kept for critical requests: others are shed.
	checkShed(t, recv(t, get(t, url+"/x")), 503)
	held = append(held, get(t, url+"/critical"), get(t, url+"/critical"))
	waitFor(t, "critical requests take the kept places", func() bool { return up.arrived.Load() == 4 })
	checkShed(t, recv(t, get(t, url+"/critical")), 503)
	up.open()
	for _, ch := range held {
		if r := recv(t, ch); r.status != 200 {
			t.Errorf("held: %d", r.status)
		}
	}
	if st := lim.Stats(); st.Shed != 2 || st.CriticalShed != 1 {
		t.Errorf("stats = %+v", st)
	}
}

func TestCriticalServedFirstFromQueue(t *testing.T) {
	up := newHoldBackend(t)
	lim := overload.MustPerBackend(overload.Limits{MaxInFlight: 1, MaxQueued: 2, MaxWait: 10 * time.Second, CriticalShare: -1})
	_, url := gateway(t, lim, []string{up.srv.URL})
	first := get(t, url+"/x")
	waitFor(t, "first upstream", func() bool { return up.arrived.Load() == 1 })
	normal := get(t, url+"/x")
	waitFor(t, "normal queued", func() bool { return lim.Stats().Queued == 1 })
	crit := get(t, url+"/critical")
	waitFor(t, "critical queued", func() bool { return lim.Stats().Queued == 2 })
	// Releasing one place lets the critical request, queued last, go first.
	up.release <- struct{}{}
	recv(t, first)
	waitFor(t, "second upstream", func() bool { return up.arrived.Load() == 2 })
	select {
	case r := <-normal:
		t.Fatalf("normal request answered before the critical one: %d", r.status)
	default:
	}
	up.open()
	recv(t, crit)
	recv(t, normal)
}

func TestGuardsWithBreaker(t *testing.T) {
	up := newHoldBackend(t)
	lim := overload.MustPerBackend(overload.Limits{MaxInFlight: 1})
	brk := breaker.MustPerTarget(breaker.Settings{Name: "up"})
	t.Cleanup(brk.Close)
	gw, url := gateway(t, pylon.Guards(brk, lim), []string{up.srv.URL})
	gwTarget := func(*testing.T, string) *pylon.Target { return gw.Backends()[0].Targets()[0] }
	a := get(t, url+"/x")
	waitFor(t, "first upstream", func() bool { return up.arrived.Load() == 1 })
	for range 10 { // refusals by the limit undo the breaker's admission: never counted as failures
		checkShed(t, recv(t, get(t, url+"/x")), 503)
	}
	up.open()
	recv(t, a)
	if r := recv(t, get(t, url+"/x")); r.status != 200 {
		t.Fatalf("after release: %d %s", r.status, r.body)
	}
	if st := brk.State(gwTarget(t, url)); st != breaker.StateClosed {
		t.Errorf("breaker %v after refusals by the limit", st)
	}
}

func TestPerClient(t *testing.T) {
	up := newHoldBackend(t)
	cl := overload.MustNewPerClient(overload.ClientOptions{Key: ratelimit.ByHeader("X-Client", ratelimit.CaseSensitive), MaxInFlight: 1})
	_, url := gateway(t, nil, []string{up.srv.URL}, cl.Middleware)
	a := get(t, url+"/x", "X-Client", "alice")
	waitFor(t, "alice upstream", func() bool { return up.arrived.Load() == 1 })
	checkShed(t, recv(t, get(t, url+"/x", "X-Client", "alice")), http.StatusTooManyRequests)
	b := get(t, url+"/x", "X-Client", "bob")
	waitFor(t, "bob upstream", func() bool { return up.arrived.Load() == 2 })
	up.open()
	recv(t, a)
	recv(t, b)
	if r := recv(t, get(t, url+"/x", "X-Client", "alice")); r.status != 200 {
		t.Errorf("alice after release: %d", r.status)
	}
	if st := cl.Stats(); st.Shed != 1 || st.Admitted != 3 || st.InFlight != 0 {
		t.Errorf("stats = %+v", st)
	}
}

func TestPerClientBySubjectBeforeAuthRefused(t *testing.T) {
	gw := pylon.New(pylon.Options{})
	auth := func(next http.Handler) http.Handler {
		return pylon.WithStage(next, pylon.Stage{Name: "auth", Roles: pylon.RoleAuthenticate})
	}
	gw.Route("GET /x").Use(overload.PerClient(ratelimit.BySubject, 1), auth).Handler(http.NotFoundHandler())
	if gw.Err() == nil {
		t.Fatal("PerClient by subject before auth accepted")
	}
}

func TestProbesNeverShed(t *testing.T) {
	up := newHoldBackend(t)
	b := pylon.MustNewBackend("up", pylon.BackendOptions{Targets: []string{up.srv.URL},
		Guard: overload.MustPerBackend(overload.Limits{MaxInFlight: 1})})
	t.Cleanup(func() { b.Close() })
	gw := pylon.New(pylon.Options{})
	isProbe := func(r *http.Request) bool { return r.URL.Path == "/healthz" || r.URL.Path == "/readyz" }
	gw.Use(overload.PerClientWithOptions(overload.ClientOptions{Key: func(*http.Request) (string, bool) { return "all", true },
		MaxInFlight: 1, Skip: isProbe}))
	live, ready := gw.Health()
	gw.Handle("GET /healthz", live)
	gw.Handle("GET /readyz", ready)
	gw.Route("GET /x").To(b)
	srv := httptest.NewServer(gw)
	t.Cleanup(srv.Close)
	a := get(t, srv.URL+"/x")
	waitFor(t, "upstream", func() bool { return up.arrived.Load() == 1 })
	checkShed(t, recv(t, get(t, srv.URL+"/x")), http.StatusTooManyRequests)
	for _, p := range []string{"/healthz", "/readyz"} {
		if r := recv(t, get(t, srv.URL+p)); r.status != 200 {
			t.Errorf("%s = %d while the limits are full", p, r.status)
		}
	}
	up.open()
	recv(t, a)
}
