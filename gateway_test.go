package pylon

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// echo answers with the route name and the path the target saw.
func echo(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s %s", name, r.URL.Path, r.URL.RawPath)
	})
}

func serve(g *Gateway, method, target string, hdr ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, target, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	g.ServeHTTP(rec, req)
	return rec
}

func TestRouting(t *testing.T) {
	g := New(Options{})
	g.Route("GET /orders/{id}").Handler(echo("order"))
	g.Route("GET /items/{id}").Header("X-Api-Version", "2").Handler(echo("items-v2"))
	g.Route("GET /items/{id}").Handler(echo("items-v1"))
	g.Route("GET /search").Query("beta", "").Handler(echo("search-beta"))
	g.Route("GET /search").Query("v", "a b").Handler(echo("search-ab"))
	g.Route("GET /search").Handler(echo("search"))
	g.Route("POST /orders").Handler(echo("create"))
	g.Route("api.example.com/").Handler(echo("api-host"))
	g.Route("GET /files/{rest...}").Handler(echo("files"))
	require.NoError(t, g.Err())

	tests := []struct {
		method, target string
		hdr            []string
		status         int
		body           string
		allow          string
	}{
		{"GET", "/orders/42", nil, 200, "order /orders/42 ", ""},
		{"HEAD", "/orders/42", nil, 200, "order /orders/42 ", ""},
		{"GET", "/items/1", []string{"X-Api-Version", "2"}, 200, "items-v2 /items/1 ", ""},
		{"GET", "/items/1", []string{"X-Api-Version", "3"}, 200, "items-v1 /items/1 ", ""},
		{"GET", "/items/1", nil, 200, "items-v1 /items/1 ", ""},
		{"GET", "/search?beta", nil, 200, "search-beta /search ", ""},
		{"GET", "/search?v=a+b", nil, 200, "search-ab /search ", ""},
		{"GET", "/search?v=a%20b", nil, 200, "search-ab /search ", ""},
		{"GET", "/search?v=c", nil, 200, "search /search ", ""},
		{"GET", "http://api.example.com/anything", nil, 200, "api-host /anything ", ""},
		{"GET", "/files/a/b/c.txt", nil, 200, "files /files/a/b/c.txt ", ""},
		{"GET", "/nope", nil, 404, "", ""},
		{"DELETE", "/orders/42", nil, 405, "", "GET, HEAD"},
		{"GET", "/orders", nil, 405, "", "POST"},
	}
	for _, tc := range tests {
		t.Run(tc.method+" "+tc.target, func(t *testing.T) {
			rec := serve(g, tc.method, tc.target, tc.hdr...)
			assert.Equal(t, tc.status, rec.Code)
			if tc.status >= 400 {
				assert.Equal(t, ProblemContentType, rec.Header().Get("Content-Type"))
				assert.Contains(t, rec.Body.String(), fmt.Sprintf(`"status":%d`, tc.status))
				assert.Equal(t, tc.allow, rec.Header().Get("Allow"))
				return
			}
			assert.Equal(t, tc.body, rec.Body.String())
		})
	}
}

func TestMatchersRefusingAllIs404(t *testing.T) {
	g := New(Options{})
	g.Route("GET /v").Header("X-Version", "2").Handler(echo("v2"))
	require.NoError(t, g.Err())
	rec := serve(g, "GET", "/v")
	assert.Equal(t, 404, rec.Code)
	assert.Empty(t, rec.Header().Get("Allow"))
}

func TestGroups(t *testing.T) {
	var order []string
	mark := func(s string) Middleware {
		return func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				order = append(order, s)
				next.ServeHTTP(w, r)
			})
		}
	}
	g := New(Options{})
	g.Use(mark("global"))
	api := g.Group("/api", mark("api"))
	v1 := api.Group("/v1/", mark("v1"))
	v1.Route("GET /orders/{id}").Use(mark("route")).Handler(echo("o"))
	require.NoError(t, g.Err())

	rec := serve(g, "GET", "/api/v1/orders/7")
	require.Equal(t, 200, rec.Code)
	assert.Equal(t, "o /api/v1/orders/7 ", rec.Body.String())
	assert.Equal(t, []string{"global", "api", "v1", "route"}, order)

	routes := g.Routes()
	require.Len(t, routes, 1)
	assert.Equal(t, RouteEntry{
		Name: "GET /api/v1/orders/{id}", Pattern: "GET /api/v1/orders/{id}",
		Target: "handler http.HandlerFunc", Middleware: 3,
	}, routes[0])
}

func TestRoutesTable(t *testing.T) {
	b := MustNewBackend("orders", BackendOptions{Targets: []string{"http://127.0.0.1:1"}})
	defer b.Close()
	g := New(Options{})
	g.Route("GET /orders/{id}").Name("order").Header("X-V", "2").Query("q", "").Timeout(3e9).To(b)
	require.NoError(t, g.Err())
	assert.Equal(t, []RouteEntry{{
		Name: "order", Pattern: "GET /orders/{id}", Matchers: []string{"header X-V=2", "query q"},
		Target: "backend orders", Timeout: 3e9,
	}}, g.Routes())
}

func TestConfigErrors(t *testing.T) {
	h := echo("x")
	tests := []struct {
		name  string
		build func(g *Gateway)
		want  string
	}{
		{"same pattern twice", func(g *Gateway) {
			g.Route("GET /a").Handler(h)
			g.Route("GET /a").Name("second").Handler(h)
		}, `route "second": pattern "GET /a" is already routed by "GET /a"`},
		{"same matchers twice", func(g *Gateway) {
			g.Route("GET /a").Header("X", "1").Handler(h)
			g.Route("GET /a").Name("dup").Header("X", "1").Handler(h)
		}, `route "dup": pattern "GET /a" with the same matchers`},
		{"conflicting patterns", func(g *Gateway) {
			g.Route("GET /a/{x}").Handler(h)
			g.Route("GET /{y}/b").Name("clash").Handler(h)
		}, `route "clash": pattern "GET /{y}/b"`},
		{"invalid pattern", func(g *Gateway) {
			g.Route("GET /a/{x").Name("broken").Handler(h)
		}, `route "broken"`},
		{"no target", func(g *Gateway) {
			g.Route("GET /lonely")
		}, `route "GET /lonely": no target`},
		{"duplicate name", func(g *Gateway) {
			g.Route("GET /a").Name("n").Handler(h)
			g.Route("GET /b").Name("n").Handler(h)
		}, `name "n" is already used`},
		{"rewrite unknown wildcard", func(g *Gateway) {
			g.Route("GET /v2/items/{id}").Rewrite("/items/{nope}").Handler(h)
		}, `Rewrite "/items/{nope}": wildcard {nope} is not in the route's pattern`},
		{"strip prefix not a prefix", func(g *Gateway) {
			g.Route("GET /api/x").StripPrefix("/other").Handler(h)
		}, `StripPrefix "/other" is not a prefix`},
		{"strip prefix mid-segment", func(g *Gateway) {
			g.Route("GET /apix/y").StripPrefix("/api").Handler(h)
		}, `StripPrefix "/api" is not a prefix`},
		{"nil backend", func(g *Gateway) {
			g.Route("GET /a").To(nil)
		}, `route "GET /a": To: nil backend`},
		{"target twice", func(g *Gateway) {
			r := g.Route("GET /a")
			r.Handler(h)
			r.Handler(h)
		}, `target set twice`},
		{"bad group prefix", func(g *Gateway) {
			g.Group("api").Route("GET /a").Handler(h)
		}, `group "api"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := New(Options{})
			tc.build(g)
			err := g.Err()
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestStripPrefixAndRewrite(t *testing.T) {
	g := New(Options{AllowAmbiguousPaths: true})
	g.Route("/shop/").StripPrefix("/shop").Handler(echo("strip"))
	g.Route("GET /v2/items/{id}").Rewrite("/items/{id}").Handler(echo("rw"))
	g.Route("GET /v2/files/{rest...}").Rewrite("/store/{rest}").Handler(echo("rest"))
	require.NoError(t, g.Err())
	tests := []struct{ target, body string }{
		{"/shop/cart", "strip /cart "},
		{"/shop/", "strip / "},
		{"/shop/a%20b/c", "strip /a b/c "},
		{"/shop/a%2Fb/c", "strip /a/b/c /a%2Fb/c"},
		{"/v2/items/42", "rw /items/42 "},
		{"/v2/items/a%2Fb", "rw /items/a/b /items/a%2Fb"},
		{"/v2/files/x/y%20z", "rest /store/x/y z "},
	}
	for _, tc := range tests {
		t.Run(tc.target, func(t *testing.T) {
			rec := serve(g, "GET", tc.target)
			assert.Equal(t, 200, rec.Code)
			assert.Equal(t, tc.body, rec.Body.String())
		})
	}
}

func TestAmbiguousPathsRefused(t *testing.T) {
	g := New(Options{})
	g.Route("/").Handler(echo("any"))
	require.NoError(t, g.Err())
	for _, p := range []string{"/a%2Fb", "/a%2fb", "/a%5Cb", "/a/%2e%2e/b", "/a%00"} {
		rec := serve(g, "GET", p)
		assert.Equal(t, 400, rec.Code, p)
		assert.Equal(t, ProblemContentType, rec.Header().Get("Content-Type"))
	}
	assert.Equal(t, 200, serve(g, "GET", "/a%20b").Code)
}

func TestProblemCarriesRequestID(t *testing.T) {
	g := New(Options{})
	g.Use(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			Info(r.Context()).RequestID = "req-1"
			next.ServeHTTP(w, r)
		})
	})
	rec := serve(g, "GET", "/missing")
	assert.Equal(t, 404, rec.Code)
	assert.Contains(t, rec.Body.String(), `"request_id":"req-1"`)
	assert.Equal(t, "no-store", rec.Header().Get("Cache-Control"))
}

func TestRouteInfoRecorded(t *testing.T) {
	var got RequestInfo
	g := New(Options{})
	g.Route("GET /o/{id}").Name("order").Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = *Info(r.Context())
	}))
	req := httptest.NewRequest("GET", "/o/1", nil)
	req.RemoteAddr = "[::ffff:10.1.2.3]:5555"
	g.ServeHTTP(httptest.NewRecorder(), req)
	assert.Equal(t, "order", got.Route)
	assert.Equal(t, "GET /o/{id}", got.Pattern)
	assert.Equal(t, "10.1.2.3", got.ClientIP.String(), "IPv4-mapped addresses are unmapped")
	assert.False(t, got.Start.IsZero())
}

func TestRouteTimeoutOnHandler(t *testing.T) {
	g := New(Options{})
	g.Route("GET /slow").Timeout(10e6).Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
		io.WriteString(w, r.Context().Err().Error())
	}))
	rec := serve(g, "GET", "/slow")
	assert.True(t, strings.Contains(rec.Body.String(), "deadline"))
}

func TestRequestInfoChild(t *testing.T) {
	parent := &RequestInfo{RequestID: "r1", Route: "x", Subject: "alice", Auth: "jwt", Scheme: "https", Host: "h", Backend: "b", Attempts: 2, PeerTrusted: true}
	c := parent.Child()
	assert.Equal(t, &RequestInfo{RequestID: "r1", Route: "x", Subject: "alice", Auth: "jwt", Scheme: "https", Host: "h", PeerTrusted: true}, c)
}

func TestSubjectKeyTellsEveryScopeApart(t *testing.T) {
	infos := []RequestInfo{
		{Subject: "alice"},
		{Subject: `"alice`},
		{Subject: `""alice`},
		{Subject: "alice", SubjectScope: "https://a.example"},
		{Subject: "alice", SubjectScope: "https://b.example"},
		{Subject: "b.example alice", SubjectScope: "https://a."},
		{Subject: `"alice`, SubjectScope: `"`},
		{Subject: `alice`, SubjectScope: `""`},
		{Subject: `"https://a.example"alice`},
		{Subject: "x", SubjectScope: `x"`},
		{Subject: `"x`, SubjectScope: "x"},
	}
	seen := map[string]RequestInfo{}
	for _, i := range infos {
		k := i.SubjectKey()
		if k == "" {
			t.Fatalf("%+v: empty key", i)
		}
		if prev, dup := seen[k]; dup {
			t.Errorf("%q and %q (scopes %q, %q) share the key %q", prev.Subject, i.Subject, prev.SubjectScope, i.SubjectScope, k)
		}
		seen[k] = i
	}
	if k := (&RequestInfo{Subject: "alice"}).SubjectKey(); k != "alice" {
		t.Errorf("an unscoped subject's key = %q, want the subject", k)
	}
	if k := (&RequestInfo{SubjectScope: "https://a.example"}).SubjectKey(); k != "" {
		t.Errorf("no subject: key %q, want none", k)
	}
	var none *RequestInfo
	if none.SubjectKey() != "" {
		t.Error("a nil RequestInfo has a key")
	}
	child := (&RequestInfo{Subject: "alice", SubjectScope: "https://a.example"}).Child()
	if child.SubjectScope != "https://a.example" {
		t.Errorf("Child dropped the scope: %+v", child)
	}
}
