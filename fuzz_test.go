package pylon

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// FuzzStripPrefix checks that stripping never panics and that the escaped
// and decoded paths it returns always agree.
func FuzzStripPrefix(f *testing.F) {
	for _, s := range []string{"/api/a", "/api/a%2Fb", "/api", "/api%2Fx/y", "/api/%zz", "/api//x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := url.ParseRequestURI(raw)
		if err != nil {
			return
		}
		path, rawPath, ok := stripPrefix(u, "/api")
		if !ok {
			return
		}
		if !strings.HasPrefix(path, "/") {
			t.Fatalf("stripped path %q does not start with /", path)
		}
		if rawPath != "" {
			dec, err := url.PathUnescape(rawPath)
			if err != nil || dec != path {
				t.Fatalf("raw %q decodes to %q, want %q", rawPath, dec, path)
			}
		}
		if !strings.HasSuffix(u.Path, strings.TrimPrefix(path, "/")) {
			t.Fatalf("%q is not a suffix of %q", path, u.Path)
		}
	})
}

// FuzzRouteRewrite sends arbitrary paths through a gateway with rewrite and
// strip routes: no panic, and what the target sees is a consistent URL whose
// wildcard values survived the rewrite unchanged.
func FuzzRouteRewrite(f *testing.F) {
	for _, s := range []string{"/v2/items/42", "/v2/items/a%2Fb", "/v2/files/a/b", "/shop/x%20y", "/v2/items/%E2%82%AC", "/v2/files/..%2f"} {
		f.Add(s)
	}
	var seen *url.URL
	var seenID string
	capture := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen, seenID = r.URL, ""
	})
	g := New(Options{AllowAmbiguousPaths: true})
	g.Route("GET /v2/items/{id}").Rewrite("/items/{id}").Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = r.URL
		seenID = strings.TrimPrefix(r.URL.Path, "/items/")
	}))
	g.Route("GET /v2/files/{rest...}").Rewrite("/store/{rest}").Handler(capture)
	g.Route("/shop/").StripPrefix("/shop").Handler(capture)
	if err := g.Err(); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, p string) {
		u, err := url.ParseRequestURI(p)
		if err != nil || u.Path == "" || u.Path[0] != '/' {
			return
		}
		req := httptest.NewRequest("GET", "http://gw.example"+u.EscapedPath(), nil)
		seen = nil
		var id string
		if strings.HasPrefix(req.URL.Path, "/v2/items/") {
			id = strings.TrimPrefix(req.URL.Path, "/v2/items/")
		}
		rec := httptest.NewRecorder()
		g.ServeHTTP(rec, req)
		if seen == nil {
			return
		}
		if seen.RawPath != "" {
			dec, err := url.PathUnescape(seen.RawPath)
			if err != nil || dec != seen.Path {
				t.Fatalf("inconsistent URL: raw %q path %q", seen.RawPath, seen.Path)
			}
		}
		if seenID != "" && id != "" && !strings.Contains(id, "/") && seenID != id {
			t.Fatalf("wildcard changed: %q -> %q", id, seenID)
		}
	})
}
