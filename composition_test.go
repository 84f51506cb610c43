package pylon_test

// The composition tests assemble the stack the README shows (request ID,
// recover, access log, CORS, auth, rate limit, breaker, cache, aggregation)
// in the documented order, and in the wrong orders users will try, and
// check that the assembled gateway keeps each guarantee its packages keep
// alone: one decision about who the client is, one about who it
// authenticated as, and nothing a client says removes what the gateway adds.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/aggregate"
	"github.com/pylon-gateway/pylon/breaker"
	"github.com/pylon-gateway/pylon/cache"
	"github.com/pylon-gateway/pylon/gatewaytest/jwttest"
	"github.com/pylon-gateway/pylon/middleware"
	"github.com/pylon-gateway/pylon/middleware/apikey"
	"github.com/pylon-gateway/pylon/middleware/basicauth"
	"github.com/pylon-gateway/pylon/middleware/extauthz"
	"github.com/pylon-gateway/pylon/middleware/idempotency"
	"github.com/pylon-gateway/pylon/middleware/jwtauth"
	"github.com/pylon-gateway/pylon/middleware/mtls"
	"github.com/pylon-gateway/pylon/overload"
	"github.com/pylon-gateway/pylon/ratelimit"
)

// seen is what the upstream saw of one request.
type seen struct {
	Path   string
	Header http.Header
}

// recorder is an upstream over loopback that records what it receives and
// answers with handler (or 200 and the caller's X-User-Id).
type recorder struct {
	*httptest.Server
	mu      sync.Mutex
	reqs    []seen
	handler http.HandlerFunc
}

func newRecorder(t *testing.T, h http.HandlerFunc) *recorder {
	rc := &recorder{handler: h}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc.mu.Lock()
		rc.reqs = append(rc.reqs, seen{Path: r.URL.RequestURI(), Header: r.Header.Clone()})
		rc.mu.Unlock()
		if rc.handler != nil {
			rc.handler(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"user":%q}`, r.Header.Get("X-User-Id"))
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *recorder) count() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.reqs)
}

func (rc *recorder) last(t *testing.T) seen {
	t.Helper()
	rc.mu.Lock()
	defer rc.mu.Unlock()
	require.NotEmpty(t, rc.reqs, "the upstream saw no request")
	return rc.reqs[len(rc.reqs)-1]
}

// stack is the README's gateway, assembled from real components.
type stack struct {
	gw       *pylon.Gateway
	idp      *jwttest.Issuer
	verifier *jwtauth.Verifier
	logs     *syncBuffer
}

// newIdP returns a test issuer and a Verifier of its RS256 tokens.
func newIdP(t *testing.T) (*jwttest.Issuer, *jwtauth.Verifier) {
	t.Helper()
	idp := jwttest.NewIssuer()
	t.Cleanup(idp.Close)
	v, err := jwtauth.New(context.Background(), jwtauth.Options{
		JWKS: idp.JWKS(), Issuer: idp.URL, Audience: []string{jwttest.DefaultAudience}, Algorithms: []string{"RS256"},
	})
	require.NoError(t, err)
	t.Cleanup(func() { v.Close() })
	return idp, v
}

func newStack(t *testing.T, opts pylon.Options) *stack {
	t.Helper()
	idp, v := newIdP(t)
	logs := &syncBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, nil))
	gw := pylon.New(opts)
	// The README's global chain.
	gw.Use(middleware.RequestID, middleware.Recover(logger), middleware.AccessLog(logger),
		middleware.CORS(middleware.CORSOptions{AllowedOrigins: []string{"https://app.example"}}))
	return &stack{gw: gw, idp: idp, verifier: v, logs: logs}
}

func (s *stack) auth() pylon.Middleware {
	return jwtauth.RequireWithOptions(s.verifier, jwtauth.RequireOptions{
		ForwardClaims: map[string]string{"X-User-Id": "sub"},
		Logger:        slog.New(slog.DiscardHandler),
	})
}

func (s *stack) token(sub string) string { return s.idp.Mint(map[string]any{"sub": sub}) }

func backendFor(t *testing.T, name string, up *recorder) *pylon.Backend {
	b := pylon.MustNewBackend(name, pylon.BackendOptions{Targets: []string{up.URL}})
	t.Cleanup(func() { b.Close() })
	return b
}

// serve sends one request to the gateway in process, from remote.
func serve(gw http.Handler, remote, method, target string, hdr ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, nil)
	r.RemoteAddr = remote
	for _, h := range hdr {
		k, v, _ := strings.Cut(h, ":")
		r.Header.Add(k, strings.TrimSpace(v))
	}
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, r)
	return w
}

// rawRequest writes req on a fresh connection to srv and returns the
// response it reads back.
func rawRequest(t *testing.T, srv *httptest.Server, req string) *http.Response {
	t.Helper()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	require.NoError(t, conn.SetDeadline(time.Now().Add(10*time.Second)))
	_, err = io.WriteString(conn, req)
	require.NoError(t, err)
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res
}

// Item 1: a client's Connection header never removes what the gateway or
// a middleware adds, and still removes what the client itself sent.
func TestCompositionConnectionCannotStripGatewayHeaders(t *testing.T) {
	up := newRecorder(t, nil)
	s := newStack(t, pylon.Options{})
	s.gw.Group("/api", s.auth()).Route("GET /me").To(backendFor(t, "users", up))
	require.NoError(t, s.gw.Err())
	front := httptest.NewServer(s.gw)
	t.Cleanup(front.Close)

	res := rawRequest(t, front, "GET /api/me HTTP/1.1\r\nHost: shop.example\r\n"+
		"Authorization: Bearer "+s.token("alice")+"\r\n"+
		"Connection: X-User-Id, X-Request-Id, X-Forwarded-For, Forwarded, X-Secret, keep-alive\r\n"+
		"X-Secret: hop-only\r\n\r\n")
	require.Equal(t, http.StatusOK, res.StatusCode)
	got := up.last(t).Header
	assert.Equal(t, "alice", got.Get("X-User-Id"), "the identity header jwtauth forwards")
	assert.NotEmpty(t, got.Get("X-Request-Id"), "the request ID the gateway adds")
	assert.Equal(t, res.Header.Get("X-Request-Id"), got.Get("X-Request-Id"))
	assert.Equal(t, "127.0.0.1", got.Get("X-Forwarded-For"))
	assert.NotEmpty(t, got.Get("Forwarded"))
	assert.Empty(t, got.Values("X-Secret"), "a header the client named in Connection is hop-by-hop")
	assert.Empty(t, got.Values("Connection"))
}

// Item 2: one trust setting; the access log, the rate-limit key, the cache
// and the upstream's forwarding headers all see the same client.
func TestCompositionOneClientDecision(t *testing.T) {
	for _, tc := range []struct {
		name      string
		trust     pylon.Trust
		wantIP    string
		wantXFF   string
		wantProto string
		wantHost  string
	}{
		{"untrusted peer", pylon.Trust{}, "10.0.0.1", "10.0.0.1", "http", "shop.example"},
		{"trusted proxy", pylon.Trust{Proxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}},
			"203.0.113.7", "203.0.113.7, 10.0.0.1", "https", "www.example"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := newRecorder(t, nil)
			s := newStack(t, pylon.Options{Trust: tc.trust})
			var key string
			s.gw.Route("GET /items").
				Use(ratelimit.MustNew(ratelimit.ByIP, ratelimit.PerMinute(100)),
					func(next http.Handler) http.Handler {
						return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
							key = pylon.Info(r.Context()).RateLimit.Key
							next.ServeHTTP(w, r)
						})
					}).
				To(backendFor(t, "items", up))
			require.NoError(t, s.gw.Err())
			rec := serve(s.gw, "10.0.0.1:5555", "GET", "http://shop.example/items",
				"X-Forwarded-For: 203.0.113.7", "X-Forwarded-Proto: https", "X-Forwarded-Host: www.example",
				"X-Real-IP: 6.6.6.6", "True-Client-IP: 6.6.6.6", "CF-Connecting-IP: 6.6.6.6", "X-Client-IP: 6.6.6.6")
			require.Equal(t, http.StatusOK, rec.Code)

			lines := s.logs.lines()
			require.NotEmpty(t, lines)
			assert.Equal(t, tc.wantIP, lines[len(lines)-1]["client_ip"], "access log")
			assert.Equal(t, "ip:"+tc.wantIP, key, "rate-limit key")
			got := up.last(t).Header
			assert.Equal(t, tc.wantXFF, got.Get("X-Forwarded-For"))
			assert.Equal(t, tc.wantProto, got.Get("X-Forwarded-Proto"))
			assert.Equal(t, tc.wantHost, got.Get("X-Forwarded-Host"))
			if tc.trust.Proxies == nil {
				for _, h := range []string{"X-Real-Ip", "True-Client-Ip", "Cf-Connecting-Ip", "X-Client-Ip"} {
					assert.Empty(t, got.Values(h), "%s from an untrusted peer reached the upstream", h)
				}
			}
		})
	}
}

// Item 2, the wrong way: a second trust list in RealIP is refused at start.
func TestCompositionRealIPWithItsOwnTrustIsAConfigurationError(t *testing.T) {
	up := newRecorder(t, nil)
	s := newStack(t, pylon.Options{})
	s.gw.Use(middleware.RealIP(pylon.Trust{Proxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}))
	s.gw.Route("GET /items").To(backendFor(t, "items", up))
	err := s.gw.Err()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "Options.Trust")
	assert.Contains(t, err.Error(), `"GET /items"`)

	// RealIP without a trust list of its own is harmless in a Gateway, and
	// changes nothing: the Gateway's decision stands.
	s2 := newStack(t, pylon.Options{Trust: pylon.Trust{Proxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}})
	s2.gw.Use(middleware.RealIP(pylon.Trust{}))
	s2.gw.Route("GET /items").To(backendFor(t, "items2", up))
	require.NoError(t, s2.gw.Err())
	serve(s2.gw, "10.0.0.1:1", "GET", "/items", "X-Forwarded-For: 203.0.113.7")
	lines := s2.logs.lines()
	assert.Equal(t, "203.0.113.7", lines[len(lines)-1]["client_ip"])
}

// Item 3: a cache after authentication never serves one user's answer to
// another, though jwtauth removed the Authorization header before it.
func TestCompositionCacheAfterAuthIsPerUser(t *testing.T) {
	up := newRecorder(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		fmt.Fprintf(w, "me=%s", r.Header.Get("X-User-Id"))
	})
	s := newStack(t, pylon.Options{})
	c := cache.MustNew(cache.Options{})
	t.Cleanup(func() { c.Close() })
	s.gw.Group("/api", s.auth()).Route("GET /me").Use(c.Middleware).To(backendFor(t, "users", up))
	require.NoError(t, s.gw.Err())

	a := serve(s.gw, "192.0.2.1:1", "GET", "/api/me", "Authorization: Bearer "+s.token("alice"))
	b := serve(s.gw, "192.0.2.2:1", "GET", "/api/me", "Authorization: Bearer "+s.token("bob"))
	assert.Equal(t, "me=alice", a.Body.String())
	assert.Equal(t, "me=bob", b.Body.String(), "bob was served alice's answer")
	assert.Equal(t, 2, up.count())

	// With PerSubject, each user gets a cache of their own.
	up2 := newRecorder(t, up.handler)
	c2 := cache.MustNew(cache.Options{PerSubject: true})
	t.Cleanup(func() { c2.Close() })
	s2 := newStack(t, pylon.Options{})
	s2.gw.Group("/api", s2.auth()).Route("GET /me").Use(c2.Middleware).To(backendFor(t, "users2", up2))
	require.NoError(t, s2.gw.Err())
	for _, u := range []string{"alice", "bob", "alice", "bob"} {
		rec := serve(s2.gw, "192.0.2.1:1", "GET", "/api/me", "Authorization: Bearer "+s2.token(u))
		assert.Equal(t, "me="+u, rec.Body.String())
	}
	assert.Equal(t, 2, up2.count(), "one fill per subject")
}

// Item 3, the wrong way: a cache before authentication is refused at
// configuration time, and if served anyway it stores nothing that the
// authentication after it admitted.
func TestCompositionCacheBeforeAuth(t *testing.T) {
	up := newRecorder(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=60")
		fmt.Fprintf(w, "secret for %s", r.Header.Get("X-User-Id"))
	})
	for _, where := range []string{"global", "group", "route"} {
		t.Run(where, func(t *testing.T) {
			s := newStack(t, pylon.Options{})
			c := cache.MustNew(cache.Options{})
			t.Cleanup(func() { c.Close() })
			b := backendFor(t, "users-"+where, up)
			switch where {
			case "global":
				s.gw.Use(c.Middleware)
				s.gw.Group("/api", s.auth()).Route("GET /me").To(b)
			case "group":
				s.gw.Group("/api", c.Middleware, s.auth()).Route("GET /me").To(b)
			case "route":
				s.gw.Route("GET /api/me").Use(c.Middleware, s.auth()).To(b)
			}
			err := s.gw.Err()
			require.Error(t, err)
			assert.Contains(t, err.Error(), "cache runs before jwtauth.Require")

			// Served anyway: the anonymous request is never answered from
			// what alice's request fetched.
			before := up.count()
			a := serve(s.gw, "192.0.2.1:1", "GET", "/api/me", "Authorization: Bearer "+s.token("alice"))
			require.Equal(t, http.StatusOK, a.Code)
			anon := serve(s.gw, "192.0.2.9:1", "GET", "/api/me")
			assert.Equal(t, http.StatusUnauthorized, anon.Code, "a request that never passed auth got %q", anon.Body.String())
			assert.Equal(t, before+1, up.count())
		})
	}
	// API keys are authentication too.
	s := newStack(t, pylon.Options{})
	c := cache.MustNew(cache.Options{})
	t.Cleanup(func() { c.Close() })
	keys := apikey.Require(func(_ context.Context, key string) (string, bool, error) { return "svc", key == "k1", nil })
	s.gw.Route("GET /api/me").Use(c.Middleware, keys).To(backendFor(t, "users-apikey", up))
	require.ErrorContains(t, s.gw.Err(), "cache runs before apikey.Require")
}

// Item 4: the cache keys on the scheme the upstream is sent, never on a
// forwarding header an untrusted client controls.
func TestCompositionCacheCannotBePoisonedThroughForwardedProto(t *testing.T) {
	up := newRecorder(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=600")
		if r.Header.Get("X-Forwarded-Proto") != "https" {
			w.Header().Set("Location", "https://shop.example"+r.URL.Path)
			w.WriteHeader(http.StatusMovedPermanently)
			return
		}
		io.WriteString(w, "welcome")
	})
	c := cache.MustNew(cache.Options{})
	t.Cleanup(func() { c.Close() })
	gw := pylon.New(pylon.Options{Trust: pylon.Trust{Proxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}})
	gw.Route("GET /home").Use(c.Middleware).To(backendFor(t, "web", up))
	require.NoError(t, gw.Err())

	// The attacker, untrusted, claims https: the upstream is told http and
	// redirects; that answer is stored under the http key only.
	att := serve(gw, "198.51.100.9:1", "GET", "http://shop.example/home", "X-Forwarded-Proto: https")
	assert.Equal(t, http.StatusMovedPermanently, att.Code)
	// Users behind the trusted TLS proxy get the page, not a redirect loop.
	for i := 0; i < 2; i++ {
		v := serve(gw, "10.0.0.1:1", "GET", "http://shop.example/home", "X-Forwarded-Proto: https")
		assert.Equal(t, http.StatusOK, v.Code)
		assert.Equal(t, "welcome", v.Body.String())
	}
	assert.Equal(t, 2, up.count(), "one fill for each decided scheme")
}

// Item 5: a per-subject limit after auth gives each user a budget; before
// auth it is a configuration error, and never one global bucket.
func TestCompositionPerSubjectLimit(t *testing.T) {
	users := []string{"alice", "bob", "carol", "dave"}
	up := newRecorder(t, nil)

	s := newStack(t, pylon.Options{})
	s.gw.Group("/api", s.auth()).Route("GET /orders").
		Use(ratelimit.MustNew(ratelimit.BySubject, ratelimit.PerMinute(1))).
		To(backendFor(t, "orders", up))
	require.NoError(t, s.gw.Err())
	for _, u := range users {
		rec := serve(s.gw, "192.0.2.1:1", "GET", "/api/orders", "Authorization: Bearer "+s.token(u))
		assert.Equal(t, http.StatusOK, rec.Code, u)
	}
	rec := serve(s.gw, "192.0.2.1:1", "GET", "/api/orders", "Authorization: Bearer "+s.token("alice"))
	assert.Equal(t, http.StatusTooManyRequests, rec.Code, "alice's second request")

	for _, wrong := range []string{"global", "group", "route"} {
		t.Run(wrong, func(t *testing.T) {
			s := newStack(t, pylon.Options{})
			limit := ratelimit.MustNew(ratelimit.BySubject, ratelimit.PerMinute(2))
			b := backendFor(t, "orders-"+wrong, up)
			switch wrong {
			case "global":
				s.gw.Use(limit)
				s.gw.Group("/api", s.auth()).Route("GET /orders").To(b)
			case "group":
				s.gw.Group("/api", limit, s.auth()).Route("GET /orders").To(b)
			case "route":
				s.gw.Route("GET /api/orders").Use(limit, s.auth()).To(b)
			}
			err := s.gw.Err()
			require.Error(t, err)
			assert.Contains(t, err.Error(), "ratelimit (keyed by subject) runs before jwtauth.Require")
			// Served anyway, requests without a subject are refused, not
			// pooled: never 200 200 429 429.
			for _, u := range users {
				rec := serve(s.gw, "192.0.2.1:1", "GET", "/api/orders", "Authorization: Bearer "+s.token(u))
				assert.Equal(t, http.StatusUnauthorized, rec.Code, u)
			}
		})
	}
	// A composed key that includes the subject needs it too.
	s3 := newStack(t, pylon.Options{})
	s3.gw.Route("GET /api/orders").
		Use(ratelimit.MustNew(ratelimit.Compose(ratelimit.ByRoute, ratelimit.BySubject), ratelimit.PerMinute(2)), s3.auth()).
		To(backendFor(t, "orders-composed", up))
	require.ErrorContains(t, s3.gw.Err(), "runs before jwtauth.Require")
	// A key that does not need a subject may run anywhere.
	s4 := newStack(t, pylon.Options{})
	s4.gw.Route("GET /api/orders").Use(ratelimit.MustNew(ratelimit.ByIP, ratelimit.PerMinute(2)), s4.auth()).
		To(backendFor(t, "orders-ip", up))
	require.NoError(t, s4.gw.Err())
}

// The README's whole stack in its documented order: each guarantee holds
// together, over loopback, with a breaker and an aggregation beside the
// proxied route.
func TestCompositionReadmeStack(t *testing.T) {
	orders := newRecorder(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "max-age=60")
		fmt.Fprintf(w, `{"id":%q,"user":%q}`, strings.TrimPrefix(r.URL.Path, "/api/orders/"), r.Header.Get("X-User-Id"))
	})
	payments := newRecorder(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"paid":true}`)
	})
	ob := backendFor(t, "orders", orders)
	pb := backendFor(t, "payments", payments)
	s := newStack(t, pylon.Options{Trust: pylon.Trust{Proxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}})
	br := breaker.MustNew(breaker.Settings{Name: "orders"})
	c := cache.MustNew(cache.Options{})
	t.Cleanup(func() { c.Close() })
	api := s.gw.Group("/api", s.auth())
	api.Route("GET /orders/{id}").
		Use(ratelimit.MustNew(ratelimit.BySubject, ratelimit.PerMinute(3)), br.Middleware, c.Middleware).
		Timeout(2 * time.Second).
		To(ob)
	api.Route("GET /orders/{id}/summary").Handler(aggregate.MustNew(
		aggregate.Get("order", ob, "/orders/{id}"),
		aggregate.Get("payment", pb, "/payments/{id}").Optional(),
	))
	require.NoError(t, s.gw.Err())
	front := httptest.NewServer(s.gw)
	t.Cleanup(front.Close)

	get := func(path, sub string, hdr ...string) *http.Response {
		req, _ := http.NewRequest("GET", front.URL+path, nil)
		if sub != "" {
			req.Header.Set("Authorization", "Bearer "+s.token(sub))
		}
		for _, h := range hdr {
			k, v, _ := strings.Cut(h, ":")
			req.Header.Set(k, strings.TrimSpace(v))
		}
		res, err := front.Client().Do(req)
		require.NoError(t, err)
		t.Cleanup(func() { res.Body.Close() })
		return res
	}
	body := func(res *http.Response) string {
		b, _ := io.ReadAll(res.Body)
		return string(b)
	}

	assert.Equal(t, http.StatusUnauthorized, get("/api/orders/7", "").StatusCode)
	a := get("/api/orders/7", "alice", "X-Forwarded-For: 203.0.113.5", "Connection: X-User-Id")
	assert.Equal(t, http.StatusOK, a.StatusCode)
	assert.JSONEq(t, `{"id":"7","user":"alice"}`, body(a))
	assert.Equal(t, "203.0.113.5, 127.0.0.1", orders.last(t).Header.Get("X-Forwarded-For"))
	b := get("/api/orders/7", "bob")
	assert.JSONEq(t, `{"id":"7","user":"bob"}`, body(b), "bob got another user's cached answer")
	sum := get("/api/orders/7/summary", "carol")
	assert.Equal(t, http.StatusOK, sum.StatusCode)
	assert.Contains(t, body(sum), `"paid":true`)
	for i := 0; i < 3; i++ {
		get("/api/orders/8", "dave")
	}
	assert.Equal(t, http.StatusTooManyRequests, get("/api/orders/9", "dave").StatusCode)
	assert.Equal(t, http.StatusOK, get("/api/orders/9", "erin").StatusCode, "another user's budget is their own")

	var ips []any
	for _, l := range s.logs.lines() {
		ips = append(ips, l["client_ip"])
	}
	assert.Contains(t, ips, "203.0.113.5", "the access log sees the client the trusted proxy named")
}

// Item 9: the path policy refuses path parameters, and can match case
// insensitively for upstreams that fold case.
func TestCompositionPathPolicy(t *testing.T) {
	admin := newRecorder(t, nil)
	public := newRecorder(t, nil)
	build := func(opts pylon.Options) *stack {
		s := newStack(t, opts)
		s.gw.Group("/admin", s.auth()).Route("GET /{rest...}").To(backendFor(t, "admin", admin))
		s.gw.Route("GET /{path...}").To(backendFor(t, "public", public))
		require.NoError(t, s.gw.Err())
		return s
	}
	s := build(pylon.Options{})
	for _, p := range []string{"/admin;/x", "/public/..;/admin/users", "/admin;jsessionid=1/users"} {
		rec := serve(s.gw, "192.0.2.1:1", "GET", p)
		assert.Equal(t, http.StatusBadRequest, rec.Code, p)
		assert.Equal(t, "application/problem+json", rec.Header().Get("Content-Type"))
	}
	assert.Equal(t, 0, public.count()+admin.count(), "no refused path reached an upstream")
	// Case-sensitive by default: "/ADMIN/users" is not the admin group.
	assert.Equal(t, http.StatusOK, serve(s.gw, "192.0.2.1:1", "GET", "/ADMIN/users").Code)

	ci := build(pylon.Options{CaseInsensitivePaths: true})
	for _, p := range []string{"/ADMIN/users", "/Admin/users", "/aDmIn/users"} {
		assert.Equal(t, http.StatusUnauthorized, serve(ci.gw, "192.0.2.1:1", "GET", p).Code, p)
	}
	rec := serve(ci.gw, "192.0.2.1:1", "GET", "/ADMIN/Users/Mixed%20Case", "Authorization: Bearer "+ci.token("root"))
	assert.Equal(t, http.StatusOK, rec.Code)
	assert.Equal(t, "/ADMIN/Users/Mixed%20Case", admin.last(t).Path, "forwarded as the client wrote it")

	// Path parameters may be allowed.
	pp := build(pylon.Options{AllowPathParameters: true})
	assert.Equal(t, http.StatusOK, serve(pp.gw, "192.0.2.1:1", "GET", "/public;v=1").Code)

	// With case-insensitive paths, an upper-case pattern is a mistake.
	bad := pylon.New(pylon.Options{CaseInsensitivePaths: true})
	bad.Route("GET /Admin").To(backendFor(t, "x", admin))
	require.ErrorContains(t, bad.Err(), "lower case")
}

// The pieces added after the README stack — idempotency keys, per-client
// concurrency, Basic and external authorization, client certificates —
// composed with authentication in the orders users will try: every order
// that would act on a request before knowing who sent it is a
// configuration error naming both stages, and the right orders are not.
func TestCompositionNewPiecesOrder(t *testing.T) {
	s := newStack(t, pylon.Options{})
	basic := basicauth.Require(func(_ context.Context, user, pass string) (bool, error) { return pass == "pw", nil })
	authz, err := extauthz.New(extauthz.Options{URL: "http://authz.invalid/check"})
	require.NoError(t, err)
	idem := func() pylon.Middleware { return idempotency.New(idempotency.Options{}) }
	perSubject := func() pylon.Middleware {
		return overload.MustNewPerClient(overload.ClientOptions{Key: ratelimit.BySubject, MaxInFlight: 2}).Middleware
	}
	perIP := func() pylon.Middleware {
		return overload.MustNewPerClient(overload.ClientOptions{Key: ratelimit.ByIP, MaxInFlight: 2}).Middleware
	}
	cached := func() pylon.Middleware {
		c := cache.MustNew(cache.Options{})
		t.Cleanup(func() { c.Close() })
		return c.Middleware
	}
	cases := []struct {
		name  string
		chain []pylon.Middleware
		err   string // "" when the order is right
	}{
		{"idempotency after jwtauth", []pylon.Middleware{s.auth(), idem()}, ""},
		{"idempotency before jwtauth", []pylon.Middleware{idem(), s.auth()}, "idempotency runs before jwtauth.Require"},
		{"idempotency between mtls and jwtauth", []pylon.Middleware{mtls.Identify, idem(), s.auth()}, "idempotency runs before jwtauth.Require"},
		{"idempotency after basicauth", []pylon.Middleware{basic, idem()}, ""},
		{"per-subject concurrency before jwtauth", []pylon.Middleware{perSubject(), s.auth()}, "runs before jwtauth.Require"},
		{"per-subject concurrency after jwtauth", []pylon.Middleware{s.auth(), perSubject()}, ""},
		{"per-IP concurrency before jwtauth", []pylon.Middleware{perIP(), s.auth()}, ""},
		{"cache before basicauth", []pylon.Middleware{cached(), basic}, "cache runs before basicauth"},
		{"cache after basicauth", []pylon.Middleware{basic, cached()}, ""},
		{"cache before extauthz", []pylon.Middleware{cached(), authz}, "cache runs before extauthz"},
		{"cache after extauthz", []pylon.Middleware{authz, cached()}, ""},
		{"cache between mtls and jwtauth", []pylon.Middleware{mtls.Identify, cached(), s.auth()}, "cache runs before jwtauth.Require"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			gw := pylon.New(pylon.Options{})
			gw.Route(fmt.Sprintf("POST /r%d", i)).Use(tc.chain...).Handler(http.NotFoundHandler())
			if tc.err == "" {
				assert.NoError(t, gw.Err())
			} else {
				assert.ErrorContains(t, gw.Err(), tc.err)
			}
		})
	}
}

// Idempotency keys after authentication belong to their subject: bob
// sending alice's key gets his own answer, alice's repeat gets hers again.
func TestCompositionIdempotencyKeysPerSubject(t *testing.T) {
	up := newRecorder(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, "order for %s", r.Header.Get("X-User-Id"))
	})
	s := newStack(t, pylon.Options{})
	s.gw.Group("/api", s.auth()).Route("POST /orders").
		Use(idempotency.New(idempotency.Options{Required: true})).To(backendFor(t, "orders", up))
	require.NoError(t, s.gw.Err())
	post := func(user string) *httptest.ResponseRecorder {
		return serve(s.gw, "192.0.2.1:1", "POST", "/api/orders",
			"Authorization: Bearer "+s.token(user), `Idempotency-Key: "k-1"`)
	}
	a1, b1, a2 := post("alice"), post("bob"), post("alice")
	assert.Equal(t, "order for alice", a1.Body.String())
	assert.Equal(t, "order for bob", b1.Body.String(), "bob was answered from alice's key")
	assert.Empty(t, b1.Header().Get("Idempotent-Replayed"))
	assert.Equal(t, "order for alice", a2.Body.String())
	assert.Equal(t, "true", a2.Header().Get("Idempotent-Replayed"))
	assert.Equal(t, 2, up.count())
}

// A token without "sub" authenticates its client without naming it: the
// idempotency middleware cannot tell two such clients apart, so it keeps
// out of the way (neither replays nor stores) instead of answering bank-b
// from bank-a's key. Each order runs, and each client gets its own answer.
func TestCompositionIdempotencyWithoutSubject(t *testing.T) {
	up := newRecorder(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, "order for %s", r.Header.Get("X-Client"))
	})
	idp, v := newIdP(t)
	auth := jwtauth.RequireWithOptions(v, jwtauth.RequireOptions{
		ForwardClaims: map[string]string{"X-Client": "client_id"},
		Logger:        slog.New(slog.DiscardHandler),
	})
	gw := pylon.New(pylon.Options{})
	gw.Group("/api", auth).Route("POST /orders").
		Use(idempotency.New(idempotency.Options{Logger: slog.New(slog.DiscardHandler)})).To(backendFor(t, "orders", up))
	require.NoError(t, gw.Err())
	post := func(client string) *httptest.ResponseRecorder {
		tok := idp.MintToken(jwttest.Token{Claims: map[string]any{"sub": nil, "client_id": client}})
		return serve(gw, "192.0.2.1:1", "POST", "/api/orders", "Authorization: Bearer "+tok, `Idempotency-Key: "k-1"`)
	}
	a, b := post("bank-a"), post("bank-b")
	assert.Equal(t, http.StatusCreated, a.Code)
	assert.Equal(t, "order for bank-a", a.Body.String())
	assert.Equal(t, "order for bank-b", b.Body.String(), "bank-b was replayed bank-a's answer")
	assert.Empty(t, b.Header().Get("Idempotent-Replayed"))
	assert.Equal(t, 2, up.count())
}

// A "sub" is unique only within its issuer (OpenID Connect Core §5.7): behind
// a jwtauth.Multi, two issuers' equal subjects are two clients to the rate
// limit, the per-subject cache and the idempotency keys, while a single
// issuer's subjects keep their unscoped keys.
func TestCompositionMultiIssuerSubjectsAreTwoClients(t *testing.T) {
	var verifiers []*jwtauth.Verifier
	var idps []*jwttest.Issuer
	for range 2 {
		idp, v := newIdP(t)
		idps, verifiers = append(idps, idp), append(verifiers, v)
	}
	multi, err := jwtauth.NewMulti(verifiers...)
	require.NoError(t, err)
	auth := jwtauth.RequireWithOptions(multi, jwtauth.RequireOptions{
		ForwardClaims: map[string]string{"X-User-Id": "sub", "X-User-Iss": "iss"},
		Logger:        slog.New(slog.DiscardHandler),
	})
	up := newRecorder(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			w.Header().Set("Cache-Control", "private, max-age=60")
		} else {
			w.WriteHeader(http.StatusCreated)
		}
		fmt.Fprintf(w, "%s of %s", r.Header.Get("X-User-Id"), r.Header.Get("X-User-Iss"))
	})
	logs := &syncBuffer{}
	gw := pylon.New(pylon.Options{})
	gw.Use(middleware.AccessLog(slog.New(slog.NewJSONHandler(logs, nil))))
	c := cache.MustNew(cache.Options{PerSubject: true})
	t.Cleanup(func() { c.Close() })
	api := gw.Group("/api", auth)
	be := backendFor(t, "users", up)
	api.Route("GET /me").Use(c.Middleware).To(be)
	api.Route("GET /orders").Use(ratelimit.MustNew(ratelimit.BySubject, ratelimit.PerMinute(1))).To(be)
	api.Route("POST /orders").Use(idempotency.New(idempotency.Options{Required: true})).To(be)
	require.NoError(t, gw.Err())

	token := func(i int) string { return "Authorization: Bearer " + idps[i].Mint(map[string]any{"sub": "alice"}) }
	want := func(i int) string { return "alice of " + idps[i].URL }

	// The per-subject cache: each issuer's alice is filled once, and
	// served her own answer after.
	for _, i := range []int{0, 1, 0, 1} {
		rec := serve(gw, "192.0.2.1:1", "GET", "/api/me", token(i))
		assert.Equal(t, want(i), rec.Body.String(), "issuer %d's alice", i)
	}
	assert.Equal(t, 2, up.count(), "one fill per (issuer, subject)")

	// The rate limit: one request a minute for each of them.
	for _, i := range []int{0, 1} {
		assert.Equal(t, http.StatusOK, serve(gw, "192.0.2.1:1", "GET", "/api/orders", token(i)).Code, "issuer %d's alice", i)
	}
	for _, i := range []int{0, 1} {
		assert.Equal(t, http.StatusTooManyRequests, serve(gw, "192.0.2.1:1", "GET", "/api/orders", token(i)).Code, "issuer %d's alice again", i)
	}

	// The idempotency key: the second issuer's alice is not answered
	// from the first one's.
	post := func(i int) *httptest.ResponseRecorder {
		return serve(gw, "192.0.2.1:1", "POST", "/api/orders", token(i), `Idempotency-Key: "k-1"`)
	}
	a, b, a2 := post(0), post(1), post(0)
	assert.Equal(t, want(0), a.Body.String())
	assert.Equal(t, want(1), b.Body.String(), "issuer 1's alice got issuer 0's answer")
	assert.Empty(t, b.Header().Get("Idempotent-Replayed"))
	assert.Equal(t, "true", a2.Header().Get("Idempotent-Replayed"))

	// The access log names the scope beside the subject.
	scopes := map[any]bool{}
	for _, l := range logs.lines() {
		if l["subject"] == "alice" {
			scopes[l["subject_scope"]] = true
		}
	}
	assert.Equal(t, map[any]bool{idps[0].URL: true, idps[1].URL: true}, scopes)

	// One issuer alone: the subject needs no scope, and its keys are
	// what they were.
	var scope, key string
	one := pylon.New(pylon.Options{})
	one.Route("GET /x").Use(jwtauth.Require(verifiers[0])).Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info := pylon.Info(r.Context())
		scope, key = info.SubjectScope, info.SubjectKey()
	}))
	require.NoError(t, one.Err())
	assert.Equal(t, http.StatusOK, serve(one, "192.0.2.1:1", "GET", "/x", token(0)).Code)
	assert.Equal(t, "", scope)
	assert.Equal(t, "alice", key)
}

// Routes told apart by a header (Backend-for-Frontend by client type) answer
// with Vary naming it, so a cache on them, or a CDN in front, keeps each
// client type's answer apart.
func TestCompositionHeaderRoutesVary(t *testing.T) {
	answer := func(who string) *recorder {
		return newRecorder(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cache-Control", "public, max-age=60")
			w.Header().Set("Vary", "Accept-Language")
			fmt.Fprint(w, who)
		})
	}
	web, mobile := answer("web"), answer("mobile")
	c := cache.MustNew(cache.Options{})
	t.Cleanup(func() { c.Close() })
	gw := pylon.New(pylon.Options{})
	gw.Route("GET /home").Header("X-Client", "mobile").Use(c.Middleware).To(backendFor(t, "mobile", mobile))
	gw.Route("GET /home").Use(c.Middleware).To(backendFor(t, "web", web))
	require.NoError(t, gw.Err())
	for _, client := range []string{"", "mobile", "", "mobile"} {
		var hdr []string
		want := "web"
		if client != "" {
			hdr, want = []string{"X-Client: " + client}, client
		}
		rec := serve(gw, "192.0.2.1:1", "GET", "/home", hdr...)
		assert.Equal(t, want, rec.Body.String(), "X-Client %q got another client type's answer (%s)", client, rec.Header().Get("Cache-Status"))
		vary := rec.Header().Values("Vary")
		assert.True(t, slices.Contains(vary, "X-Client") && slices.Contains(vary, "Accept-Language"), "Vary %q", vary)
	}
	assert.Equal(t, 1, web.count(), "web filled once")
	assert.Equal(t, 1, mobile.count(), "mobile filled once")

	// A pattern without header matchers gets no Vary of the gateway's.
	plain := pylon.New(pylon.Options{})
	plain.Route("GET /x").Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	require.NoError(t, plain.Err())
	assert.Empty(t, serve(plain, "192.0.2.1:1", "GET", "/x").Header().Values("Vary"))
}

// A header condition on a pattern no other route shares tells no routes
// apart: no Vary of the gateway's.
func TestCompositionSingleHeaderRouteNoVary(t *testing.T) {
	gw := pylon.New(pylon.Options{})
	gw.Route("GET /v2").Header("X-Version", "2").Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	require.NoError(t, gw.Err())
	assert.Empty(t, serve(gw, "192.0.2.1:1", "GET", "/v2", "X-Version: 2").Header().Values("Vary"))
}
