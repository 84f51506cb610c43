package observe_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/observe"
)

// upstream answers 200 with "ok" for every path, except /fail (503) and
// /big (1000 bytes).
func upstream(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		switch r.URL.Path {
		case "/fail":
			w.WriteHeader(http.StatusServiceUnavailable)
		case "/big":
			_, _ = w.Write([]byte(strings.Repeat("x", 1000)))
		default:
			_, _ = w.Write([]byte("ok"))
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// deadAddr returns a loopback URL nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return "http://" + addr
}

func newBackend(t *testing.T, name string, m *observe.Metrics, opts pylon.BackendOptions) *pylon.Backend {
	t.Helper()
	tr := pylon.NewTransport(opts)
	t.Cleanup(tr.CloseIdleConnections)
	opts.Transport = m.Transport(tr)
	b, err := pylon.NewBackend(name, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// stage is a test middleware standing in for auth and rate limiting: it
// records in RequestInfo what a header asks for.
func stage(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info := pylon.Info(r.Context())
		info.Subject = r.Header.Get("X-Subject")
		switch r.Header.Get("X-Stage") {
		case "limited":
			info.RateLimit = pylon.RateLimitInfo{Decided: true, Allowed: false, Key: info.Subject}
			pylon.Error(w, r, http.StatusTooManyRequests, "")
			return
		case "allowed":
			info.RateLimit = pylon.RateLimitInfo{Decided: true, Allowed: true, Key: info.Subject}
		case "expired", "made-up-reason":
			info.AuthFailure = r.Header.Get("X-Stage")
			pylon.Error(w, r, http.StatusUnauthorized, "")
			return
		}
		next.ServeHTTP(w, r)
	})
}

type fixture struct {
	reg      *prometheus.Registry
	m        *observe.Metrics
	gw       *pylon.Gateway
	srv      *httptest.Server
	up, dead string
}

func newFixture(t *testing.T, opts observe.MetricsOptions) *fixture {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := observe.NewMetrics(reg, opts)
	if err != nil {
		t.Fatal(err)
	}
	up, dead := upstream(t).URL, deadAddr(t)
	orders := newBackend(t, "orders", m, pylon.BackendOptions{
		Targets: []string{dead, up},
		Retries: 1, RetryBackoff: -1,
		Outlier: pylon.OutlierDetection{ConsecutiveFailures: 1},
	})
	flaky := newBackend(t, "flaky", m, pylon.BackendOptions{
		Targets: []string{up},
		Outlier: pylon.OutlierDetection{ConsecutiveFailures: -1},
	})
	m.WatchBackends(orders, orders)
	gw := pylon.New(pylon.Options{})
	gw.Use(m.Middleware)
	gw.Route("GET /orders/{id}").Name("order").Use(stage).To(orders)
	gw.Route("POST /orders").Name("create").Use(stage).To(orders)
	gw.Route("GET /fail").Name("fail").To(flaky)
	gw.Route("GET /local").Name("local").Use(stage).Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("local"))
	}))
	if err := gw.Err(); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw)
	t.Cleanup(srv.Close)
	return &fixture{reg: reg, m: m, gw: gw, srv: srv, up: up, dead: dead}
}

func (f *fixture) do(t *testing.T, method, path string, hdr map[string]string, body string) int {
	t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body == "" {
		req.Body = nil
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	_ = res.Body.Close()
	return res.StatusCode
}

// histCount returns the sample count of the histogram name with exactly
// the given labels, or -1 when there is no such series.
func histCount(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) int {
	t.Helper()
	if m := find(t, g, name, labels); m != nil {
		return int(m.GetHistogram().GetSampleCount())
	}
	return -1
}

func histSum(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	if m := find(t, g, name, labels); m != nil {
		return m.GetHistogram().GetSampleSum()
	}
	return -1
}

func find(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) *dto.Metric {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; !ok || v != lp.GetValue() {
					continue next
				}
			}
			return m
		}
	}
	return nil
}

// seriesCount returns the number of series in g.
func seriesCount(t *testing.T, g prometheus.Gatherer) int {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, mf := range mfs {
		n += len(mf.GetMetric())
	}
	return n
}

func req(route, method, class string) map[string]string {
	return map[string]string{"http_route": route, "http_request_method": method, "http_response_status_class": class}
}

func TestMetricsScriptedTraffic(t *testing.T) {
	f := newFixture(t, observe.MetricsOptions{})
	script := []struct {
		method, path string
		hdr          map[string]string
		body         string
		want         int
	}{
		{"GET", "/orders/1", nil, "", 200}, // first target is dead: one retry, then ejected
		{"GET", "/orders/2", nil, "", 200},
		{"GET", "/orders/3", map[string]string{"X-Stage": "allowed"}, "", 200},
		{"GET", "/orders/4", map[string]string{"X-Stage": "limited"}, "", 429},
		{"POST", "/orders", nil, "hello", 200},
		{"GET", "/fail", nil, "", 503},
		{"GET", "/local", map[string]string{"X-Stage": "expired"}, "", 401},
		{"GET", "/local", map[string]string{"X-Stage": "made-up-reason"}, "", 401},
		{"GET", "/local", nil, "", 200},
		{"GET", "/nowhere", nil, "", 404},
		{"DELETE", "/orders/1", nil, "", 405},
		{"BREW", "/nowhere", nil, "", 404},
	}
	for _, s := range script {
		if got := f.do(t, s.method, s.path, s.hdr, s.body); got != s.want {
			t.Fatalf("%s %s: status %d, want %d", s.method, s.path, got, s.want)
		}
	}
	g := f.reg
	const dur = "http_server_request_duration_seconds"
	for _, tc := range []struct {
		labels map[string]string
		want   int
	}{
		{req("order", "GET", "2xx"), 3},
		{req("order", "GET", "4xx"), 1},
		{req("create", "POST", "2xx"), 1},
		{req("fail", "GET", "5xx"), 1},
		{req("local", "GET", "4xx"), 2},
		{req("local", "GET", "2xx"), 1},
		{req("unmatched", "GET", "4xx"), 1},
		{req("unmatched", "DELETE", "4xx"), 1},
		{req("unmatched", "_OTHER", "4xx"), 1},
	} {
		t.Run(fmt.Sprint(tc.labels), func(t *testing.T) {
			if got := histCount(t, g, dur, tc.labels); got != tc.want {
				t.Errorf("count = %d, want %d", got, tc.want)
			}
		})
	}
	if n := testutil.CollectAndCount(g, dur); n != 9 {
		t.Errorf("%s has %d series, want 9", dur, n)
	}

	t.Run("sizes", func(t *testing.T) {
		if got := histSum(t, g, "http_server_request_body_size_bytes", req("create", "POST", "2xx")); got != 5 {
			t.Errorf("request size sum = %v, want 5", got)
		}
		if got := histSum(t, g, "http_server_response_body_size_bytes", req("order", "GET", "2xx")); got != 6 {
			t.Errorf("response size sum = %v, want 6 (3 × \"ok\")", got)
		}
	})
	t.Run("gateway and upstream time", func(t *testing.T) {
		if got := histCount(t, g, "pylon_gateway_duration_seconds", map[string]string{"http_route": "order"}); got != 4 {
			t.Errorf("gateway count = %d, want 4", got)
		}
		// The limited request never reached the backend.
		if got := histCount(t, g, "pylon_upstream_duration_seconds", map[string]string{"http_route": "order", "backend": "orders"}); got != 3 {
			t.Errorf("upstream count = %d, want 3", got)
		}
		if got := histCount(t, g, "pylon_upstream_duration_seconds", map[string]string{"http_route": "local", "backend": ""}); got != -1 {
			t.Errorf("a route without a backend has an upstream series")
		}
	})
	t.Run("attempts and retries", func(t *testing.T) {
		if got := value(t, g, "pylon_upstream_retries_total", map[string]string{"backend": "orders"}); got != 1 {
			t.Errorf("retries = %v, want 1", got)
		}
		const want = `
# HELP pylon_upstream_attempts_total Upstream attempts by target and result (status class, error or canceled).
# TYPE pylon_upstream_attempts_total counter
pylon_upstream_attempts_total{backend="flaky",result="5xx",target="UP"} 1
pylon_upstream_attempts_total{backend="orders",result="2xx",target="UP"} 4
pylon_upstream_attempts_total{backend="orders",result="error",target="DEAD"} 1
`
		exp := strings.NewReplacer("UP", f.up, "DEAD", f.dead).Replace(want)
		if err := testutil.GatherAndCompare(g, strings.NewReader(exp), "pylon_upstream_attempts_total"); err != nil {
			t.Error(err)
		}
	})
	t.Run("targets", func(t *testing.T) {
		exp := strings.NewReplacer("UP", f.up, "DEAD", f.dead).Replace(`
# HELP pylon_target_ejections_total Times outlier detection ejected the upstream target.
# TYPE pylon_target_ejections_total counter
pylon_target_ejections_total{backend="orders",target="DEAD"} 1
pylon_target_ejections_total{backend="orders",target="UP"} 0
# HELP pylon_target_healthy 1 when the upstream target is eligible for requests, 0 when health checks or outlier detection took it out.
# TYPE pylon_target_healthy gauge
pylon_target_healthy{backend="orders",target="DEAD"} 0
pylon_target_healthy{backend="orders",target="UP"} 1
# HELP pylon_target_in_flight_requests Requests outstanding on the upstream target.
# TYPE pylon_target_in_flight_requests gauge
pylon_target_in_flight_requests{backend="orders",target="DEAD"} 0
pylon_target_in_flight_requests{backend="orders",target="UP"} 0
`)
		if err := testutil.GatherAndCompare(g, strings.NewReader(exp),
			"pylon_target_healthy", "pylon_target_ejections_total", "pylon_target_in_flight_requests"); err != nil {
			t.Error(err)
		}
	})
	t.Run("rate limit and auth", func(t *testing.T) {
		const exp = `
# HELP pylon_auth_failures_total Requests refused by authentication or authorization.
# TYPE pylon_auth_failures_total counter
pylon_auth_failures_total{http_route="local",reason="expired"} 1
pylon_auth_failures_total{http_route="local",reason="other"} 1
# HELP pylon_ratelimit_decisions_total Rate limiter decisions.
# TYPE pylon_ratelimit_decisions_total counter
pylon_ratelimit_decisions_total{http_route="order",result="allowed"} 1
pylon_ratelimit_decisions_total{http_route="order",result="limited"} 1
`
		if err := testutil.GatherAndCompare(g, strings.NewReader(exp),
			"pylon_auth_failures_total", "pylon_ratelimit_decisions_total"); err != nil {
			t.Error(err)
		}
	})
	t.Run("in flight back to zero", func(t *testing.T) {
		if got := value(t, g, "http_server_active_requests", nil); got != 0 {
			t.Errorf("active = %v, want 0", got)
		}
	})
}

func value(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	m := find(t, g, name, labels)
	switch {
	case m == nil:
		return -1
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	default:
		return m.GetGauge().GetValue()
	}
}

func TestMetricsClientCanceledAndPanic(t *testing.T) {
	f := newFixture(t, observe.MetricsOptions{StatusCodes: true})
	f.gw.Route("GET /panic").Name("panic").Handler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		panic("boom")
	}))

	t.Run("canceled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		r := httptest.NewRequestWithContext(ctx, "GET", "/orders/7", nil)
		f.gw.ServeHTTP(httptest.NewRecorder(), r)
		labels := map[string]string{"http_route": "order", "http_request_method": "GET", "http_response_status_code": "499"}
		if got := histCount(t, f.reg, "http_server_request_duration_seconds", labels); got != 1 {
			t.Errorf("499 count = %d, want 1", got)
		}
	})
	t.Run("panic", func(t *testing.T) {
		func() {
			defer func() { _ = recover() }()
			f.gw.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/panic", nil))
		}()
		labels := map[string]string{"http_route": "panic", "http_request_method": "GET", "http_response_status_code": "500"}
		if got := histCount(t, f.reg, "http_server_request_duration_seconds", labels); got != 1 {
			t.Errorf("500 count = %d, want 1", got)
		}
		if got := value(t, f.reg, "http_server_active_requests", nil); got != 0 {
			t.Errorf("active = %v after a panic, want 0", got)
		}
	})
}

// TestMetricsCardinality sends 10,000 requests with distinct paths and
// subjects, routed, proxied and unmatched, and checks that they add no
// series: labels carry route names, never paths or subjects.
func TestMetricsCardinality(t *testing.T) {
	f := newFixture(t, observe.MetricsOptions{})
	f.gw.Route("GET /users/{id}").Name("user").Use(stage).Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(r.PathValue("id")))
	}))
	serve := func(i int) {
		path := []string{"/users/", "/orders/", "/nowhere/"}[i%3] + fmt.Sprint(i)
		r := httptest.NewRequest("GET", path, nil)
		r.Header.Set("X-Subject", fmt.Sprintf("user-%d", i))
		f.gw.ServeHTTP(httptest.NewRecorder(), r)
	}
	for i := range 3 {
		serve(i)
	}
	before := seriesCount(t, f.reg)
	for i := 3; i < 10_000; i++ {
		serve(i)
	}
	if after := seriesCount(t, f.reg); after != before {
		t.Errorf("series: %d after 10,000 distinct paths and subjects, %d before", after, before)
	}
	if got := histCount(t, f.reg, "http_server_request_duration_seconds", req("user", "GET", "2xx")); got != 3334 {
		t.Errorf("user count = %d, want 3334", got)
	}
}

func TestMetricsEvents(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := observe.NewMetrics(reg, observe.MetricsOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m.BreakerStateChange("payments", "closed", "open")
	m.BreakerStateChange("payments", "open", "half-open")
	m.BreakerStateChange("payments", "half-open", "open")
	m.AggregateCall("summary", "order", "ok")
	m.AggregateCall("summary", "payment", "timeout")
	m.AggregateCall("summary", "payment", "timeout")
	const exp = `
# HELP pylon_aggregate_calls_total Aggregation calls by outcome.
# TYPE pylon_aggregate_calls_total counter
pylon_aggregate_calls_total{call="order",http_route="summary",outcome="ok"} 1
pylon_aggregate_calls_total{call="payment",http_route="summary",outcome="timeout"} 2
# HELP pylon_breaker_state 1 for the circuit breaker's current state, 0 for the others.
# TYPE pylon_breaker_state gauge
pylon_breaker_state{breaker="payments",state="closed"} 0
pylon_breaker_state{breaker="payments",state="half-open"} 0
pylon_breaker_state{breaker="payments",state="open"} 1
# HELP pylon_breaker_transitions_total Circuit breaker state changes.
# TYPE pylon_breaker_transitions_total counter
pylon_breaker_transitions_total{breaker="payments",from="closed",to="open"} 1
pylon_breaker_transitions_total{breaker="payments",from="half-open",to="open"} 1
pylon_breaker_transitions_total{breaker="payments",from="open",to="half-open"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(exp),
		"pylon_aggregate_calls_total", "pylon_breaker_state", "pylon_breaker_transitions_total"); err != nil {
		t.Error(err)
	}
}

func TestNewMetricsTwiceFails(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := observe.NewMetrics(reg, observe.MetricsOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err := observe.NewMetrics(reg, observe.MetricsOptions{})
	if !errors.Is(err, observe.ErrRegister) {
		t.Fatalf("second NewMetrics: %v, want ErrRegister", err)
	}
}

func TestMetricsHandler(t *testing.T) {
	f := newFixture(t, observe.MetricsOptions{})
	f.gw.Handle("GET /metrics", f.m.Handler())
	f.do(t, "GET", "/local", nil, "")
	res, err := f.srv.Client().Get(f.srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	want := `http_server_request_duration_seconds_count{http_request_method="GET",http_response_status_class="2xx",http_route="local"} 1`
	if !strings.Contains(string(body), want) {
		t.Errorf("/metrics lacks %s", want)
	}
}

func TestSeriesFollowSetTargets(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := observe.NewMetrics(reg, observe.MetricsOptions{})
	if err != nil {
		t.Fatal(err)
	}
	a, b := upstream(t).URL, upstream(t).URL
	be := newBackend(t, "orders", m, pylon.BackendOptions{Targets: []string{a, b}})
	m.WatchBackends(be)
	gw := pylon.New(pylon.Options{})
	gw.Route("GET /").To(be)
	for range 2 { // round robin: one attempt each
		gw.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	}
	count := func(name, target string) int {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
			for _, mt := range mf.GetMetric() {
				for _, lp := range mt.GetLabel() {
					if lp.GetName() == "target" && lp.GetValue() == target {
						n++
					}
				}
			}
		}
		return n
	}
	for _, name := range []string{"pylon_upstream_attempts_total", "pylon_target_healthy"} {
		if count(name, a) != 1 || count(name, b) != 1 {
			t.Fatalf("%s: want one series per target", name)
		}
	}
	if err := be.SetTargets([]pylon.Endpoint{{URL: b}}); err != nil {
		t.Fatal(err)
	}
	_ = count("pylon_target_healthy", a) // a scrape prunes; the next one shows it
	for _, name := range []string{"pylon_upstream_attempts_total", "pylon_target_healthy"} {
		if count(name, a) != 0 {
			t.Errorf("%s: the removed target still has series", name)
		}
		if count(name, b) != 1 {
			t.Errorf("%s: the kept target lost its series", name)
		}
	}
}

func TestNewMetricsTypedNilRegistry(t *testing.T) {
	var reg *prometheus.Registry
	m, err := observe.NewMetrics(reg, observe.MetricsOptions{})
	if !errors.Is(err, observe.ErrNilRegistry) || m != nil {
		t.Fatalf("NewMetrics((*Registry)(nil)) = %v, %v; want nil, ErrNilRegistry", m, err)
	}
}
