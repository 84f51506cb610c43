package admin

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pylon-gateway/pylon"
)

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Unix(1_700_000_000, 0)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func record(s *Stats, c *clock, route string, status int, d time.Duration) {
	start := c.Now()
	s.Record("GET", &pylon.RequestInfo{Route: route}, status, start, start.Add(d))
}

func TestStatsBuckets(t *testing.T) {
	c := newClock()
	s := NewStats(StatsOptions{Window: 2 * time.Minute, Now: c.Now})
	// 120 buckets in 60 points of 2 seconds.
	for i := range 10 {
		record(s, c, "orders", 200, 10*time.Millisecond)
		if i%5 == 0 {
			record(s, c, "orders", 502, 30*time.Millisecond)
		}
		c.Advance(time.Second)
	}
	tr, ok := s.Route("orders")
	if !ok {
		t.Fatal("route not found")
	}
	if tr.Requests != 12 || tr.Errors != 2 {
		t.Fatalf("last minute: %d requests %d errors, want 12 and 2", tr.Requests, tr.Errors)
	}
	if want := 12.0 / 60; tr.Rate != want {
		t.Errorf("rate %v, want %v", tr.Rate, want)
	}
	if want := 2.0 / 12; tr.ErrorRate != want {
		t.Errorf("error rate %v, want %v", tr.ErrorRate, want)
	}
	if tr.MaxLatencyMs != 30 {
		t.Errorf("max latency %v ms, want 30", tr.MaxLatencyMs)
	}
	if tr.Series.StepSeconds != 2 || len(tr.Series.Requests) != 60 {
		t.Fatalf("series of %d points of %d s, want 60 of 2", len(tr.Series.Requests), tr.Series.StepSeconds)
	}
	sum := 0
	for _, v := range tr.Series.Requests {
		sum += v
	}
	// Points hold even-odd pairs of seconds; the last one (10, 11) is
	// under way and empty.
	if sum != 12 || tr.Series.Requests[59] != 0 || tr.Series.Requests[58] != 2 || tr.Series.Requests[56] != 3 {
		t.Errorf("series %v: sum %d, want 12, ending 3 2 2 0 (seconds 4-5 with an error)", tr.Series.Requests, sum)
	}

	// A minute later the last-minute figures are empty, the series not.
	c.Advance(time.Minute)
	tr, _ = s.Route("orders")
	if tr.Requests != 0 || tr.Rate != 0 {
		t.Errorf("a minute later: %d requests, want 0", tr.Requests)
	}
	sum = 0
	for _, v := range tr.Series.Requests {
		sum += v
	}
	if sum != 12 {
		t.Errorf("a minute later the series holds %d, want 12", sum)
	}
	// Past the window, the ring forgets; a new request reuses old buckets.
	c.Advance(2 * time.Minute)
	record(s, c, "orders", 200, time.Millisecond)
	tr, _ = s.Route("orders")
	sum = 0
	for _, v := range tr.Series.Requests {
		sum += v
	}
	if sum != 1 || tr.Requests != 1 {
		t.Errorf("past the window: series sum %d, last minute %d; want 1 and 1", sum, tr.Requests)
	}
}

// A target gone for a whole window (a rolling deploy, a discovery change)
// gives its place to a new one; targets still in use keep theirs.
func TestStatsTargetsMakeRoomForNewOnes(t *testing.T) {
	c := newClock()
	s := NewStats(StatsOptions{MaxTargets: 2, Window: 10 * time.Second, Now: c.Now})
	attempt := func(target string) {
		s.Record("GET", &pylon.RequestInfo{Route: "a", Backend: "b", Target: target, UpstreamDuration: time.Millisecond}, 200, c.Now(), c.Now())
	}
	attempt("http://old:1")
	attempt("http://kept:1")
	c.Advance(5 * time.Second)
	attempt("http://kept:1")
	attempt("http://new:1") // both still in the window: not tracked
	if _, ok := s.Target("b", "http://new:1"); ok {
		t.Fatal("a target past MaxTargets is tracked while every tracked one is in use")
	}
	c.Advance(6 * time.Second) // old's last attempt is out of the window, kept's is not
	attempt("http://new:1")
	if tr, ok := s.Target("b", "http://new:1"); !ok || tr.Requests != 1 {
		t.Fatalf("the new target is not tracked (%v, %+v)", ok, tr)
	}
	if _, ok := s.Target("b", "http://old:1"); ok {
		t.Error("the target gone for a window is still tracked")
	}
	if tr, ok := s.Target("b", "http://kept:1"); !ok || tr.Requests != 1 {
		t.Errorf("the target in use lost its place or its counts (%v, %+v)", ok, tr)
	}
}

func TestStatsBounded(t *testing.T) {
	c := newClock()
	s := NewStats(StatsOptions{MaxRoutes: 3, MaxTargets: 2, MaxErrors: 4, Now: c.Now})
	for _, r := range []string{"a", "b", "c", "d", "e", ""} {
		record(s, c, r, 200, 0)
	}
	if got := strings.Join(s.routeNames(), ","); got != "a,b,c,(other)" {
		t.Errorf("routes %s, want a,b,c,(other)", got)
	}
	if tr, _ := s.Route(RouteOther); tr.Requests != 3 {
		t.Errorf("(other) has %d requests, want 3 (d, e and the unmatched one)", tr.Requests)
	}
	for i, target := range []string{"http://x:1", "http://x:2", "http://x:3"} {
		s.Record("GET", &pylon.RequestInfo{Route: "a", Backend: "b", Target: target, UpstreamDuration: time.Duration(i+1) * time.Millisecond}, 200, c.Now(), c.Now())
	}
	if _, ok := s.Target("b", "http://x:3"); ok {
		t.Error("a target past MaxTargets is tracked")
	}
	if tr, ok := s.Target("b", "http://x:2"); !ok || tr.LatencyMs != 2 {
		t.Errorf("target latency %v ms (%v), want 2", tr.LatencyMs, ok)
	}
	for i := range 6 {
		s.Record("GET", &pylon.RequestInfo{Route: "a", RequestID: string(rune('0' + i))}, 500+i%4, c.Now(), c.Now())
	}
	errs := s.Errors()
	if len(errs) != 4 || errs[0].RequestID != "5" || errs[3].RequestID != "2" {
		t.Errorf("errors %+v, want the 4 newest, newest first", errs)
	}
}

func TestStatsMiddleware(t *testing.T) {
	c := newClock()
	s := NewStats(StatsOptions{Now: c.Now})
	gw := pylon.New(pylon.Options{})
	gw.Use(s.Middleware)
	gw.Route("GET /ok").Name("ok").Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pylon.Info(r.Context()).Cache = "hit"
		c.Advance(5 * time.Millisecond)
	}))
	gw.Route("GET /boom").Name("boom").Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info := pylon.Info(r.Context())
		info.Error = "dial tcp 10.1.2.3:8080: connect: connection refused; Authorization: Bearer abc.def"
		info.RequestID = "req-7"
		info.RateLimit = pylon.RateLimitInfo{Decided: true, Allowed: false}
		pylon.Error(w, r, http.StatusBadGateway, "Upstream failed.")
	}))
	if err := gw.Err(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/ok", "/ok", "/boom", "/nowhere"} {
		gw.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", p, nil))
	}
	ok, _ := s.Route("ok")
	if ok.Requests != 2 || ok.CacheHits != 2 || ok.LatencyMs != 5 {
		t.Errorf("ok: %+v, want 2 requests, 2 hits, 5 ms", ok)
	}
	boom, _ := s.Route("boom")
	if boom.Errors != 1 || boom.RateLimited != 1 {
		t.Errorf("boom: %+v, want 1 error, 1 limited", boom)
	}
	if un, _ := s.Route(RouteUnmatched); un.Requests != 1 {
		t.Errorf("unmatched: %d requests, want 1", un.Requests)
	}
	errs := s.Errors()
	if len(errs) != 1 {
		t.Fatalf("errors %+v, want one", errs)
	}
	e := errs[0]
	if e.Route != "boom" || e.Status != 502 || e.RequestID != "req-7" || e.Method != "GET" {
		t.Errorf("error %+v", e)
	}
	if strings.Contains(e.Reason, "10.1.2.3") || strings.Contains(e.Reason, "abc.def") || !strings.Contains(e.Reason, "connection refused") {
		t.Errorf("reason %q: want addresses and credentials redacted, the cause kept", e.Reason)
	}
}

func TestRedact(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"timeout", "timeout"},
		{`Get "http://10.0.0.5:8080/x?token=1": EOF`, `Get "[url] EOF`},
		{"dial tcp [::1]:9000: refused", "dial tcp [addr]: refused"},
		{"dial tcp orders.internal:8443: i/o timeout", "dial tcp [addr]: i/o timeout"},
		{"bad Bearer eyJhbGciOi.x.y here", "bad Bearer [redacted] here"},
		{"password=hunter2 secret: s3", "password=[redacted] secret: [redacted]"},
		{"access_token=abc&x=1", "access_token=[redacted]&x=1"},
		{"api_key=abc client_secret=def passwd=ghi", "api_key=[redacted] client_secret=[redacted] passwd=[redacted]"},
		{`{"password":"hunter2"}`, `{"password":"[redacted]"}`},
		{"got eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln back", "got [token] back"},
		{"dial admin:s3cret@db.internal:5432 failed", "dial [user]@[addr] failed"},
		{strings.Repeat("é", 100), strings.Repeat("é", 80) + "…"},
	}
	for _, tt := range tests {
		if got := Redact(tt.in); got != tt.want {
			t.Errorf("Redact(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
