package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/breaker"
	"github.com/pylon-gateway/pylon/cache"
	"github.com/pylon-gateway/pylon/ratelimit"
)

const secretToken = "s3cr3t-t0ken-value"

// fixture is a gateway with two backends, a cache, a breaker and a rate
// limit store, and a status page over them.
type fixture struct {
	gw       *pylon.Gateway
	orders   *pylon.Backend
	payments *pylon.Backend
	guard    *breaker.TargetGuard
	brk      *breaker.Breaker
	cache    *cache.Cache
	limits   *ratelimit.MemoryStore
	stats    *Stats
	clock    *clock
	logs     *bytes.Buffer
	h        *Handler
}

func newFixture(t *testing.T, auth Authorizer) *fixture {
	t.Helper()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=60")
		_, _ = io.WriteString(w, "ok "+r.URL.Path)
	}))
	t.Cleanup(up.Close)
	f := &fixture{clock: newClock(), logs: new(bytes.Buffer)}
	f.stats = NewStats(StatsOptions{Now: f.clock.Now})
	f.guard = breaker.MustPerTarget(breaker.Settings{Name: "payments", ConsecutiveFailures: 1, Logger: slog.New(slog.DiscardHandler)})
	f.orders = pylon.MustNewBackend("orders", pylon.BackendOptions{Targets: []string{up.URL, "http://127.0.0.1:1"}, Retries: 1})
	f.payments = pylon.MustNewBackend("payments", pylon.BackendOptions{Targets: []string{"http://127.0.0.1:2"}, Guard: f.guard,
		Outlier: pylon.OutlierDetection{ConsecutiveFailures: -1}})
	t.Cleanup(func() { f.orders.Close(); f.payments.Close() })
	f.brk = breaker.MustNew(breaker.Settings{Name: "search", ConsecutiveFailures: 1, Logger: slog.New(slog.DiscardHandler)})
	f.cache = cache.MustNew(cache.Options{})
	t.Cleanup(func() { f.cache.Close() })
	f.limits = ratelimit.NewMemoryStore(ratelimit.MemoryOptions{})

	f.gw = pylon.New(pylon.Options{})
	f.gw.Use(f.stats.Middleware)
	f.gw.Route("GET /orders/{id}").Name("orders").Header("X-Version", "2").Use(f.cache.Middleware).
		Timeout(2 * time.Second).To(f.orders)
	f.gw.Route("GET /pay/").Name("pay").To(f.payments)
	f.gw.Route("GET /search").Name("search").Use(f.brk.Middleware).Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
	}))
	if err := f.gw.Err(); err != nil {
		t.Fatal(err)
	}
	h, err := New(Options{
		Gateway:         f.gw,
		Stats:           f.stats,
		Guards:          map[string]pylon.Guard{"payments": f.guard},
		Breakers:        []*breaker.Breaker{f.brk},
		Caches:          map[string]*cache.Cache{"responses": f.cache},
		RateLimitStores: map[string]*ratelimit.MemoryStore{"per-subject": f.limits},
		Authorizer:      auth,
		Logger:          slog.New(slog.NewTextHandler(f.logs, nil)),
		Title:           "Shop",
		Now:             f.clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	f.h = h
	return f
}

// traffic sends a few requests through the gateway.
func (f *fixture) traffic(t *testing.T) {
	t.Helper()
	for _, p := range []string{"/orders/1", "/orders/1", "/pay/x", "/search", "/nowhere"} {
		r := httptest.NewRequest("GET", p, nil)
		r.Header.Set("X-Version", "2")
		r.Header.Set("Authorization", "Bearer "+secretToken)
		f.gw.ServeHTTP(httptest.NewRecorder(), r)
	}
}

// get serves a GET from a loopback peer.
func (f *fixture) get(path string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	f.h.ServeHTTP(rec, localRequest("GET", path, nil))
	return rec
}

// localRequest is a request that arrived on the loopback listener, for
// its loopback name (a page reached under another name is not local).
func localRequest(method, target string, body io.Reader) *http.Request {
	return httptest.NewRequest(method, "http://127.0.0.1:9901"+target, body).WithContext(loopbackCtx())
}

func loopbackCtx() context.Context {
	return context.WithValue(context.Background(), http.LocalAddrContextKey, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9901})
}

// post runs an action as a same-origin form post.
func (f *fixture) post(action string, form url.Values, edit ...func(*http.Request)) *httptest.ResponseRecorder {
	r := localRequest("POST", "/api/v1/actions/"+action, strings.NewReader(form.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.Header.Set("Sec-Fetch-Site", "same-origin")
	r.SetBasicAuth("alice", "pw")
	for _, e := range edit {
		e(r)
	}
	rec := httptest.NewRecorder()
	f.h.ServeHTTP(rec, r)
	return rec
}

func TestNewNeedsGateway(t *testing.T) {
	if _, err := New(Options{}); err == nil {
		t.Fatal("New without a Gateway: no error")
	}
}

func TestStatusJSON(t *testing.T) {
	f := newFixture(t, nil)
	f.traffic(t)
	rec := f.get("/api/v1/status")
	if rec.Code != 200 || rec.Header().Get("Content-Type") != "application/json" || rec.Header().Get("Cache-Control") != "no-store" {
		t.Fatalf("status %d, headers %v", rec.Code, rec.Header())
	}
	if strings.Contains(rec.Body.String(), secretToken) {
		t.Fatal("the status shows a request's token")
	}
	var st Status
	if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil {
		t.Fatal(err)
	}
	if st.Version != 1 || st.Title != "Shop" || st.ActionsEnabled || st.Draining || st.WindowSeconds != 300 {
		t.Errorf("header fields: %+v", st)
	}
	names := []string{}
	for _, r := range st.Routes {
		names = append(names, r.Name)
	}
	if got := strings.Join(names, ","); got != "orders,pay,search,(unmatched)" {
		t.Fatalf("routes %s", got)
	}
	o := st.Routes[0]
	if o.Pattern != "GET /orders/{id}" || len(o.Matchers) != 1 || o.Middleware != 1 || o.Target != "backend orders" || o.TimeoutMs != 2000 {
		t.Errorf("orders route: %+v", o)
	}
	if o.Traffic == nil || o.Traffic.Requests != 2 || o.Traffic.CacheHits != 1 || o.Traffic.CacheMisses != 1 {
		t.Errorf("orders traffic: %+v", o.Traffic)
	}
	if s := st.Routes[2].Traffic; s.Errors != 1 || s.ErrorRate != 1 {
		t.Errorf("search traffic: %+v", s)
	}
	if len(st.Backends) != 2 || st.Backends[0].Name != "orders" || len(st.Backends[0].Targets) != 2 {
		t.Fatalf("backends: %+v", st.Backends)
	}
	pay := st.Backends[1]
	if pay.Targets[0].Breaker != "open" || pay.Healthy != 1 {
		t.Errorf("payments: %+v, want its target's breaker open after one failure", pay)
	}
	if st.Breakers[0] != (BreakerStatus{Name: "search", State: "open"}) {
		t.Errorf("breakers: %+v", st.Breakers)
	}
	if c := st.Caches[0]; c.Name != "responses" || c.Entries != 1 || c.Bytes <= 0 || c.HitRatio != 0.5 {
		t.Errorf("caches: %+v", c)
	}
	if len(st.RateLimits) != 1 || st.RateLimits[0].Name != "per-subject" {
		t.Errorf("rate limits: %+v", st.RateLimits)
	}
	if len(st.Errors) != 2 || st.Errors[0].Route != "search" || st.Errors[1].Route != "pay" || st.Errors[1].Status != 502 {
		t.Errorf("errors: %+v", st.Errors)
	}
	for _, e := range st.Errors {
		if strings.Contains(e.Reason, "127.0.0.1") {
			t.Errorf("an error reason shows an upstream address: %q", e.Reason)
		}
	}
	// Lists are never null.
	empty := newFixture(t, nil)
	body := empty.get("/api/v1/status").Body.String()
	for _, k := range []string{`"errors": []`, `"actions": []`, `"matchers": []`} {
		if !strings.Contains(body, k) {
			t.Errorf("empty status lacks %s", k)
		}
	}
}

func TestPage(t *testing.T) {
	f := newFixture(t, nil)
	f.traffic(t)
	rec := f.get("/")
	body := rec.Body.String()
	if rec.Code != 200 || rec.Header().Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("page: %d %v", rec.Code, rec.Header())
	}
	for _, want := range []string{
		"<title>Shop status</title>",
		`<code>GET /orders/{id}</code>`, `<code>header X-Version=2</code>`, "backend orders",
		`data-target="http://127.0.0.1:1"`, `data-health="healthy"`,
		`<span class="badge bad">open</span>`, // the payments target's breaker
		`<svg class="spark"`, `aria-label="2 requests, 0 errors`,
		`data-cache="responses"`, "50.0 %",
		"per-subject",
		`<td class="n bad">502</td>`,
		`<noscript><meta http-equiv="refresh" content="2; url=./"></noscript>`,
		`<script src="static/admin.js" defer></script>`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %s", want)
		}
	}
	if strings.Contains(body, "<form") {
		t.Error("page without an Authorizer shows action forms")
	}
	if strings.Contains(body, secretToken) {
		t.Error("page shows a request's token")
	}
	if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
		t.Errorf("CSP %q", csp)
	}
	// Assets are embedded.
	for _, p := range []string{"/static/admin.js", "/static/admin.css"} {
		if rec := f.get(p); rec.Code != 200 || rec.Body.Len() == 0 {
			t.Errorf("%s: %d", p, rec.Code)
		}
	}
	if rec := f.get("/nope"); rec.Code != 404 || rec.Header().Get("Content-Type") != pylon.ProblemContentType {
		t.Errorf("unknown path: %d %s", rec.Code, rec.Header().Get("Content-Type"))
	}
	// Without Stats, the page still renders.
	h, err := New(Options{Gateway: f.gw})
	if err != nil {
		t.Fatal(err)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, localRequest("GET", "/", nil))
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), "no stats") {
		t.Errorf("page without Stats: %d", rec.Code)
	}
}

func TestPageShowsActionsWithAuthorizer(t *testing.T) {
	f := newFixture(t, BasicAuth("admin", map[string]string{"alice": "pw"}))
	f.traffic(t)
	body := f.get("/").Body.String()
	for _, want := range []string{
		`action="api/v1/actions/readiness"`, `action="api/v1/actions/drain"`,
		`action="api/v1/actions/reset"`, `action="api/v1/actions/purge"`,
		`<input type="hidden" name="return" value="page">`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %s", want)
		}
	}
}

func TestActionsRefusedWithoutAuthorizer(t *testing.T) {
	f := newFixture(t, nil)
	for _, a := range []string{"drain", "undrain", "readiness", "purge", "reset", "unknown"} {
		rec := f.post(a, url.Values{"backend": {"orders"}, "target": {f.orders.Targets()[0].String()}, "fail": {"true"}})
		if rec.Code != 403 || rec.Header().Get("Content-Type") != pylon.ProblemContentType {
			t.Errorf("%s: %d %s, want 403 problem", a, rec.Code, rec.Header().Get("Content-Type"))
		}
	}
	if f.orders.Targets()[0].Drained() || f.gw.Draining() {
		t.Fatal("a refused action ran")
	}
}

func TestActions(t *testing.T) {
	f := newFixture(t, BasicAuth("admin", map[string]string{"alice": "pw"}))
	f.traffic(t)
	t0 := f.orders.Targets()[0]
	pt := f.payments.Targets()[0]
	var res actionResult

	ok := func(t *testing.T, rec *httptest.ResponseRecorder) {
		t.Helper()
		if rec.Code != 200 {
			t.Fatalf("%d %s", rec.Code, rec.Body)
		}
		res = actionResult{}
		if err := json.Unmarshal(rec.Body.Bytes(), &res); err != nil || res.Result != "ok" {
			t.Fatalf("result %s (%v)", rec.Body, err)
		}
	}
	t.Run("drain", func(t *testing.T) {
		ok(t, f.post("drain", url.Values{"backend": {"orders"}, "target": {t0.String()}}))
		if !t0.Drained() {
			t.Fatal("not drained")
		}
		if !strings.Contains(f.get("/").Body.String(), `data-health="drained"`) {
			t.Error("page does not show the drained target")
		}
		ok(t, f.post("undrain", url.Values{"backend": {"orders"}, "target": {t0.String()}}))
		if t0.Drained() {
			t.Fatal("still drained")
		}
	})
	t.Run("readiness", func(t *testing.T) {
		ok(t, f.post("readiness", url.Values{"fail": {"true"}}))
		if !f.gw.Draining() || !f.h.Status().Draining {
			t.Fatal("readiness not failed")
		}
		ok(t, f.post("readiness", url.Values{"fail": {"false"}}))
		if f.gw.Draining() {
			t.Fatal("readiness still failed")
		}
	})
	t.Run("purge", func(t *testing.T) {
		if n := f.h.Status().Caches[0].Entries; n != 1 {
			t.Fatalf("%d entries before purging", n)
		}
		key := f.cache.Key(httptest.NewRequest("GET", "http://example.com/orders/1", nil))
		ok(t, f.post("purge", url.Values{"cache": {"responses"}, "key": {key}}))
		if n := f.h.Status().Caches[0].Entries; n != 0 {
			t.Fatalf("%d entries after purging %q", n, key)
		}
		f.traffic(t)
		ok(t, f.post("purge", url.Values{"cache": {"responses"}, "prefix": {"GET "}}))
		if n := f.h.Status().Caches[0].Entries; n != 0 || res.Purged == nil || *res.Purged == 0 {
			t.Fatalf("%d entries after purging the prefix, purged %v", n, res.Purged)
		}
	})
	t.Run("reset", func(t *testing.T) {
		if f.brk.State() != breaker.StateOpen || f.guard.State(pt) != breaker.StateOpen {
			t.Fatal("breakers not open before the test")
		}
		ok(t, f.post("reset", url.Values{"breaker": {"search"}}))
		if f.brk.State() != breaker.StateClosed {
			t.Fatal("breaker not reset")
		}
		ok(t, f.post("reset", url.Values{"backend": {"payments"}, "target": {pt.String()}}))
		if f.guard.State(pt) != breaker.StateClosed {
			t.Fatal("target breaker not reset")
		}
	})
	t.Run("back to the page", func(t *testing.T) {
		rec := f.post("readiness", url.Values{"fail": {"false"}, "return": {"page"}})
		if rec.Code != 303 || rec.Header().Get("Location") != "../../../" {
			t.Fatalf("%d Location %q, want 303 ../../../", rec.Code, rec.Header().Get("Location"))
		}
	})
	t.Run("errors", func(t *testing.T) {
		for _, tt := range []struct {
			action string
			form   url.Values
			code   int
		}{
			{"drain", url.Values{}, 400},
			{"drain", url.Values{"backend": {"nope"}, "target": {"http://x"}}, 404},
			{"drain", url.Values{"backend": {"orders"}, "target": {"http://x"}}, 404},
			{"readiness", url.Values{"fail": {"maybe"}}, 400},
			{"purge", url.Values{"cache": {"nope"}, "key": {"k"}}, 404},
			{"purge", url.Values{"cache": {"responses"}}, 400},
			{"purge", url.Values{"cache": {"responses"}, "key": {"k"}, "prefix": {"p"}}, 400},
			{"reset", url.Values{"breaker": {"nope"}}, 404},
			{"reset", url.Values{"backend": {"orders"}}, 404},
			{"explode", url.Values{}, 404},
		} {
			rec := f.post(tt.action, tt.form)
			if rec.Code != tt.code || rec.Header().Get("Content-Type") != pylon.ProblemContentType {
				t.Errorf("%s %v: %d %s, want %d problem", tt.action, tt.form, rec.Code, rec.Body, tt.code)
			}
		}
	})
	t.Run("refusals", func(t *testing.T) {
		form := url.Values{"backend": {"orders"}, "target": {t0.String()}}
		rec := f.post("drain", form, func(r *http.Request) { r.SetBasicAuth("alice", "wrong") })
		if rec.Code != 401 || !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), "Basic realm=") {
			t.Errorf("wrong password: %d %v", rec.Code, rec.Header())
		}
		rec = f.post("drain", form, func(r *http.Request) { r.Header.Del("Authorization") })
		if rec.Code != 401 {
			t.Errorf("no credentials: %d", rec.Code)
		}
		rec = f.post("drain", form, func(r *http.Request) { r.Header.Set("Sec-Fetch-Site", "cross-site") })
		if rec.Code != 403 {
			t.Errorf("cross-site post: %d, want 403", rec.Code)
		}
		rec = f.post("drain", form, func(r *http.Request) {
			r.Header.Del("Sec-Fetch-Site")
			r.Header.Set("Origin", "https://evil.example")
		})
		if rec.Code != 403 {
			t.Errorf("foreign Origin: %d, want 403", rec.Code)
		}
		r := localRequest("GET", "/api/v1/actions/drain?backend=orders&target="+url.QueryEscape(t0.String()), nil)
		r.SetBasicAuth("alice", "pw")
		rec = httptest.NewRecorder()
		f.h.ServeHTTP(rec, r)
		if rec.Code != 405 || rec.Header().Get("Allow") != "POST" {
			t.Errorf("GET action: %d Allow %q", rec.Code, rec.Header().Get("Allow"))
		}
		if t0.Drained() {
			t.Fatal("a refused action ran")
		}
	})
	t.Run("logged with who asked", func(t *testing.T) {
		logs := f.logs.String()
		if !strings.Contains(logs, "admin: action") || !strings.Contains(logs, "action=drain") || !strings.Contains(logs, "who=alice") {
			t.Errorf("log lacks the action and who asked:\n%s", logs)
		}
		if strings.Contains(logs, "pw") && strings.Contains(logs, "Basic") {
			t.Error("log shows credentials")
		}
		acts := f.h.Status().Actions
		if len(acts) == 0 || acts[0].Who != "alice" {
			t.Fatalf("recent actions %+v", acts)
		}
		if !strings.Contains(f.get("/").Body.String(), "<td>alice</td>") {
			t.Error("page does not show who ran actions")
		}
	})
}

func TestNonLoopbackRequests(t *testing.T) {
	public := context.WithValue(context.Background(), http.LocalAddrContextKey, &net.TCPAddr{IP: net.IPv4(192, 0, 2, 10), Port: 443})
	get := func(h *Handler, user string) *httptest.ResponseRecorder {
		r := httptest.NewRequest("GET", "/", nil).WithContext(public)
		if user != "" {
			r.SetBasicAuth(user, "pw")
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		return rec
	}
	if rec := get(newFixture(t, nil).h, ""); rec.Code != 403 {
		t.Errorf("non-loopback request without an Authorizer: %d, want 403", rec.Code)
	}
	h := newFixture(t, BasicAuth("admin", map[string]string{"alice": "pw"})).h
	if rec := get(h, ""); rec.Code != 401 {
		t.Errorf("non-loopback request without credentials: %d, want 401", rec.Code)
	}
	if rec := get(h, "alice"); rec.Code != 200 {
		t.Errorf("non-loopback request with credentials: %d, want 200", rec.Code)
	}
	h = newFixture(t, LoopbackOnly()).h
	if rec := get(h, ""); rec.Code != 403 {
		t.Errorf("LoopbackOnly, peer 192.0.2.1: %d, want 403", rec.Code)
	}

	// A proxy on the same host forwards everyone's requests over loopback:
	// a forwarded request is not a local one.
	forwarded := func(h *Handler, hdr, user string) int {
		r := localRequest("GET", "/", nil)
		r.Header.Set(hdr, "203.0.113.9")
		if user != "" {
			r.SetBasicAuth(user, "pw")
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		return rec.Code
	}
	withAuth := newFixture(t, BasicAuth("admin", map[string]string{"alice": "pw"})).h
	for _, hdr := range []string{"X-Forwarded-For", "Forwarded", "X-Real-Ip"} {
		if code := forwarded(newFixture(t, nil).h, hdr, ""); code != 403 {
			t.Errorf("loopback, %s, no Authorizer: %d, want 403", hdr, code)
		}
		if code := forwarded(withAuth, hdr, ""); code != 401 {
			t.Errorf("loopback, %s, no credentials: %d, want 401", hdr, code)
		}
		if code := forwarded(withAuth, hdr, "alice"); code != 200 {
			t.Errorf("loopback, %s, with credentials: %d, want 200", hdr, code)
		}
	}
}

func TestListen(t *testing.T) {
	gw := pylon.New(pylon.Options{})
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0", "192.0.2.1:0", "example.com:0", "nonsense"} {
		if s, err := Listen(addr, Options{Gateway: gw}); !errors.Is(err, ErrNoAuthorizer) {
			if s != nil {
				s.Close()
			}
			t.Errorf("Listen(%q) without an Authorizer: %v, want ErrNoAuthorizer", addr, err)
		}
	}
	if _, err := Listen("127.0.0.1:0", Options{}); err == nil {
		t.Error("Listen without a Gateway: no error")
	}
	s, err := Listen("127.0.0.1:0", Options{Gateway: gw})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	res, err := http.Get(s.URL() + "api/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 || !strings.HasPrefix(s.URL(), "http://127.0.0.1:") {
		t.Errorf("%s: %d", s.URL(), res.StatusCode)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve after shutdown: %v", err)
	}
	// With an Authorizer any address is allowed.
	s, err = Listen("0.0.0.0:0", Options{Gateway: gw, Authorizer: LoopbackOnly()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Error(err)
	}
	if err := Serve(context.Background(), ":0", Options{Gateway: gw}); !errors.Is(err, ErrNoAuthorizer) {
		t.Errorf("Serve(:0) without an Authorizer: %v", err)
	}
}

func TestSparkline(t *testing.T) {
	if sparkline(Series{}) != "" {
		t.Error("empty series drew something")
	}
	svg := string(sparkline(Series{StepSeconds: 5, Requests: []int{0, 4, 2}, Errors: []int{0, 1, 0}}))
	for _, want := range []string{`<svg class="spark"`, `aria-label="6 requests, 1 errors over the last 15 seconds"`, `<rect `, `M0.0 26.0 L90.0 2.0 L180.0 14.0`} {
		if !strings.Contains(svg, want) {
			t.Errorf("sparkline lacks %s:\n%s", want, svg)
		}
	}
}

// DNS rebinding: another site's name resolved to 127.0.0.1 reaches the
// loopback listener under that name (and its Origin matches its Host, so
// cross-origin protection passes it). Such a request is not a local one.
func TestRebindingNameIsNotLocal(t *testing.T) {
	evil := func(method, target string) *http.Request {
		r := httptest.NewRequest(method, "http://evil.example:9901"+target, nil).WithContext(loopbackCtx())
		r.RemoteAddr = "127.0.0.1:50000"
		r.Header.Set("Origin", "http://evil.example:9901")
		r.Header.Set("Sec-Fetch-Site", "same-origin")
		return r
	}
	rec := httptest.NewRecorder()
	newFixture(t, nil).h.ServeHTTP(rec, evil("GET", "/api/v1/status"))
	if rec.Code != http.StatusForbidden {
		t.Errorf("status API under a rebound name, no Authorizer: %d, want 403", rec.Code)
	}
	f := newFixture(t, LoopbackOnly())
	rec = httptest.NewRecorder()
	f.h.ServeHTTP(rec, evil("POST", "/api/v1/actions/readiness?fail=true"))
	if rec.Code == http.StatusOK || f.gw.Draining() {
		t.Errorf("LoopbackOnly action under a rebound name: %d, draining %v; want refused", rec.Code, f.gw.Draining())
	}
	for _, host := range []string{"127.0.0.1:9901", "localhost:9901", "[::1]:9901", "app.localhost"} {
		if !loopbackHost(host) {
			t.Errorf("%s is a loopback name", host)
		}
	}
}

func TestMatcherSecretsMasked(t *testing.T) {
	got := maskMatchers([]string{"header X-Version=2", "header X-Internal-Key=abcSECRET123", "query token=t0k", "header X-Api-Key"})
	want := []string{"header X-Version=2", "header X-Internal-Key=[redacted]", "query token=[redacted]", "header X-Api-Key"}
	if !slices.Equal(got, want) {
		t.Errorf("masked %q, want %q", got, want)
	}
}
