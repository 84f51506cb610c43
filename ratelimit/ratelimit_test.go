package ratelimit_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/ratelimit"
)

var okHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	w.WriteHeader(http.StatusOK)
})

// clock is an injected time source.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func do(h http.Handler, r *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	return rec
}

func withInfo(r *http.Request, info *pylon.RequestInfo) *http.Request {
	return r.WithContext(pylon.NewContext(r.Context(), info))
}

func TestMiddlewareHeadersAnd429(t *testing.T) {
	c := &clock{epoch}
	h := ratelimit.MustNewWithOptions(ratelimit.Options{
		Limits: []ratelimit.Limit{ratelimit.PerSecond(2), ratelimit.PerHour(100).Named("hourly")},
		Now:    c.now,
	})(okHandler)
	wantPolicy := `"2-per-1s";q=2;w=1, "hourly";q=100;w=3600`
	steps := []struct {
		status     int
		rateLimit  string
		retryAfter string
	}{
		{200, `"2-per-1s";r=1;t=1, "hourly";r=99;t=36`, ""},
		{200, `"2-per-1s";r=0;t=1, "hourly";r=98;t=72`, ""},
		{429, `"2-per-1s";r=0;t=1, "hourly";r=98;t=1`, "1"},
	}
	for i, st := range steps {
		info := &pylon.RequestInfo{ClientIP: netip.MustParseAddr("192.0.2.7"), RequestID: "req-1"}
		rec := do(h, withInfo(httptest.NewRequest("GET", "/", nil), info))
		if rec.Code != st.status {
			t.Fatalf("step %d: status %d, want %d", i, rec.Code, st.status)
		}
		if got := rec.Header().Get("RateLimit-Policy"); got != wantPolicy {
			t.Errorf("step %d: RateLimit-Policy %q, want %q", i, got, wantPolicy)
		}
		if got := rec.Header().Get("RateLimit"); got != st.rateLimit {
			t.Errorf("step %d: RateLimit %q, want %q", i, got, st.rateLimit)
		}
		if got := rec.Header().Get("Retry-After"); got != st.retryAfter {
			t.Errorf("step %d: Retry-After %q, want %q", i, got, st.retryAfter)
		}
		rl := info.RateLimit
		wantRemaining := []int{1, 0, 0}[i]
		if !rl.Decided || rl.Allowed != (st.status == 200) || rl.Key != "ip:192.0.2.7" || rl.Limit != 2 || rl.Remaining != wantRemaining {
			t.Errorf("step %d: RequestInfo.RateLimit = %+v", i, rl)
		}
		if st.status == 429 {
			if ct := rec.Header().Get("Content-Type"); ct != pylon.ProblemContentType {
				t.Errorf("429 Content-Type %q", ct)
			}
			var p pylon.Problem
			if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
				t.Fatal(err)
			}
			if p.Status != 429 || p.RequestID != "req-1" || p.Type == "" {
				t.Errorf("problem %+v", p)
			}
		}
	}
	// A second later the per-second bucket is full again.
	c.t = c.t.Add(time.Second)
	if rec := do(h, httptest.NewRequest("GET", "/", nil)); rec.Code != 200 {
		t.Fatalf("after a second: status %d", rec.Code)
	}
}

func TestMiddlewareCORSPreflightNotCounted(t *testing.T) {
	h := ratelimit.MustNew(ratelimit.ByIP, ratelimit.PerMinute(1))(okHandler)
	for i := 0; i < 5; i++ {
		r := httptest.NewRequest("OPTIONS", "/", nil)
		r.Header.Set("Origin", "https://app.example")
		r.Header.Set("Access-Control-Request-Method", "POST")
		if rec := do(h, r); rec.Code != 200 || rec.Header().Get("RateLimit") != "" {
			t.Fatalf("preflight %d: status %d, headers %v", i, rec.Code, rec.Header())
		}
	}
	if rec := do(h, httptest.NewRequest("GET", "/", nil)); rec.Code != 200 {
		t.Fatalf("first real request: status %d, want 200 (preflights must not count)", rec.Code)
	}
	// A plain OPTIONS (no CORS headers) is an ordinary request.
	if rec := do(h, httptest.NewRequest("OPTIONS", "/", nil)); rec.Code != 429 {
		t.Fatalf("plain OPTIONS: status %d, want 429", rec.Code)
	}
}

func TestMiddlewareMissingKey(t *testing.T) {
	tests := []struct {
		name   string
		policy ratelimit.MissingKey
		codes  []int
	}{
		{"shared anonymous bucket", ratelimit.MissingKeyShared, []int{200, 429, 429}},
		{"reject 400", ratelimit.MissingKeyReject400, []int{400, 400, 400}},
		{"reject 401", ratelimit.MissingKeyReject401, []int{401, 401, 401}},
		// Not a subject key: the zero value pools, never lets through.
		{"zero value: shared for a header key", ratelimit.MissingKeyDefault, []int{200, 429, 429}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := ratelimit.MustNewWithOptions(ratelimit.Options{
				Limits:     []ratelimit.Limit{ratelimit.PerMinute(1)},
				Key:        ratelimit.ByHeader("X-API-Key", ratelimit.CaseSensitive),
				MissingKey: tt.policy,
			})(okHandler)
			for i, want := range tt.codes {
				// Different addresses: without a key, the address must
				// not be used as a fallback.
				r := httptest.NewRequest("GET", "/", nil)
				r.RemoteAddr = netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), 1234).String()
				if rec := do(h, r); rec.Code != want {
					t.Fatalf("request %d: status %d, want %d", i, rec.Code, want)
				}
			}
			// A request with a key has its own bucket.
			r := httptest.NewRequest("GET", "/", nil)
			r.Header.Set("X-API-Key", "k1")
			if rec := do(h, r); rec.Code != 200 {
				t.Fatalf("keyed request: status %d", rec.Code)
			}
		})
	}
}

func TestMiddlewareOverrides(t *testing.T) {
	premium := []ratelimit.Limit{ratelimit.PerMinute(3).Named("premium")}
	h := ratelimit.MustNewWithOptions(ratelimit.Options{
		Limits: []ratelimit.Limit{ratelimit.PerMinute(1)},
		Key:    ratelimit.ByHeader("X-API-Key", ratelimit.CaseSensitive),
		Overrides: func(key string) ([]ratelimit.Limit, bool) {
			return premium, key == "h:gold"
		},
	})(okHandler)
	count := func(key string) (n int, policy string) {
		for i := 0; i < 10; i++ {
			r := httptest.NewRequest("GET", "/", nil)
			r.Header.Set("X-API-Key", key)
			rec := do(h, r)
			policy = rec.Header().Get("RateLimit-Policy")
			if rec.Code == 200 {
				n++
			}
		}
		return n, policy
	}
	if n, p := count("gold"); n != 3 || p != `"premium";q=3;w=60` {
		t.Fatalf("premium admitted %d (policy %s), want 3", n, p)
	}
	if n, p := count("basic"); n != 1 || p != `"1-per-60s";q=1;w=60` {
		t.Fatalf("basic admitted %d (policy %s), want 1", n, p)
	}
}

type failingStore struct{}

func (failingStore) Allow(context.Context, string, []ratelimit.Limit, time.Time) (ratelimit.Decision, error) {
	return ratelimit.Decision{}, errors.New("ratelimit test: store down at 10.0.0.9:6379")
}

type openStore struct{}

func (openStore) Allow(_ context.Context, _ string, limits []ratelimit.Limit, _ time.Time) (ratelimit.Decision, error) {
	return ratelimit.Decision{Allowed: true, N: len(limits)}, nil
}

func TestMiddlewareStoreOutcomes(t *testing.T) {
	t.Run("store error is 503 without detail", func(t *testing.T) {
		h := ratelimit.MustNewWithOptions(ratelimit.Options{Limits: []ratelimit.Limit{ratelimit.PerSecond(1)}, Store: failingStore{}})(okHandler)
		rec := do(h, httptest.NewRequest("GET", "/", nil))
		if rec.Code != 503 {
			t.Fatalf("status %d, want 503", rec.Code)
		}
		if body := rec.Body.String(); contains(body, "10.0.0.9") {
			t.Fatalf("body leaks the store address: %s", body)
		}
	})
	t.Run("undecided allow sends no RateLimit", func(t *testing.T) {
		h := ratelimit.MustNewWithOptions(ratelimit.Options{Limits: []ratelimit.Limit{ratelimit.PerSecond(1)}, Store: openStore{}})(okHandler)
		rec := do(h, httptest.NewRequest("GET", "/", nil))
		if rec.Code != 200 || rec.Header().Get("RateLimit") != "" || rec.Header().Get("RateLimit-Policy") == "" {
			t.Fatalf("status %d, headers %v", rec.Code, rec.Header())
		}
	})
}

func contains(s, sub string) bool {
	return len(sub) > 0 && len(s) >= len(sub) && (s[:len(sub)] == sub || contains(s[1:], sub))
}

func TestMiddlewareHeaderOptions(t *testing.T) {
	tests := []struct {
		name string
		opts ratelimit.Options
		want map[string]string // "" means absent
	}{
		{"x-ratelimit trio", ratelimit.Options{XRateLimitHeaders: true}, map[string]string{
			"X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1", "Retry-After": "1", "RateLimit": `"5-per-1s";r=0;t=1`,
		}},
		{"hidden", ratelimit.Options{HideHeaders: true}, map[string]string{
			"RateLimit": "", "RateLimit-Policy": "", "X-RateLimit-Limit": "", "Retry-After": "1",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.Limits = []ratelimit.Limit{ratelimit.PerSecond(5)}
			tt.opts.Now = (&clock{epoch}).now
			h := ratelimit.MustNewWithOptions(tt.opts)(okHandler)
			var rec *httptest.ResponseRecorder
			for i := 0; i < 6; i++ {
				rec = do(h, httptest.NewRequest("GET", "/", nil))
			}
			if rec.Code != 429 {
				t.Fatalf("status %d, want 429", rec.Code)
			}
			for k, v := range tt.want {
				if got := rec.Header().Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
		})
	}
}

func TestMiddlewareSkip(t *testing.T) {
	h := ratelimit.MustNewWithOptions(ratelimit.Options{
		Limits: []ratelimit.Limit{ratelimit.PerMinute(1)},
		Skip:   func(r *http.Request) bool { return r.URL.Path == "/healthz" },
	})(okHandler)
	for i := 0; i < 3; i++ {
		if rec := do(h, httptest.NewRequest("GET", "/healthz", nil)); rec.Code != 200 {
			t.Fatalf("health check %d limited", i)
		}
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	tests := []struct {
		name string
		opts ratelimit.Options
	}{
		{"no limits", ratelimit.Options{}},
		{"bad limit", ratelimit.Options{Limits: []ratelimit.Limit{{Quota: -1}}}},
		{"too many", ratelimit.Options{Limits: make([]ratelimit.Limit, ratelimit.MaxLimits+1)}},
		{"bad policy", ratelimit.Options{Limits: []ratelimit.Limit{ratelimit.PerSecond(1)}, MissingKey: 9}},
		{"bad challenge", ratelimit.Options{Limits: []ratelimit.Limit{ratelimit.PerSecond(1)}, Challenge: "Bearer\r\nX-Injected: 1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if mw, err := ratelimit.NewWithOptions(tt.opts); err == nil || mw != nil {
				t.Fatalf("NewWithOptions = %v, %v; want nil and an error", mw != nil, err)
			}
			defer func() {
				if recover() == nil {
					t.Fatal("MustNewWithOptions: no panic")
				}
			}()
			ratelimit.MustNewWithOptions(tt.opts)
		})
	}
}

// TestMissingKeyDefaultPublicUnixSocket: an address-keyed limit on a public
// route served on a unix socket (whose peers have no IP address) counts
// requests in the shared anonymous bucket: the route is served, and still
// limited, instead of asking every caller to authenticate.
func TestMissingKeyDefaultPublicUnixSocket(t *testing.T) {
	up := httptest.NewServer(okHandler)
	defer up.Close()
	b := pylon.MustNewBackend("up", pylon.BackendOptions{Targets: []string{up.URL}})
	defer b.Close()
	gw := pylon.New(pylon.Options{})
	gw.Route("GET /public").Use(ratelimit.MustNew(ratelimit.ByIP, ratelimit.PerMinute(1))).To(b)
	if err := gw.Err(); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "gw.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(gw)
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	defer srv.Close()
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	for i, want := range []int{http.StatusOK, http.StatusTooManyRequests} {
		res, err := c.Get("http://gw/public")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != want {
			t.Fatalf("request %d: status %d, want %d", i, res.StatusCode, want)
		}
		if res.Header.Get("WWW-Authenticate") != "" {
			t.Errorf("request %d: WWW-Authenticate %q on a public route", i, res.Header.Get("WWW-Authenticate"))
		}
	}
}

// TestMissingSubject: a per-subject limit refuses a request without a
// subject. Unauthenticated, it gets 401 with a WWW-Authenticate challenge
// (RFC 9110 §15.5.2); authenticated by a mechanism that named no subject,
// it gets 403, since authenticating again would not help.
func TestMissingSubject(t *testing.T) {
	up := httptest.NewServer(okHandler)
	defer up.Close()
	b := pylon.MustNewBackend("up", pylon.BackendOptions{Targets: []string{up.URL}})
	defer b.Close()
	// An authentication that admits every request carrying X-Token and
	// names its subject only when X-Sub is set (as extauthz without a
	// SubjectHeader, or a JWT without "sub", would not).
	auth := func(next http.Handler) http.Handler {
		return pylon.WithStage(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("X-Token") != "" {
				info := pylon.Info(r.Context())
				info.Auth, info.Subject = "test", r.Header.Get("X-Sub")
			}
			next.ServeHTTP(w, r)
		}), pylon.Stage{Name: "test auth", Roles: pylon.RoleAuthenticate})
	}
	gw := pylon.New(pylon.Options{})
	gw.Route("GET /orders").Use(auth, ratelimit.MustNew(ratelimit.BySubject, ratelimit.PerMinute(5))).To(b)
	gw.Route("GET /keys").Use(auth, ratelimit.MustNewWithOptions(ratelimit.Options{
		Key: ratelimit.BySubject, Limits: []ratelimit.Limit{ratelimit.PerMinute(5)},
		Challenge: `ApiKey header="X-Token"`,
	})).To(b)
	if err := gw.Err(); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw)
	defer srv.Close()
	for _, tc := range []struct {
		name, path       string
		headers          map[string]string
		status           int
		challenge, about string
	}{
		{"anonymous", "/orders", nil, 401, ratelimit.DefaultChallenge, "Authentication is required."},
		{"anonymous, own challenge", "/keys", nil, 401, `ApiKey header="X-Token"`, "Authentication is required."},
		{"authenticated, no subject", "/orders", map[string]string{"X-Token": "t"}, 403, "", "identified client"},
		{"authenticated with a subject", "/orders", map[string]string{"X-Token": "t", "X-Sub": "alice"}, 200, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", srv.URL+tc.path, nil)
			for k, v := range tc.headers {
				req.Header.Set(k, v)
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			if res.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", res.StatusCode, tc.status)
			}
			if got := res.Header.Get("WWW-Authenticate"); got != tc.challenge {
				t.Errorf("WWW-Authenticate %q, want %q", got, tc.challenge)
			}
			if tc.status == 200 {
				return
			}
			if ct := res.Header.Get("Content-Type"); ct != pylon.ProblemContentType {
				t.Errorf("Content-Type %q", ct)
			}
			var p pylon.Problem
			if err := json.NewDecoder(res.Body).Decode(&p); err != nil {
				t.Fatal(err)
			}
			if p.Status != tc.status || !strings.Contains(p.Detail, tc.about) {
				t.Errorf("problem %+v", p)
			}
		})
	}
}
