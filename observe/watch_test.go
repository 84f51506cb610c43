package observe_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/breaker"
	"github.com/pylon-gateway/pylon/observe"
)

// TestWatchBreaker checks that a watched breaker's state series exist,
// closed, before any trip, and follow its changes with no OnStateChange.
func TestWatchBreaker(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := observe.NewMetrics(reg, observe.MetricsOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b := breaker.MustNew(breaker.Settings{Name: "orders", ConsecutiveFailures: 1})
	m.WatchBreaker(b)
	g := breaker.MustPerBackend(breaker.Settings{Name: "payments"})
	m.WatchBreaker(g)
	const start = `
# HELP pylon_breaker_state 1 for the circuit breaker's current state, 0 for the others.
# TYPE pylon_breaker_state gauge
pylon_breaker_state{breaker="orders",state="closed"} 1
pylon_breaker_state{breaker="orders",state="half-open"} 0
pylon_breaker_state{breaker="orders",state="open"} 0
pylon_breaker_state{breaker="payments",state="closed"} 1
pylon_breaker_state{breaker="payments",state="half-open"} 0
pylon_breaker_state{breaker="payments",state="open"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(start), "pylon_breaker_state"); err != nil {
		t.Error(err)
	}
	if got := value(t, reg, "pylon_breaker_transitions_total", map[string]string{"breaker": "orders", "from": "closed", "to": "open"}); got != 0 {
		t.Errorf("transitions before any trip = %v", got)
	}

	// Trip it: one failure.
	h := b.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadGateway)
	}))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	const tripped = `
# HELP pylon_breaker_state 1 for the circuit breaker's current state, 0 for the others.
# TYPE pylon_breaker_state gauge
pylon_breaker_state{breaker="orders",state="closed"} 0
pylon_breaker_state{breaker="orders",state="half-open"} 0
pylon_breaker_state{breaker="orders",state="open"} 1
pylon_breaker_state{breaker="payments",state="closed"} 1
pylon_breaker_state{breaker="payments",state="half-open"} 0
pylon_breaker_state{breaker="payments",state="open"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(tripped), "pylon_breaker_state"); err != nil {
		t.Error(err)
	}
	if got := value(t, reg, "pylon_breaker_transitions_total", map[string]string{"breaker": "orders", "from": "closed", "to": "open"}); got != 1 {
		t.Errorf("closed->open transitions = %v, want 1", got)
	}
}

// TestWatchTargetGuard checks that a TargetGuard's per-target breakers are
// reported closed from their first attempt.
func TestWatchTargetGuard(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := observe.NewMetrics(reg, observe.MetricsOptions{})
	if err != nil {
		t.Fatal(err)
	}
	up := upstream(t)
	g := breaker.MustPerTarget(breaker.Settings{Name: "pay"})
	m.WatchBreaker(g)
	b := newBackend(t, "pay", m, pylon.BackendOptions{Targets: []string{up.URL}, Guard: g})
	b.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	if v := value(t, reg, "pylon_breaker_state", map[string]string{"breaker": "pay " + up.URL, "state": "closed"}); v != 1 {
		t.Errorf("closed = %v, want 1", v)
	}

	// The target leaves and its breaker is forgotten (the Backend does it
	// once the target falls out of its recently-removed set): the series
	// go with it, so that a gone target's "open" does not report for ever
	// and churn does not grow the series.
	old := b.Targets()[0]
	up2 := upstream(t)
	if err := b.SetTargets([]pylon.Endpoint{{URL: up2.URL}}); err != nil {
		t.Fatal(err)
	}
	g.ForgetTarget(old)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "pylon_breaker_state" && mf.GetName() != "pylon_breaker_transitions_total" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			for _, l := range mt.GetLabel() {
				if l.GetName() == "breaker" && l.GetValue() == "pay "+up.URL {
					t.Errorf("%s still has the gone target's breaker: %v", mf.GetName(), mt.GetLabel())
				}
			}
		}
	}
}

// TestWatchGatewayAndRequestInfo checks the series WatchGateway creates at
// start, and the cache and aggregation series read from RequestInfo.
func TestWatchGatewayAndRequestInfo(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := observe.NewMetrics(reg, observe.MetricsOptions{})
	if err != nil {
		t.Fatal(err)
	}
	up := upstream(t)
	orders := newBackend(t, "orders", m, pylon.BackendOptions{Targets: []string{up.URL}})
	gw := pylon.New(pylon.Options{})
	gw.Use(m.Middleware)
	gw.Route("GET /orders/{id}").Name("order").To(orders)
	gw.Route("GET /summary").Name("summary").Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info := pylon.Info(r.Context())
		info.Cache = "hit"
		info.Calls = []pylon.CallInfo{{Key: "order", Outcome: "ok"}, {Key: "payment", Outcome: "timeout"}, {Key: "x", Outcome: "weird"}}
	}))
	if err := gw.Err(); err != nil {
		t.Fatal(err)
	}
	m.WatchGateway(gw)
	if got := histCount(t, reg, "pylon_gateway_duration_seconds", map[string]string{"http_route": "order"}); got != 0 {
		t.Errorf("gateway duration count = %d, want 0", got)
	}
	if got := histCount(t, reg, "pylon_upstream_duration_seconds", map[string]string{"http_route": "order", "backend": "orders"}); got != 0 {
		t.Errorf("upstream duration count = %d, want 0", got)
	}
	if v := value(t, reg, "pylon_upstream_retries_total", map[string]string{"backend": "orders"}); v != 0 {
		t.Errorf("retries = %v", v)
	}
	if v := value(t, reg, "pylon_target_healthy", map[string]string{"backend": "orders", "target": up.URL}); v != 1 {
		t.Errorf("target healthy = %v, want 1 (WatchGateway watches the backends)", v)
	}

	gw.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/summary", nil))
	for _, c := range []struct {
		call, outcome string
	}{{"order", "ok"}, {"payment", "timeout"}, {"x", "other"}} {
		if v := value(t, reg, "pylon_aggregate_calls_total", map[string]string{"http_route": "summary", "call": c.call, "outcome": c.outcome}); v != 1 {
			t.Errorf("aggregate %s %s = %v, want 1", c.call, c.outcome, v)
		}
	}
	if v := value(t, reg, "pylon_cache_requests_total", map[string]string{"http_route": "summary", "result": "hit"}); v != 1 {
		t.Errorf("cache hit = %v, want 1", v)
	}
}
