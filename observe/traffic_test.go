package observe_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/observe"
	"github.com/pylon-gateway/pylon/traffic"
)

func TestMetricsSplitAndMirror(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := observe.NewMetrics(reg, observe.MetricsOptions{})
	if err != nil {
		t.Fatal(err)
	}
	say := func(s string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, s) })
	}
	split := traffic.MustSplit(traffic.SplitOptions{Key: pylon.HashHeader("X-User")},
		traffic.Side{Name: "stable", Handler: say("stable"), Weight: 1},
		traffic.Side{Name: "canary", Handler: say("canary"), Weight: 1})
	mirror, err := traffic.NewMirror(say("shadow"), traffic.MirrorOptions{MaxBodyBytes: 4})
	if err != nil {
		t.Fatal(err)
	}
	m.WatchMirror("orders-shadow", mirror)

	gw := pylon.New(pylon.Options{})
	gw.Use(m.Middleware)
	gw.Route("POST /orders").Name("orders").Use(mirror.Middleware).Handler(split)
	sides := map[string]int{}
	for i, body := range []string{"a", "b", "c", "too large"} {
		r := httptest.NewRequest("POST", "/orders", strings.NewReader(body))
		r.Header.Set("X-User", string(rune('a'+i)))
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, r)
		sides[w.Body.String()]++
	}
	mirror.Close()
	exp := `
# HELP pylon_mirror_requests_total Sampled requests of each traffic mirror by result: mirrored, dropped (shadow saturated), too_large (body over the limit) or incomplete (body not read whole by the primary).
# TYPE pylon_mirror_requests_total counter
pylon_mirror_requests_total{mirror="orders-shadow",result="dropped"} 0
pylon_mirror_requests_total{mirror="orders-shadow",result="incomplete"} 0
pylon_mirror_requests_total{mirror="orders-shadow",result="mirrored"} 3
pylon_mirror_requests_total{mirror="orders-shadow",result="too_large"} 1
# HELP pylon_split_requests_total Requests served by each side of a traffic split (RequestInfo.Split).
# TYPE pylon_split_requests_total counter
`
	for _, side := range []string{"canary", "stable"} {
		if n := sides[side]; n > 0 {
			exp += `pylon_split_requests_total{http_route="orders",side="` + side + `"} ` + string(rune('0'+n)) + "\n"
		}
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(exp), "pylon_mirror_requests_total", "pylon_split_requests_total"); err != nil {
		t.Error(err)
	}
}
