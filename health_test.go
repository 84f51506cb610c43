package pylon

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// fail records n failed attempts on t.
func fail(p *pool, t *Target, n int) {
	for range n {
		p.acquire(t)
		p.finish(t, outcomeFailure)
	}
}

// ejection returns how long t stays ejected from now, 0 if it is not.
func ejection(t *Target, now time.Time) time.Duration {
	until := t.ejectedUntil.Load()
	if until == 0 {
		return 0
	}
	return time.Duration(until - now.UnixNano())
}

func TestPassiveEjection(t *testing.T) {
	clock := newFakeClock()
	logs := &recordHandler{}
	p := newTestPool(t, poolConfig{
		Targets: testURLs(3),
		Outlier: OutlierDetection{ConsecutiveFailures: 3, BaseEjectionTime: 10 * time.Second},
		Now:     clock.Now,
		Logger:  slog.New(logs),
	})
	ts := p.targets()
	bad := ts[0]

	fail(p, bad, 2)
	p.acquire(bad)
	p.finish(bad, outcomeSuccess) // a success resets the count
	fail(p, bad, 2)
	for range 10 { // client cancels and 4xx say nothing about the target
		p.acquire(bad)
		p.finish(bad, outcomeNeutral)
	}
	if !bad.Healthy() {
		t.Fatal("ejected after failures that were not consecutive")
	}

	fail(p, bad, 1) // third in a row
	if bad.Healthy() {
		t.Fatal("not ejected after 3 consecutive failures")
	}
	if c := pickCounts(p, nil, 100); c[bad.String()] != 0 {
		t.Fatalf("ejected target picked %d times", c[bad.String()])
	}
	// Failures of requests sent before the ejection don't extend it.
	fail(p, bad, 10)

	clock.Advance(10*time.Second - time.Nanosecond)
	if bad.Healthy() {
		t.Fatal("returned before BaseEjectionTime")
	}
	clock.Advance(time.Nanosecond)
	if c := pickCounts(p, nil, 30); c[bad.String()] != 10 {
		t.Fatalf("after BaseEjectionTime the target got %d of 30 round-robin picks, want 10", c[bad.String()])
	}
	if !bad.Healthy() {
		t.Fatal("still ejected after BaseEjectionTime")
	}
	if e, r := logs.count("ejected"), logs.count("returned"); e != 1 || r != 1 {
		t.Fatalf("logged %d ejections and %d returns, want one each: %q", e, r, logs.msgs)
	}
	for _, tg := range ts {
		if n := tg.InFlight(); n != 0 {
			t.Errorf("%s InFlight = %d, want 0", tg, n)
		}
	}
}

func TestPassiveEjectionDisabled(t *testing.T) {
	p := newTestPool(t, poolConfig{Targets: testURLs(2), Outlier: OutlierDetection{ConsecutiveFailures: -1}})
	fail(p, p.targets()[0], 1000)
	if !p.targets()[0].Healthy() {
		t.Fatal("ejected with ConsecutiveFailures < 0")
	}
}

func TestEjectionTimeGrowsAndDecays(t *testing.T) {
	clock := newFakeClock()
	p := newTestPool(t, poolConfig{
		Targets: testURLs(3),
		Outlier: OutlierDetection{ConsecutiveFailures: 1, BaseEjectionTime: 10 * time.Second, MaxEjectionTime: 25 * time.Second},
		Now:     clock.Now,
	})
	tg := p.targets()[0]

	// Failing again as soon as it returns: 10s, 20s, then capped at 25s.
	for i, want := range []time.Duration{10 * time.Second, 20 * time.Second, 25 * time.Second, 25 * time.Second} {
		fail(p, tg, 1)
		if got := ejection(tg, clock.Now()); got != want {
			t.Fatalf("ejection %d lasts %v, want %v", i+1, got, want)
		}
		clock.Advance(want)
		if !tg.Healthy() {
			t.Fatalf("ejection %d did not end after %v", i+1, want)
		}
	}

	// One BaseEjectionTime in service takes one step off the multiplier
	// (3, the cap, becomes 2, and the next ejection is the 3rd again).
	clock.Advance(10 * time.Second)
	fail(p, tg, 1)
	if got := ejection(tg, clock.Now()); got != 25*time.Second {
		t.Fatalf("after 10s in service the ejection lasts %v, want 25s", got)
	}
	clock.Advance(25 * time.Second)

	// A long time in service starts again from BaseEjectionTime.
	clock.Advance(time.Hour)
	if !tg.Healthy() {
		t.Fatal("not healthy after an hour")
	}
	fail(p, tg, 1)
	if got := ejection(tg, clock.Now()); got != 10*time.Second {
		t.Fatalf("after an hour in service the ejection lasts %v, want BaseEjectionTime 10s", got)
	}
}

func TestEjectionDefaults(t *testing.T) {
	clock := newFakeClock()
	p := newTestPool(t, poolConfig{Targets: testURLs(2), Now: clock.Now})
	tg := p.targets()[0]
	fail(p, tg, 4)
	if !tg.Healthy() {
		t.Fatal("ejected after 4 failures, default is 5")
	}
	fail(p, tg, 1)
	if got := ejection(tg, clock.Now()); got != 30*time.Second {
		t.Fatalf("first ejection lasts %v, want the default 30s", got)
	}
	// Failing as soon as it returns, the n-th ejection in a row lasts
	// n × 30s, up to the default cap of 300s.
	for n := 2; n <= 12; n++ {
		clock.Advance(ejection(tg, clock.Now()))
		fail(p, tg, 5)
		if got, want := ejection(tg, clock.Now()), min(time.Duration(n)*30*time.Second, 300*time.Second); got != want {
			t.Fatalf("ejection %d in a row lasts %v, want %v", n, got, want)
		}
	}
	if got := ejection(tg, clock.Now()); got != 300*time.Second {
		t.Fatalf("ejection after many in a row lasts %v, want the default cap 300s", got)
	}
}

func TestPanicThreshold(t *testing.T) {
	tests := []struct {
		name      string
		threshold int
		eject     int // of 4 targets
		want      int // distinct targets picked
	}{
		{"all healthy", 0, 0, 4},
		{"half healthy is not panic", 0, 2, 2},
		{"quarter healthy is panic", 0, 3, 4},
		{"none healthy", 0, 4, 4},
		{"negative: one healthy suffices", -1, 3, 1},
		{"negative: none healthy", -1, 4, 4},
		{"100: any unhealthy", 100, 1, 4},
		{"75: three of four", 75, 1, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestPool(t, poolConfig{
				Targets: testURLs(4),
				Outlier: OutlierDetection{ConsecutiveFailures: 1, PanicThreshold: tc.threshold},
				Now:     newFakeClock().Now,
			})
			ts := p.targets()
			for _, tg := range ts[:tc.eject] {
				fail(p, tg, 1)
			}
			c := pickCounts(p, nil, 400)
			if len(c) != tc.want {
				t.Fatalf("picks reached %d targets (%v), want %d", len(c), c, tc.want)
			}
			if tc.want < 4 {
				for _, tg := range ts[:tc.eject] {
					if c[tg.String()] != 0 {
						t.Fatalf("ejected %s picked outside panic mode", tg)
					}
				}
			}
		})
	}
}

// checkServer is a target whose health check status can be changed.
type checkServer struct {
	*httptest.Server
	status atomic.Int32
	hits   atomic.Int32
	path   atomic.Value  // last path checked
	agent  atomic.Value  // last User-Agent
	hit    chan struct{} // receives after each check, when there is room
}

func newCheckServer(t *testing.T, status int) *checkServer {
	s := &checkServer{hit: make(chan struct{}, 1)}
	s.status.Store(int32(status))
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		select {
		case s.hit <- struct{}{}:
		default:
		}
		s.path.Store(r.URL.RequestURI())
		s.agent.Store(r.UserAgent())
		if st := int(s.status.Load()); st >= 300 && st < 400 {
			w.Header().Set("Location", "http://127.0.0.1:1/elsewhere")
			w.WriteHeader(st)
			return
		}
		w.WriteHeader(int(s.status.Load()))
		w.Write([]byte("ok"))
	}))
	t.Cleanup(s.Close)
	return s
}

func TestActiveHealthChecks(t *testing.T) {
	a, b := newCheckServer(t, 200), newCheckServer(t, 200)
	logs := &recordHandler{}
	p := newTestPool(t, poolConfig{
		Targets:   []string{a.URL + "/api", b.URL},
		Health:    HealthCheck{Path: "/healthz?full=1", Interval: time.Hour, HealthyThreshold: 2, UnhealthyThreshold: 3},
		Transport: newTestTransport(t),
		Logger:    slog.New(logs),
	})
	ta := p.targets()[0]

	p.checkNow() // the first round ran at start; this is the second
	if n := a.hits.Load(); n != 2 {
		t.Fatalf("target checked %d times after two rounds", n)
	}
	if got := a.path.Load(); got != "/api/healthz?full=1" {
		t.Fatalf("checked %q, want base path + Path", got)
	}
	if got := a.agent.Load(); got != healthCheckUserAgent {
		t.Fatalf("User-Agent %q", got)
	}

	a.status.Store(500)
	steps := []struct {
		status  int
		healthy bool
	}{
		{500, true}, {500, true}, {500, false}, // 3 failures in a row mark it down
		{200, false}, {500, false}, {200, false}, {200, true}, // 2 passes in a row bring it back
		{503, true}, {200, true}, {503, true}, {503, true}, {302, true}, // a 3xx passes
	}
	for i, s := range steps {
		a.status.Store(int32(s.status))
		p.checkNow()
		if got := ta.Healthy(); got != s.healthy {
			t.Fatalf("step %d (status %d): Healthy = %v, want %v", i, s.status, got, s.healthy)
		}
		if !s.healthy {
			if c := pickCounts(p, nil, 20); c[ta.String()] != 0 {
				t.Fatalf("step %d: target failing checks was picked", i)
			}
		}
	}
	if d, u := logs.count("failed health checks"), logs.count("passed health checks"); d != 1 || u != 1 {
		t.Fatalf("logged %d downs and %d ups, want one each: %q", d, u, logs.msgs)
	}
}

func TestActiveHealthCheckFailures(t *testing.T) {
	hang := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-hang:
		}
	}))
	defer slow.Close()
	defer close(hang)
	refused := httptest.NewServer(http.NotFoundHandler())
	refused.Close()

	tests := []struct {
		name    string
		target  string
		healthy bool
	}{
		{"ok", newCheckServer(t, 204).URL, true},
		{"redirect", newCheckServer(t, 307).URL, true},
		{"not found", newCheckServer(t, 404).URL, false},
		{"server error", newCheckServer(t, 500).URL, false},
		{"timeout", slow.URL, false},
		{"connection refused", refused.URL, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestPool(t, poolConfig{
				Targets:   []string{tc.target},
				Health:    HealthCheck{Path: "/healthz", Interval: time.Hour, Timeout: 50 * time.Millisecond, UnhealthyThreshold: 1},
				Transport: newTestTransport(t),
			})
			p.checkNow()
			if got := p.targets()[0].Healthy(); got != tc.healthy {
				t.Fatalf("Healthy = %v, want %v", got, tc.healthy)
			}
		})
	}
}

func TestActiveAndPassiveTogether(t *testing.T) {
	a, b := newCheckServer(t, 200), newCheckServer(t, 200)
	clock := newFakeClock()
	p := newTestPool(t, poolConfig{
		Targets:   []string{a.URL, b.URL},
		Health:    HealthCheck{Path: "/healthz", Interval: time.Hour, UnhealthyThreshold: 1, HealthyThreshold: 1},
		Outlier:   OutlierDetection{ConsecutiveFailures: 1, BaseEjectionTime: time.Minute},
		Transport: newTestTransport(t),
		Now:       clock.Now,
	})
	ta := p.targets()[0]
	fail(p, ta, 1)
	p.checkNow()
	if ta.Healthy() {
		t.Fatal("an ejected target passing active checks must stay out until its ejection ends")
	}
	clock.Advance(time.Minute)
	a.status.Store(500)
	p.checkNow()
	if ta.Healthy() {
		t.Fatal("a target failing active checks must stay out after its ejection ends")
	}
	a.status.Store(200)
	p.checkNow()
	if !ta.Healthy() {
		t.Fatal("target should be back: ejection over and checks passing")
	}
}

func TestIntervalRunsChecks(t *testing.T) {
	a := newCheckServer(t, 200)
	p := newTestPool(t, poolConfig{
		Targets:   []string{a.URL},
		Health:    HealthCheck{Path: "/healthz", Interval: time.Millisecond},
		Transport: newTestTransport(t),
	})
	// No checkNow here: the ticker alone must run rounds.
	timeout := time.After(10 * time.Second)
	for a.hits.Load() < 5 {
		select {
		case <-a.hit:
		case <-timeout:
			t.Fatalf("only %d checks in 10s with a 1ms Interval", a.hits.Load())
		}
	}
	p.close()
}

func TestCloseLeavesNoGoroutine(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	entered := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-r.Context().Done() // hang until the check is abandoned
	}))
	defer srv.Close()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()

	p, err := newPool(poolConfig{
		Backend:   "hanging",
		Targets:   []string{srv.URL},
		Health:    HealthCheck{Path: "/healthz", Timeout: time.Hour},
		Transport: tr,
	})
	if err != nil {
		t.Fatal(err)
	}
	<-entered // a check is in flight and would last an hour
	var wg sync.WaitGroup
	for range 3 { // idempotent, and safe to call concurrently
		wg.Go(p.close)
	}
	wg.Wait()
	p.close()
	p.checkNow() // returns at once on a closed pool
	if !p.targets()[0].Healthy() {
		t.Fatal("a check abandoned by close must not count as a failure")
	}

	// A pool without active checks has nothing to stop.
	q, err := newPool(poolConfig{Backend: "plain", Targets: []string{srv.URL}})
	if err != nil {
		t.Fatal(err)
	}
	q.close()
	q.close()
}
