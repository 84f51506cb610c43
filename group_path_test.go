package pylon

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestGroupPathPolicy: a group's StripPrefix and RewritePrefix apply to the
// routes started after them, nested groups included; a route's own
// StripPrefix or Rewrite replaces them; Location headers come back under
// the client's prefix in the absolute and relative forms alike.
func TestGroupPathPolicy(t *testing.T) {
	var upURL string
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Path", r.URL.Path)
		switch r.URL.Query().Get("loc") {
		case "abs":
			w.Header().Set("Location", upURL+r.URL.Path+"/next")
		case "root":
			w.Header().Set("Location", r.URL.Path+"/next")
		case "rel":
			w.Header().Set("Location", "next?x=1")
		case "other":
			w.Header().Set("Location", "https://elsewhere.example/x")
		}
		w.WriteHeader(302)
	})
	upURL = up.URL
	b := backend(t, BackendOptions{Targets: []string{up.URL + "/svc"}})

	g := New(Options{})
	api := g.Group("/api").StripPrefix()
	api.Route("GET /orders/{id}").To(b)
	api.Group("/v2").Route("GET /items/{id}").To(b)          // parent's prefix, "/api", is stripped
	api.Route("GET /legacy/{id}").Rewrite("/old/{id}").To(b) // the route's own Rewrite wins
	api.Route("GET /keep/{id}").StripPrefix("/api/keep").To(b)
	v1 := g.Group("/public/v1").RewritePrefix("/internal/v1")
	v1.Route("GET /users/{id}").To(b)
	g.Route("GET /plain/{id}").To(b) // no group: the path as it is
	require.NoError(t, g.Err())
	gw := httptest.NewServer(g)
	defer gw.Close()
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(path string) *http.Response {
		t.Helper()
		res, err := client.Get(gw.URL + path)
		require.NoError(t, err)
		res.Body.Close()
		return res
	}

	for path, want := range map[string]string{
		"/api/orders/1":      "/svc/orders/1",
		"/api/v2/items/2":    "/svc/v2/items/2",
		"/api/legacy/3":      "/svc/old/3",
		"/api/keep/4":        "/svc/4",
		"/public/v1/users/5": "/svc/internal/v1/users/5",
		"/plain/6":           "/svc/plain/6",
	} {
		assert.Equal(t, want, get(path).Header.Get("X-Path"), path)
	}

	for _, tc := range []struct{ path, want string }{
		{"/api/orders/1?loc=abs", gw.URL + "/api/orders/1/next"},
		{"/api/orders/1?loc=root", "/api/orders/1/next"},
		{"/api/orders/1?loc=rel", "/api/orders/next?x=1"},
		{"/public/v1/users/5?loc=abs", gw.URL + "/public/v1/users/5/next"},
		{"/public/v1/users/5?loc=root", "/public/v1/users/5/next"},
		{"/public/v1/users/5?loc=rel", "/public/v1/users/next?x=1"},
		{"/plain/6?loc=root", "/plain/6/next"},
		{"/api/orders/1?loc=other", "https://elsewhere.example/x"},
	} {
		assert.Equal(t, tc.want, get(tc.path).Header.Get("Location"), tc.path)
	}
}

func TestGroupRewritePrefixRefusesRelative(t *testing.T) {
	g := New(Options{})
	g.Group("/a").RewritePrefix("b").Route("GET /x").Handler(http.NotFoundHandler())
	require.ErrorContains(t, g.Err(), `RewritePrefix "b" must start with '/'`)
}

func TestRewriteLocationForms(t *testing.T) {
	target, _ := url.Parse("http://up:8080/svc/orders/1")
	base, _ := url.Parse("http://up:8080/svc")
	r := httptest.NewRequest("GET", "http://gw.example/api/orders/1", nil)
	info := &RequestInfo{strippedPrefix: "/api"}
	for loc, want := range map[string]string{
		"http://up:8080/svc/orders/2":  "http://gw.example/api/orders/2",
		"//up:8080/svc/orders/2":       "http://gw.example/api/orders/2",
		"/svc/orders/2":                "/api/orders/2",
		"2":                            "/api/orders/2",
		"../carts/9#top":               "/api/carts/9#top",
		"?page=2":                      "",
		"http://other:8080/svc/x":      "",
		"mailto:ops@example.com":       "",
		"http://up:8080/svcx/orders/2": "http://gw.example/api/svcx/orders/2",
	} {
		got, ok := rewriteLocation(loc, target, base, r, info)
		if want == "" {
			assert.False(t, ok, loc)
			continue
		}
		assert.True(t, ok, loc)
		assert.Equal(t, want, got, loc)
	}
}

// TestRewritePrefixLocationOutsidePrefix: behind a group's RewritePrefix, a
// Location under the prefix the gateway added comes back under the group's
// prefix; one outside it (at a segment boundary) is no path of the group
// and keeps its path, in the absolute and relative forms alike.
func TestRewritePrefixLocationOutsidePrefix(t *testing.T) {
	var upURL string
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		loc := r.URL.Query().Get("loc")
		if abs, ok := strings.CutPrefix(loc, "UP"); ok {
			loc = upURL + abs
		}
		w.Header().Set("Location", loc)
		w.WriteHeader(http.StatusFound)
	})
	upURL = up.URL
	b := backend(t, BackendOptions{Targets: []string{up.URL}})
	g := New(Options{})
	g.Group("/api").Group("/v1").RewritePrefix("/v1").Route("GET /orders/{id}").To(b)
	require.NoError(t, g.Err())
	gw := httptest.NewServer(g)
	defer gw.Close()
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, tc := range []struct{ loc, want string }{
		{"/v1/orders/43", "/api/v1/orders/43"},
		{"/v1", "/api/v1"},
		{"43", "/api/v1/orders/43"},
		{"UP/v1/orders/44", gw.URL + "/api/v1/orders/44"},
		{"/other", "/other"},
		{"/v1x/orders", "/v1x/orders"},
		{"../../other", "/other"},
		{"UP/other", gw.URL + "/other"},
	} {
		res, err := client.Get(gw.URL + "/api/v1/orders/42?loc=" + url.QueryEscape(tc.loc))
		require.NoError(t, err)
		res.Body.Close()
		assert.Equal(t, http.StatusFound, res.StatusCode, tc.loc)
		assert.Equal(t, tc.want, res.Header.Get("Location"), tc.loc)
	}
}
