package introspect_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/middleware/introspect"
	"github.com/pylon-gateway/pylon/middleware/jwtauth"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// authServer is a fake RFC 7662 endpoint on loopback.
type authServer struct {
	*httptest.Server
	calls   atomic.Int64
	mu      sync.Mutex
	tokens  map[string]map[string]any // token -> answer when active
	down    bool
	block   chan struct{} // when set, requests wait for it or their context
	arrived chan struct{} // gets a value (when it has room) per request
}

const clientID, clientSecret = "gate way", "s3cr:et%"

func newAuthServer(t *testing.T) *authServer {
	s := &authServer{tokens: map[string]map[string]any{}, arrived: make(chan struct{}, 1)}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.calls.Add(1)
		select {
		case s.arrived <- struct{}{}:
		default:
		}
		s.mu.Lock()
		down, block := s.down, s.block
		s.mu.Unlock()
		if block != nil {
			select {
			case <-block:
			case <-r.Context().Done():
				return
			}
		}
		if down {
			http.Error(w, "down", http.StatusBadGateway)
			return
		}
		// client_secret_basic: the id and secret are form-encoded first.
		id, secret, ok := r.BasicAuth()
		id, _ = url.QueryUnescape(id)
		secret, _ = url.QueryUnescape(secret)
		if !ok || id != clientID || secret != clientSecret {
			w.Header().Set("WWW-Authenticate", "Basic")
			http.Error(w, `{"error":"invalid_client"}`, http.StatusUnauthorized)
			return
		}
		if r.Method != http.MethodPost || r.FormValue("token_type_hint") != "access_token" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		ans, ok := s.tokens[r.PostFormValue("token")]
		s.mu.Unlock()
		if !ok {
			ans = map[string]any{"active": false}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(ans)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *authServer) add(token string, claims map[string]any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := map[string]any{"active": true}
	for k, v := range claims {
		a[k] = v
	}
	s.tokens[token] = a
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newIntrospector(t *testing.T, as *authServer, mod func(*introspect.Options)) *introspect.Introspector {
	o := introspect.Options{URL: as.URL, ClientID: clientID, ClientSecret: clientSecret, Logger: quiet}
	if mod != nil {
		mod(&o)
	}
	i, err := introspect.New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = i.Close() })
	return i
}

type upstream struct {
	mu      sync.Mutex
	subject string
	auth    string
	header  http.Header
}

func serve(t *testing.T, mw pylon.Middleware) (string, *upstream) {
	up := &upstream{}
	gw := pylon.New(pylon.Options{})
	gw.Route("GET /api/").Use(mw).Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		up.mu.Lock()
		info := pylon.Info(r.Context())
		up.subject, up.auth, up.header = info.Subject, info.Auth, r.Header.Clone()
		up.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	if err := gw.Err(); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw)
	t.Cleanup(srv.Close)
	return srv.URL + "/api/x", up
}

func call(t *testing.T, u, token string, hdr ...string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp
}

func TestIntrospectThroughGateway(t *testing.T) {
	as := newAuthServer(t)
	clk := &clock{t: time.Now()}
	exp := clk.Now().Add(time.Hour).Unix()
	as.add("good", map[string]any{"sub": "alice", "scope": "orders:read", "exp": exp, "aud": "api", "iss": "https://as", "client_id": "web"})
	as.add("other-aud", map[string]any{"sub": "bob", "exp": exp, "aud": "elsewhere", "iss": "https://as"})
	i := newIntrospector(t, as, func(o *introspect.Options) {
		o.Now, o.Audience, o.Issuer = clk.Now, []string{"api"}, "https://as"
	})
	u, up := serve(t, jwtauth.RequireWithOptions(i, jwtauth.RequireOptions{
		Rules:         []jwtauth.Rule{jwtauth.Scopes("orders:read")},
		ForwardClaims: map[string]string{"X-User-Id": "sub", "X-Client": "client_id"},
		Logger:        quiet,
	}))
	tests := []struct {
		name   string
		token  string
		status int
	}{
		{"active", "good", 204},
		{"inactive", "nope", 401},
		{"wrong audience", "other-aud", 401},
		{"no token", "", 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := call(t, u, tt.token, "X-User-Id", "forged")
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if tt.status == 401 && resp.Header.Get("WWW-Authenticate") == "" {
				t.Error("no challenge")
			}
			if tt.status == 204 {
				up.mu.Lock()
				defer up.mu.Unlock()
				if up.subject != "alice" || up.auth != "introspection" || up.header.Get("X-User-Id") != "alice" || up.header.Get("X-Client") != "web" {
					t.Errorf("upstream saw subject %q auth %q headers %v", up.subject, up.auth, up.header)
				}
				if up.header.Get("Authorization") != "" {
					t.Error("token forwarded upstream")
				}
			}
		})
	}
}

func TestIntrospectCache(t *testing.T) {
	as := newAuthServer(t)
	clk := &clock{t: time.Now()}
	as.add("short", map[string]any{"sub": "a", "exp": clk.Now().Add(30 * time.Second).Unix()})
	as.add("long", map[string]any{"sub": "b", "exp": clk.Now().Add(time.Hour).Unix()})
	as.add("noexp", map[string]any{"sub": "c"})
	i := newIntrospector(t, as, func(o *introspect.Options) { o.Now = clk.Now })
	ctx := context.Background()
	verify := func(tok string) error { _, err := i.Verify(ctx, tok); return err }

	for range 3 {
		if err := verify("long"); err != nil {
			t.Fatal(err)
		}
	}
	if n := as.calls.Load(); n != 1 {
		t.Fatalf("%d calls for one token asked 3 times, want 1", n)
	}
	// Negative answers are cached briefly.
	for range 3 {
		if err := verify("unknown"); !errors.Is(err, introspect.ErrInactive) {
			t.Fatalf("unknown token = %v, want ErrInactive", err)
		}
	}
	if n := as.calls.Load(); n != 2 {
		t.Fatalf("%d calls after an inactive token asked 3 times, want 2", n)
	}
	clk.Add(11 * time.Second) // past NegativeTTL
	_ = verify("unknown")
	if n := as.calls.Load(); n != 3 {
		t.Fatalf("negative answer outlived NegativeTTL (%d calls)", n)
	}
	// A positive entry never outlives exp: "short" expires at +30s.
	_ = verify("short")
	clk.Add(20 * time.Second) // now +31s, past short's exp
	before := as.calls.Load()
	if err := verify("short"); !errors.Is(err, jwtauth.ErrExpired) {
		t.Fatalf("short past exp = %v, want ErrExpired", err)
	}
	if as.calls.Load() != before+1 {
		t.Errorf("expired entry answered from the cache")
	}
	// Without exp, CacheTTL (2m) bounds it.
	_ = verify("noexp")
	before = as.calls.Load()
	clk.Add(119 * time.Second)
	_ = verify("noexp")
	if as.calls.Load() != before {
		t.Errorf("entry dropped before CacheTTL")
	}
	clk.Add(2 * time.Second)
	_ = verify("noexp")
	if as.calls.Load() != before+1 {
		t.Errorf("entry outlived CacheTTL")
	}
	// Forget drops one answer.
	i.Forget("noexp")
	_ = verify("noexp")
	if as.calls.Load() != before+2 {
		t.Errorf("Forget kept the answer")
	}
}

func TestIntrospectConcurrentCallsShareOne(t *testing.T) {
	as := newAuthServer(t)
	as.add("t", map[string]any{"sub": "a"})
	block := make(chan struct{})
	as.mu.Lock()
	as.block = block
	as.mu.Unlock()
	i := newIntrospector(t, as, nil)
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := i.Verify(context.Background(), "t"); err != nil {
				t.Error(err)
			}
		}()
	}
	<-as.arrived
	close(block)
	wg.Wait()
	if n := as.calls.Load(); n > 2 {
		t.Errorf("%d introspection calls for 50 concurrent requests", n)
	}
}

func TestIntrospectFailures(t *testing.T) {
	as := newAuthServer(t)
	as.add("t", map[string]any{"sub": "a"})
	t.Run("endpoint down answers 503, not cached", func(t *testing.T) {
		i := newIntrospector(t, as, nil)
		u, _ := serve(t, jwtauth.RequireWithOptions(i, jwtauth.RequireOptions{Logger: quiet}))
		as.mu.Lock()
		as.down = true
		as.mu.Unlock()
		if resp := call(t, u, "t"); resp.StatusCode != 503 || resp.Header.Get("WWW-Authenticate") != "" {
			t.Fatalf("status %d challenge %q, want 503 without challenge", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
		as.mu.Lock()
		as.down = false
		as.mu.Unlock()
		if resp := call(t, u, "t"); resp.StatusCode != 204 {
			t.Fatalf("after recovery: status %d", resp.StatusCode)
		}
	})
	t.Run("wrong client secret answers 503", func(t *testing.T) {
		i := newIntrospector(t, as, func(o *introspect.Options) { o.ClientSecret = "wrong" })
		if _, err := i.Verify(context.Background(), "t"); !errors.Is(err, jwtauth.ErrUnavailable) {
			t.Fatalf("Verify = %v, want ErrUnavailable", err)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		block := make(chan struct{})
		defer close(block)
		as.mu.Lock()
		as.block = block
		as.mu.Unlock()
		defer func() { as.mu.Lock(); as.block = nil; as.mu.Unlock() }()
		i := newIntrospector(t, as, func(o *introspect.Options) { o.Timeout = 50 * time.Millisecond })
		if _, err := i.Verify(context.Background(), "t"); !errors.Is(err, jwtauth.ErrUnavailable) {
			t.Fatalf("Verify = %v, want ErrUnavailable", err)
		}
	})
	t.Run("config", func(t *testing.T) {
		for _, o := range []introspect.Options{{URL: "ftp://x", ClientID: "a"}, {URL: as.URL}} {
			if _, err := introspect.New(o); !errors.Is(err, introspect.ErrConfig) {
				t.Errorf("New(%+v) = %v, want ErrConfig", o, err)
			}
		}
	})
}

// Only access tokens are admitted, by the same rules as JWTs: refresh
// tokens and ID tokens the server reports active are refused with 401
// invalid_token, and AuthorizedParties checks azp or client_id.
func TestIntrospectAdmitsOnlyAccessTokens(t *testing.T) {
	as := newAuthServer(t)
	exp := time.Now().Add(time.Hour).Unix()
	for tok, claims := range map[string]map[string]any{
		"at-bearer":     {"token_type": "Bearer", "client_id": "web"},
		"at-lower":      {"token_type": "bearer", "client_id": "web"},
		"at-hintname":   {"token_type": "access_token", "client_id": "web"},
		"at-keycloak":   {"typ": "Bearer", "azp": "web"},
		"at-bare":       {"client_id": "web"},
		"rt-token-type": {"token_type": "refresh_token", "client_id": "web"},
		"rt-keycloak":   {"typ": "Refresh", "azp": "web"},
		"rt-offline":    {"typ": "Offline", "azp": "web"},
		"odd-type":      {"token_type": "N_A", "client_id": "web"},
		"id-at-hash":    {"at_hash": "x", "nonce": "n", "client_id": "web"},
		"id-keycloak":   {"typ": "ID", "azp": "web"},
		"other-client":  {"client_id": "evil"},
		"azp-wins":      {"azp": "evil", "client_id": "web"},
		"no-client":     {},
	} {
		claims["sub"], claims["exp"] = "alice", exp
		as.add(tok, claims)
	}
	strict := newIntrospector(t, as, func(o *introspect.Options) { o.AuthorizedParties = []string{"web"} })
	lenient := newIntrospector(t, as, func(o *introspect.Options) { o.AllowIDTokens = true })
	strictURL, _ := serve(t, jwtauth.RequireWithOptions(strict, jwtauth.RequireOptions{Logger: quiet}))
	lenientURL, _ := serve(t, jwtauth.RequireWithOptions(lenient, jwtauth.RequireOptions{Logger: quiet}))
	for _, tt := range []struct {
		token           string
		strict, lenient error // nil: admitted
	}{
		{"at-bearer", nil, nil},
		{"at-lower", nil, nil},
		{"at-hintname", nil, nil},
		{"at-keycloak", nil, nil},
		{"at-bare", nil, nil},
		{"rt-token-type", jwtauth.ErrTokenType, jwtauth.ErrTokenType},
		{"rt-keycloak", jwtauth.ErrTokenType, jwtauth.ErrTokenType},
		{"rt-offline", jwtauth.ErrTokenType, jwtauth.ErrTokenType},
		{"odd-type", jwtauth.ErrTokenType, jwtauth.ErrTokenType},
		{"id-at-hash", jwtauth.ErrTokenType, nil},
		{"id-keycloak", jwtauth.ErrTokenType, nil},
		{"other-client", jwtauth.ErrAuthorizedParty, nil},
		{"azp-wins", jwtauth.ErrAuthorizedParty, nil},
		{"no-client", jwtauth.ErrAuthorizedParty, nil},
	} {
		t.Run(tt.token, func(t *testing.T) {
			for _, c := range []struct {
				name string
				i    *introspect.Introspector
				u    string
				want error
			}{{"strict", strict, strictURL, tt.strict}, {"AllowIDTokens", lenient, lenientURL, tt.lenient}} {
				if _, err := c.i.Verify(context.Background(), tt.token); !errors.Is(err, c.want) {
					t.Errorf("%s: Verify = %v, want %v", c.name, err, c.want)
				}
				resp := call(t, c.u, tt.token)
				switch {
				case c.want == nil && resp.StatusCode != 204:
					t.Errorf("%s: status %d, want 204", c.name, resp.StatusCode)
				case c.want != nil && (resp.StatusCode != 401 || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="invalid_token"`) ||
					resp.Header.Get("Content-Type") != pylon.ProblemContentType):
					t.Errorf("%s: status %d %q %q, want 401 invalid_token problem", c.name, resp.StatusCode,
						resp.Header.Get("WWW-Authenticate"), resp.Header.Get("Content-Type"))
				}
			}
		})
	}
}
