package observe_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/observe"
	"github.com/pylon-gateway/pylon/overload"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// shedOne serves, through a Gateway, one request the limit admits and holds
// at the upstream, and one it sheds; then it calls scrape while the first
// is still in flight, and lets it finish.
func shedOne(t *testing.T, watch func(name string, l observe.LimitSource), scrape func()) {
	t.Helper()
	hold, arrived := make(chan struct{}), make(chan struct{}, 1)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		arrived <- struct{}{}
		<-hold
	}))
	defer upstream.Close()
	limit := overload.MustPerBackend(overload.Limits{Name: "shop", MaxInFlight: 1, CriticalShare: -1})
	watch("shop", limit)
	shop := pylon.MustNewBackend("shop", pylon.BackendOptions{Targets: []string{upstream.URL}, Guard: limit})
	defer shop.Close()
	gw := pylon.New(pylon.Options{})
	gw.Route("GET /products").To(shop)

	done := make(chan int)
	go func() {
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, httptest.NewRequest("GET", "/products", nil))
		done <- w.Code
	}()
	select {
	case <-arrived:
	case <-time.After(5 * time.Second):
		t.Fatal("first request did not reach the upstream")
	}
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, httptest.NewRequest("GET", "/products", nil))
	if w.Code != http.StatusServiceUnavailable {
		t.Errorf("second request: status %d, want 503", w.Code)
	}
	scrape()
	close(hold)
	if code := <-done; code != http.StatusOK {
		t.Errorf("first request: status %d, want 200", code)
	}
}

func TestWatchLimit(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := observe.NewMetrics(reg, observe.MetricsOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m.WatchLimit("ignored", nil)
	shedOne(t, m.WatchLimit, func() {
		exp := `
# HELP pylon_limit_admitted_total Requests admitted by the concurrency limit.
# TYPE pylon_limit_admitted_total counter
pylon_limit_admitted_total{limit="shop"} 1
# HELP pylon_limit_critical_shed_total Critical requests refused by the concurrency limit.
# TYPE pylon_limit_critical_shed_total counter
pylon_limit_critical_shed_total{limit="shop"} 0
# HELP pylon_limit_in_flight Requests admitted by the concurrency limit and not yet done (for a per-client limit: keys with requests in flight).
# TYPE pylon_limit_in_flight gauge
pylon_limit_in_flight{limit="shop"} 1
# HELP pylon_limit_limit Current concurrency limit (MaxInFlight, or the adaptive estimate).
# TYPE pylon_limit_limit gauge
pylon_limit_limit{limit="shop"} 1
# HELP pylon_limit_queued Requests waiting in the concurrency limit's queue.
# TYPE pylon_limit_queued gauge
pylon_limit_queued{limit="shop"} 0
# HELP pylon_limit_shed_total Requests refused by the concurrency limit.
# TYPE pylon_limit_shed_total counter
pylon_limit_shed_total{limit="shop"} 1
# HELP pylon_limit_waited_total Requests admitted by the concurrency limit after waiting in its queue.
# TYPE pylon_limit_waited_total counter
pylon_limit_waited_total{limit="shop"} 0
`
		if err := testutil.GatherAndCompare(reg, strings.NewReader(exp),
			"pylon_limit_admitted_total", "pylon_limit_critical_shed_total", "pylon_limit_in_flight",
			"pylon_limit_limit", "pylon_limit_queued", "pylon_limit_shed_total", "pylon_limit_waited_total"); err != nil {
			t.Error(err)
		}
	})
}

func TestOTelWatchLimit(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(t.Context())
	m, err := observe.NewOTelMetrics(mp, observe.MetricsOptions{})
	if err != nil {
		t.Fatal(err)
	}
	shedOne(t, m.WatchLimit, func() {
		got := collect(t, reader)
		shop := attrs(attribute.String("limit", "shop"))
		for name, want := range map[string]int64{
			"pylon.limit.in_flight": 1, "pylon.limit.queued": 0, "pylon.limit.limit": 1,
			"pylon.limit.admitted": 1, "pylon.limit.waited": 0, "pylon.limit.shed": 1, "pylon.limit.critical_shed": 0,
		} {
			var points []metricdata.DataPoint[int64]
			switch d := got[name].Data.(type) {
			case metricdata.Gauge[int64]:
				points = d.DataPoints
			case metricdata.Sum[int64]:
				if !d.IsMonotonic {
					t.Errorf("%s: not monotonic", name)
				}
				points = d.DataPoints
			default:
				t.Errorf("%s: data %T", name, got[name].Data)
				continue
			}
			found := false
			for _, p := range points {
				if p.Attributes.Equals(&shop) {
					found = true
					if p.Value != want {
						t.Errorf("%s = %d, want %d", name, p.Value, want)
					}
				}
			}
			if !found {
				t.Errorf("%s: no point for limit=shop", name)
			}
		}
	})
}

func TestWatchLimitSources(t *testing.T) {
	// Every overload limit with counters of its own is a LimitSource, and a
	// TargetLimit's per-target counters through a LimitFunc.
	tl := overload.MustPerTarget(overload.Limits{MaxInFlight: 3})
	for _, l := range []observe.LimitSource{
		overload.MustPerBackend(overload.Limits{MaxInFlight: 1}),
		overload.MustAdaptive(overload.AdaptiveOptions{}),
		overload.MustNewPerClient(overload.ClientOptions{MaxInFlight: 1}),
		observe.LimitFunc(func() overload.Stats { return tl.Stats(nil) }),
	} {
		reg := prometheus.NewRegistry()
		m, err := observe.NewMetrics(reg, observe.MetricsOptions{})
		if err != nil {
			t.Fatal(err)
		}
		m.WatchLimit("l", l)
		m.WatchLimit("l", l) // replaces, no duplicate series
		if n := testutil.CollectAndCount(reg, "pylon_limit_limit"); n != 1 {
			t.Errorf("%T: %d pylon_limit_limit series, want 1", l, n)
		}
	}
}
