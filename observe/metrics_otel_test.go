package observe_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/breaker"
	"github.com/pylon-gateway/pylon/observe"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

func collect(t *testing.T, r *sdkmetric.ManualReader) map[string]metricdata.Metrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Error(err)
	}
	out := map[string]metricdata.Metrics{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			out[m.Name] = m
		}
	}
	return out
}

func attrs(kv ...attribute.KeyValue) attribute.Set { return attribute.NewSet(kv...) }

// histPoint returns the count of the histogram point with exactly attrs,
// or -1 when there is none.
func histPoint(t *testing.T, m metricdata.Metrics, want attribute.Set) int {
	t.Helper()
	h, ok := m.Data.(metricdata.Histogram[float64])
	if !ok {
		t.Fatalf("%s: %T, want a float64 histogram", m.Name, m.Data)
	}
	for _, p := range h.DataPoints {
		if p.Attributes.Equals(&want) {
			return int(p.Count)
		}
	}
	t.Errorf("%s: no point with %v", m.Name, want.ToSlice())
	return -1
}

// sumPoint returns the value of the sum or gauge point with exactly attrs.
func sumPoint(t *testing.T, m metricdata.Metrics, want attribute.Set) float64 {
	t.Helper()
	switch d := m.Data.(type) {
	case metricdata.Sum[int64]:
		for _, p := range d.DataPoints {
			if p.Attributes.Equals(&want) {
				return float64(p.Value)
			}
		}
	case metricdata.Gauge[int64]:
		for _, p := range d.DataPoints {
			if p.Attributes.Equals(&want) {
				return float64(p.Value)
			}
		}
	case metricdata.Gauge[float64]:
		for _, p := range d.DataPoints {
			if p.Attributes.Equals(&want) {
				return p.Value
			}
		}
	default:
		t.Fatalf("%s: unexpected %T", m.Name, m.Data)
	}
	t.Errorf("%s: no point with %v", m.Name, want.ToSlice())
	return -1
}

// TestOTelMetricsThroughGateway checks that one request through a Gateway
// records the OpenTelemetry instruments with the names, units and
// attributes documented on NewOTelMetrics.
func TestOTelMetricsThroughGateway(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	m, err := observe.NewOTelMetrics(mp, observe.MetricsOptions{ConstLabels: map[string]string{"gateway": "edge"}})
	if err != nil {
		t.Fatal(err)
	}
	gwAttr := attribute.String("gateway", "edge")

	activeDuring := -1.0
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		activeDuring = sumPoint(t, collect(t, reader)["http.server.active_requests"], attrs(gwAttr))
		_, _ = w.Write([]byte("ok"))
	}))
	t.Cleanup(up.Close)

	guard := breaker.MustPerBackend(breaker.Settings{Name: "orders"})
	m.WatchBreaker(guard)
	orders := newBackend(t, "orders", m, pylon.BackendOptions{Targets: []string{up.URL}, Guard: guard})
	gw := pylon.New(pylon.Options{})
	gw.Use(m.Middleware)
	gw.Route("GET /orders/{id}").Name("order").To(orders)
	if err := gw.Err(); err != nil {
		t.Fatal(err)
	}
	m.WatchGateway(gw)

	rec := httptest.NewRecorder()
	gw.ServeHTTP(rec, httptest.NewRequest("GET", "/orders/7", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d", rec.Code)
	}
	if activeDuring != 1 {
		t.Errorf("http.server.active_requests during the request = %v, want 1", activeDuring)
	}

	got := collect(t, reader)
	units := map[string]string{
		"http.server.request.duration":    "s",
		"http.server.request.body.size":   "By",
		"http.server.response.body.size":  "By",
		"http.server.active_requests":     "{request}",
		"pylon.gateway.duration":          "s",
		"pylon.upstream.duration":         "s",
		"pylon.upstream.retries":          "{retry}",
		"pylon.upstream.attempts":         "{attempt}",
		"pylon.breaker.state":             "1",
		"pylon.breaker.transitions":       "{transition}",
		"pylon.target.healthy":            "1",
		"pylon.target.ejections":          "{ejection}",
		"pylon.target.in_flight_requests": "{request}",
	}
	for name, unit := range units {
		if g, ok := got[name]; !ok {
			t.Errorf("no %s", name)
		} else if g.Unit != unit {
			t.Errorf("%s: unit %q, want %q", name, g.Unit, unit)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	reqAttrs := attrs(gwAttr, attribute.String("http.route", "order"), attribute.String("http.request.method", "GET"),
		attribute.String("http.response.status_class", "2xx"))
	if n := histPoint(t, got["http.server.request.duration"], reqAttrs); n != 1 {
		t.Errorf("request duration count = %d, want 1", n)
	}
	if n := histPoint(t, got["http.server.response.body.size"], reqAttrs); n != 1 {
		t.Errorf("response size count = %d, want 1", n)
	}
	if n := histPoint(t, got["pylon.gateway.duration"], attrs(gwAttr, attribute.String("http.route", "order"))); n != 1 {
		t.Errorf("gateway duration count = %d, want 1", n)
	}
	if n := histPoint(t, got["pylon.upstream.duration"], attrs(gwAttr, attribute.String("http.route", "order"), attribute.String("backend", "orders"))); n != 1 {
		t.Errorf("upstream duration count = %d, want 1", n)
	}
	if v := sumPoint(t, got["http.server.active_requests"], attrs(gwAttr)); v != 0 {
		t.Errorf("active requests after = %v, want 0", v)
	}
	if v := sumPoint(t, got["pylon.upstream.retries"], attrs(gwAttr, attribute.String("backend", "orders"))); v != 0 {
		t.Errorf("retries = %v, want 0", v)
	}
	target := attrs(gwAttr, attribute.String("backend", "orders"), attribute.String("target", up.URL))
	if v := sumPoint(t, got["pylon.upstream.attempts"], attrs(gwAttr, attribute.String("backend", "orders"),
		attribute.String("target", up.URL), attribute.String("result", "2xx"))); v != 1 {
		t.Errorf("attempts = %v, want 1", v)
	}
	if v := sumPoint(t, got["pylon.target.healthy"], target); v != 1 {
		t.Errorf("target healthy = %v, want 1", v)
	}
	if v := sumPoint(t, got["pylon.target.in_flight_requests"], target); v != 0 {
		t.Errorf("target in flight = %v, want 0", v)
	}
	for state, want := range map[string]float64{"closed": 1, "half-open": 0, "open": 0} {
		if v := sumPoint(t, got["pylon.breaker.state"], attrs(gwAttr, attribute.String("breaker", "orders"), attribute.String("state", state))); v != want {
			t.Errorf("breaker state %s = %v, want %v", state, v, want)
		}
	}
	if v := sumPoint(t, got["pylon.breaker.transitions"], attrs(gwAttr, attribute.String("breaker", "orders"),
		attribute.String("from", "closed"), attribute.String("to", "open"))); v != 0 {
		t.Errorf("transitions = %v, want 0", v)
	}

	// A change of state moves the gauge and counts the transition.
	m.BreakerStateChange("orders", "closed", "open")
	got = collect(t, reader)
	if v := sumPoint(t, got["pylon.breaker.state"], attrs(gwAttr, attribute.String("breaker", "orders"), attribute.String("state", "open"))); v != 1 {
		t.Errorf("open = %v, want 1", v)
	}
	if v := sumPoint(t, got["pylon.breaker.transitions"], attrs(gwAttr, attribute.String("breaker", "orders"),
		attribute.String("from", "closed"), attribute.String("to", "open"))); v != 1 {
		t.Errorf("transitions = %v, want 1", v)
	}
}

// TestOTelMetricsStatusCodes checks that with StatusCodes the status is the
// integer attribute http.response.status_code, and that Handler answers
// 404.
func TestOTelMetricsStatusCodes(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	m, err := observe.NewOTelMetrics(mp, observe.MetricsOptions{StatusCodes: true})
	if err != nil {
		t.Fatal(err)
	}
	gw := pylon.New(pylon.Options{})
	gw.Use(m.Middleware)
	gw.Handle("GET /metrics", m.Handler())
	rec := httptest.NewRecorder()
	gw.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("Handler: %d, want 404", rec.Code)
	}
	got := collect(t, reader)
	h := got["http.server.request.duration"].Data.(metricdata.Histogram[float64])
	if len(h.DataPoints) != 1 {
		t.Fatalf("points: %v", h.DataPoints)
	}
	p := h.DataPoints[0]
	if v, ok := p.Attributes.Value("http.response.status_code"); !ok || v.Type() != attribute.INT64 || v.AsInt64() != 404 {
		t.Errorf("attributes %v, want the int http.response.status_code 404", p.Attributes.ToSlice())
	}
}
