package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// clock is the rate limiter's clock in tests: it stands still until moved,
// so every budget is exact.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Now().UnixNano())
	return c
}

func (c *clock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// harness is a running example and a client for it.
type harness struct {
	t     *testing.T
	a     *app
	clock *clock
	http  *http.Client
}

// start builds the example on a free loopback port, serves it, and stops it
// (checking that it drained cleanly) when the test ends.
func start(t *testing.T, cfg config) *harness {
	t.Helper()
	h := &harness{t: t, clock: newClock()}
	cfg.Addr = "127.0.0.1:0"
	cfg.Now = h.clock.now
	a, err := build(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.a = a
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- a.run(ctx) }()
	transport := &http.Transport{}
	h.http = &http.Client{Transport: transport, Timeout: 10 * time.Second}
	t.Cleanup(func() {
		transport.CloseIdleConnections()
		cancel()
		if err := <-served; err != nil {
			t.Errorf("run: %v", err)
		}
		a.Close()
	})
	return h
}

// get sends GET path with token (none when empty) and reads the answer.
func (h *harness) get(path, token string) answer {
	h.t.Helper()
	as, err := step{path: path}.do(h.http, h.a.URL, token)
	if err != nil {
		h.t.Fatal(err)
	}
	return as[0]
}

// problem decodes a problem+json answer.
func (h *harness) problem(a answer) map[string]any {
	h.t.Helper()
	if ct := a.header.Get("Content-Type"); ct != "application/problem+json" {
		h.t.Fatalf("Content-Type %q, want application/problem+json; body %s", ct, a.body)
	}
	var p map[string]any
	if err := json.Unmarshal([]byte(a.body), &p); err != nil {
		h.t.Fatalf("problem body %q: %v", a.body, err)
	}
	if p["status"] != float64(a.status) {
		h.t.Errorf("problem status %v, response status %d", p["status"], a.status)
	}
	if p["request_id"] == nil || p["request_id"] != a.header.Get("X-Request-Id") {
		h.t.Errorf("problem request_id %v, X-Request-Id %q", p["request_id"], a.header.Get("X-Request-Id"))
	}
	return p
}

func TestAuth(t *testing.T) {
	h := start(t, config{})
	for _, tc := range []struct {
		name     string
		token    string
		status   int
		www      string // WWW-Authenticate
		contains string // body
	}{
		{"no token", "", 401, `Bearer realm="api"`, ""},
		{"garbage token", "not.a.token", 401, `Bearer realm="api", error="invalid_token"`, ""},
		{"token signed by someone else", strings.ToUpper(h.a.Token), 401, `Bearer realm="api", error="invalid_token"`, ""},
		{"valid token without the scope", h.a.NoScopeToken, 403, `Bearer realm="api", error="insufficient_scope"`, ""},
		{"valid token with the scope", h.a.Token, 200, "", `"name":"Brass desk lamp"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := h.get("/api/products/p1", tc.token)
			if a.status != tc.status {
				t.Fatalf("status %d, want %d; body %s", a.status, tc.status, a.body)
			}
			if got := a.header.Get("WWW-Authenticate"); got != tc.www {
				t.Errorf("WWW-Authenticate %q, want %q", got, tc.www)
			}
			if tc.status >= 400 {
				h.problem(a)
				if strings.Contains(a.body, "jwtauth") || strings.Contains(a.body, "scope") {
					t.Errorf("problem tells why: %s", a.body)
				}
			} else if !strings.Contains(a.body, tc.contains) {
				t.Errorf("body %s, want it to contain %s", a.body, tc.contains)
			}
		})
	}
}

// summary is the answer of GET /api/orders/{id}/summary.
type summary struct {
	Order    map[string]any    `json:"order"`
	Products []product         `json:"products"`
	Payment  *payment          `json:"payment"`
	Errors   map[string]string `json:"_errors"`
}

func (h *harness) summary(id string) (answer, summary) {
	h.t.Helper()
	a := h.get("/api/orders/"+id+"/summary", h.a.Token)
	var s summary
	if a.status == 200 {
		if err := json.Unmarshal([]byte(a.body), &s); err != nil {
			h.t.Fatalf("summary %s: %v", a.body, err)
		}
	}
	return a, s
}

func TestSummary(t *testing.T) {
	h := start(t, config{})
	t.Run("merges the three services", func(t *testing.T) {
		a, s := h.summary("o1")
		if a.status != 200 {
			t.Fatalf("status %d: %s", a.status, a.body)
		}
		if p := a.header.Get("Pylon-Partial"); p != "" {
			t.Errorf("Pylon-Partial %q on a complete answer", p)
		}
		if s.Order["id"] != "o1" || s.Order["status"] != "shipped" {
			t.Errorf("order %v", s.Order)
		}
		if _, ok := s.Order["product_ids"]; ok {
			t.Errorf("order keeps product_ids, meant for the products call only: %v", s.Order)
		}
		if len(s.Products) != 2 || s.Products[0] != catalog["p1"] || s.Products[1] != catalog["p3"] {
			t.Errorf("products %+v, want p1 and p3", s.Products)
		}
		if s.Payment == nil || *s.Payment != ledger["o1"] {
			t.Errorf("payment %+v, want %+v", s.Payment, ledger["o1"])
		}
		if s.Errors != nil {
			t.Errorf("_errors %v on a complete answer", s.Errors)
		}
	})
	t.Run("unknown order is 404", func(t *testing.T) {
		a, _ := h.summary("o404")
		if a.status != 404 {
			t.Fatalf("status %d, want 404: %s", a.status, a.body)
		}
		h.problem(a)
	})
}

func TestBreaker(t *testing.T) {
	h := start(t, config{})
	for i := range breakerFailures {
		if a := h.get("/api/payments/"+brokenOrder, h.a.Token); a.status != 500 {
			t.Fatalf("failure %d: status %d, want the service's 500", i+1, a.status)
		}
	}
	for _, path := range []string{"/api/payments/" + brokenOrder, "/api/payments/o1"} {
		t.Run("open: "+path, func(t *testing.T) {
			a := h.get(path, h.a.Token)
			if a.status != 503 {
				t.Fatalf("status %d, want 503: %s", a.status, a.body)
			}
			secs, err := strconv.Atoi(a.header.Get("Retry-After"))
			if err != nil || secs < 1 || secs > int(breakerOpen/time.Second) {
				t.Errorf("Retry-After %q, want 1 to %d seconds", a.header.Get("Retry-After"), int(breakerOpen/time.Second))
			}
			h.problem(a)
			if strings.Contains(a.body, "127.0.0.1") || strings.Contains(a.body, "breaker") {
				t.Errorf("problem leaks internals: %s", a.body)
			}
		})
	}
	t.Run("summary is partial", func(t *testing.T) {
		a, s := h.summary("o1")
		if a.status != 200 {
			t.Fatalf("status %d: %s", a.status, a.body)
		}
		if p := a.header.Get("Pylon-Partial"); p != "payment" {
			t.Errorf("Pylon-Partial %q, want payment", p)
		}
		if s.Payment != nil || s.Errors["payment"] != "unavailable" || s.Order["id"] != "o1" || len(s.Products) != 2 {
			t.Errorf("summary %s, want order and products, payment unavailable", a.body)
		}
	})
	t.Run("other services unaffected", func(t *testing.T) {
		if a := h.get("/api/orders/o2", h.a.Token); a.status != 200 {
			t.Errorf("orders: status %d", a.status)
		}
		if a := h.get("/readyz", ""); a.status != 200 {
			t.Errorf("readyz: status %d (payments is not critical): %s", a.status, a.body)
		}
	})
}

func TestRateLimit(t *testing.T) {
	h := start(t, config{})
	for i := range rateBurst {
		a := h.get("/api/products/p1", h.a.Token)
		want := fmt.Sprintf("%s;r=%d;t=1", policy, rateBurst-1-i)
		if a.status != 200 || a.header.Get("RateLimit") != want {
			t.Fatalf("request %d: %d RateLimit %q, want 200 %q", i+1, a.status, a.header.Get("RateLimit"), want)
		}
	}
	a := h.get("/api/products/p1", h.a.Token)
	if a.status != 429 {
		t.Fatalf("over the burst: status %d, want 429", a.status)
	}
	for name, want := range map[string]string{
		"Retry-After":      "1",
		"RateLimit":        policy + ";r=0;t=1",
		"RateLimit-Policy": policy + ";q=5;w=1",
	} {
		if got := a.header.Get(name); got != want {
			t.Errorf("%s %q, want %q", name, got, want)
		}
	}
	h.problem(a)

	if a := h.get("/api/products/p2", h.a.Token); a.status != 429 {
		t.Errorf("another product, same route: status %d, want 429", a.status)
	}
	if a := h.get("/api/orders/o1", h.a.Token); a.status != 200 {
		t.Errorf("another route: status %d, want 200 (a budget per route)", a.status)
	}
	h.clock.advance(time.Second / ratePerSecond)
	if a := h.get("/api/products/p1", h.a.Token); a.status != 200 {
		t.Errorf("a fifth of a second later: status %d, want 200", a.status)
	}
	if a := h.get("/api/products/p1", h.a.Token); a.status != 429 {
		t.Errorf("and then: status %d, want 429", a.status)
	}
}

func TestProbes(t *testing.T) {
	h := start(t, config{})
	t.Run("healthz", func(t *testing.T) {
		a := h.get("/healthz", "")
		if a.status != 200 || strings.TrimSpace(a.body) != `{"status":"alive"}` {
			t.Errorf("%d %s", a.status, a.body)
		}
	})
	t.Run("readyz", func(t *testing.T) {
		a := h.get("/readyz", "")
		want := `{"status":"ready","backends":[` +
			`{"name":"products","healthy":1,"targets":1,"critical":true},` +
			`{"name":"orders","healthy":1,"targets":1,"critical":true},` +
			`{"name":"payments","healthy":1,"targets":1}]}`
		if a.status != 200 || strings.TrimSpace(a.body) != want {
			t.Errorf("%d %s\nwant 200 %s", a.status, a.body, want)
		}
	})
}

func TestMetrics(t *testing.T) {
	h := start(t, config{})
	// Scripted traffic.
	h.get("/api/products/p1", "")               // 401 missing_token
	h.get("/api/products/p1", h.a.NoScopeToken) // 403 insufficient_scope
	for range rateBurst + 1 {                   // 5 allowed, 1 limited
		h.get("/api/products/p1", h.a.Token)
	}
	h.summary("o1")             // order, products, payment ok
	for range breakerFailures { // 3 × 500: the breaker opens
		h.get("/api/payments/"+brokenOrder, h.a.Token)
	}
	h.get("/api/payments/o1", h.a.Token) // 503, refused
	h.summary("o1")                      // payment refused: partial
	h.get("/nowhere", "")                // 404 unmatched

	a := h.get("/metrics", "")
	if a.status != 200 {
		t.Fatalf("metrics: status %d", a.status)
	}
	lines := map[string]bool{}
	for l := range strings.SplitSeq(a.body, "\n") {
		lines[l] = true
	}
	pay, prod := h.a.PaymentsURL, h.a.ProductsURL
	for _, want := range []string{
		`http_server_request_duration_seconds_count{http_request_method="GET",http_response_status_class="2xx",http_route="product"} 5`,
		`http_server_request_duration_seconds_count{http_request_method="GET",http_response_status_class="4xx",http_route="product"} 3`,
		`http_server_request_duration_seconds_count{http_request_method="GET",http_response_status_class="5xx",http_route="payment"} 4`,
		`http_server_request_duration_seconds_count{http_request_method="GET",http_response_status_class="2xx",http_route="order-summary"} 2`,
		`http_server_request_duration_seconds_count{http_request_method="GET",http_response_status_class="4xx",http_route="unmatched"} 1`,
		`http_server_active_requests 1`, // this scrape
		`pylon_auth_failures_total{http_route="product",reason="missing_token"} 1`,
		`pylon_auth_failures_total{http_route="product",reason="insufficient_scope"} 1`,
		`pylon_ratelimit_decisions_total{http_route="product",result="allowed"} 5`,
		`pylon_ratelimit_decisions_total{http_route="product",result="limited"} 1`,
		`pylon_ratelimit_decisions_total{http_route="payment",result="allowed"} 4`,
		`pylon_aggregate_calls_total{call="order",http_route="order-summary",outcome="ok"} 2`,
		`pylon_aggregate_calls_total{call="products",http_route="order-summary",outcome="ok"} 2`,
		`pylon_aggregate_calls_total{call="payment",http_route="order-summary",outcome="ok"} 1`,
		`pylon_aggregate_calls_total{call="payment",http_route="order-summary",outcome="error"} 1`,
		`pylon_breaker_transitions_total{breaker="payments ` + pay + `",from="closed",to="open"} 1`,
		`pylon_breaker_state{breaker="payments ` + pay + `",state="open"} 1`,
		`pylon_breaker_state{breaker="payments ` + pay + `",state="closed"} 0`,
		`pylon_upstream_attempts_total{backend="payments",result="2xx",target="` + pay + `"} 1`,
		`pylon_upstream_attempts_total{backend="payments",result="5xx",target="` + pay + `"} 3`,
		`pylon_upstream_attempts_total{backend="products",result="2xx",target="` + prod + `"} 7`,
		`pylon_target_healthy{backend="payments",target="` + pay + `"} 1`,
		`pylon_target_healthy{backend="products",target="` + prod + `"} 1`,
	} {
		if !lines[want] {
			t.Errorf("no line %s", want)
		}
	}
	if t.Failed() {
		t.Logf("scrape:\n%s", grepPylon(a.body))
	}
	for _, leak := range []string{"alice", "/api/products/p1", brokenOrder} {
		if strings.Contains(a.body, leak) {
			t.Errorf("metrics carry a subject or a path: %q", leak)
		}
	}
}

func grepPylon(body string) string {
	var b strings.Builder
	for l := range strings.SplitSeq(body, "\n") {
		if strings.HasPrefix(l, "pylon_") || strings.HasPrefix(l, "http_server_request_duration_seconds_count") || strings.HasPrefix(l, "http_server_active") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// lineWriter hands each write (one log record) to a channel.
type lineWriter chan string

func (w lineWriter) Write(p []byte) (int, error) {
	w <- string(p)
	return len(p), nil
}

func TestAccessLog(t *testing.T) {
	lines := make(lineWriter, 16)
	h := start(t, config{AccessLog: lines, JSONLog: true})
	h.get("/healthz", "") // not logged
	a := h.get("/api/products/p1", h.a.Token)
	var line map[string]any
	select {
	case l := <-lines:
		if err := json.Unmarshal([]byte(l), &line); err != nil {
			t.Fatalf("access log line %q: %v", l, err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no access log line")
	}
	for k, want := range map[string]any{
		"msg":             "request",
		"path":            "/api/products/p1",
		"route":           "product",
		"status":          float64(200),
		"backend":         "products",
		"upstream_status": float64(200),
		"subject":         "alice",
		"client_ip":       "127.0.0.1",
		"request_id":      a.header.Get("X-Request-Id"),
	} {
		if line[k] != want {
			t.Errorf("%s: %v, want %v", k, line[k], want)
		}
	}
	select {
	case l := <-lines:
		t.Errorf("another line: %s", l)
	default:
	}
}

// TestTour runs the steps printed for people, as -once does, against a
// gateway with a frozen rate-limit clock.
func TestTour(t *testing.T) {
	h := start(t, config{})
	var out bytes.Buffer
	if err := h.a.tour(&out); err != nil {
		t.Errorf("tour: %v\n%s", err, out.String())
	}
	for _, s := range steps() {
		if !strings.Contains(out.String(), "$ "+s.curl()+"\n") {
			t.Errorf("tour does not show %s", s.curl())
		}
	}
}

// syncBuffer is a bytes.Buffer safe for the logger's and the test's
// goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestRunOnce(t *testing.T) {
	var stdout, stderr syncBuffer
	code := run(context.Background(), []string{"-once", "-addr", "127.0.0.1:0", "-admin", "127.0.0.1:0"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit code %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	if !strings.Contains(stderr.String(), `msg="breaker: state change"`) || !strings.Contains(stderr.String(), "to=open") {
		t.Errorf("stderr does not log the breaker opening:\n%s", stderr.String())
	}
	if strings.Contains(stdout.String(), "msg=request") {
		t.Errorf("-once without -v prints the access log:\n%s", stdout.String())
	}
}

// signalWriter is a syncBuffer that closes seen once its content holds
// mark.
type signalWriter struct {
	syncBuffer
	mark string
	seen chan struct{}
	once sync.Once
}

func (w *signalWriter) Write(p []byte) (int, error) {
	n, err := w.syncBuffer.Write(p)
	if strings.Contains(w.String(), w.mark) {
		w.once.Do(func() { close(w.seen) })
	}
	return n, err
}

// TestRunServes runs the program as main does: it prints the intro, serves,
// and exits 0 once its context ends.
func TestRunServes(t *testing.T) {
	stdout := &signalWriter{mark: "Ctrl-C stops", seen: make(chan struct{})}
	var stderr syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	code := make(chan int, 1)
	go func() {
		code <- run(ctx, []string{"-addr", "127.0.0.1:0", "-admin", "127.0.0.1:0", "-log", "json"}, stdout, &stderr)
	}()
	select {
	case <-stdout.seen:
	case c := <-code:
		t.Fatalf("run returned %d before serving\n%s", c, stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{"export GW=http://127.0.0.1:", "export TOKEN=ey", "export TOKEN_NOSCOPE=ey"} {
		if !strings.Contains(out, want) {
			t.Errorf("intro lacks %q", want)
		}
	}
	for _, s := range steps() {
		if !strings.Contains(out, "\n"+s.curl()+"\n") {
			t.Errorf("intro lacks %s", s.curl())
		}
	}

	// The printed token works against the printed gateway.
	var gw, token string
	for l := range strings.SplitSeq(out, "\n") {
		if v, ok := strings.CutPrefix(l, "export GW="); ok {
			gw = v
		}
		if v, ok := strings.CutPrefix(l, "export TOKEN="); ok {
			token = v
		}
	}
	transport := &http.Transport{}
	client := &http.Client{Transport: transport}
	as, err := step{path: "/api/orders/o1"}.do(client, gw, token)
	transport.CloseIdleConnections()
	if err != nil || as[0].status != 200 {
		t.Errorf("GET /api/orders/o1 with the printed token: %v %v", as, err)
	}

	// The printed status page serves and shows that request.
	var status string
	for l := range strings.SplitSeq(out, "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "status" {
			status = f[1]
		}
	}
	if !strings.HasPrefix(status, "http://127.0.0.1:") {
		t.Fatalf("intro lacks the status page's URL:\n%s", out)
	}
	res, err := client.Get(status)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(res.Body)
	res.Body.Close()
	transport.CloseIdleConnections()
	if res.StatusCode != 200 || !strings.Contains(string(page), `data-route="order"`) || !strings.Contains(string(page), "payments") {
		t.Errorf("status page: %d\n%.500s", res.StatusCode, page)
	}

	cancel()
	if c := <-code; c != 0 {
		t.Errorf("exit code %d after Ctrl-C\n%s", c, stderr.String())
	}
}

func TestRunBadFlags(t *testing.T) {
	for _, args := range [][]string{{"-log", "xml"}, {"-nope"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			var stdout, stderr syncBuffer
			if code := run(context.Background(), args, &stdout, &stderr); code != 2 {
				t.Errorf("exit code %d, want 2", code)
			}
		})
	}
}
