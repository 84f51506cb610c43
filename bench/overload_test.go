package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
)

// TestOverloadGatewayRoutes: every route of the overload scenario's gateway
// answers through its backend, and the delay upstream counts arrivals.
func TestOverloadGatewayRoutes(t *testing.T) {
	up := httptest.NewServer(delayUpstream(0, 4, 0, 0, 0))
	defer up.Close()
	other := httptest.NewServer(delayUpstream(0, 0, 0, 0, 0))
	defer other.Close()
	gw := httptest.NewServer(overloadGateway(map[string]string{
		"contended": up.URL, "fast": up.URL, "slow": other.URL, "tailed": other.URL,
	}))
	defer gw.Close()
	paths := []string{"/c/none", "/c/adaptive", "/t/none", "/t/pertarget", "/t/perbackend",
		"/h/none", "/h/fixed2", "/h/fixed20", "/h/p95"}
	for _, n := range ovStatic {
		paths = append(paths, "/c/static"+strconv.Itoa(n))
	}
	for _, p := range paths {
		res, err := http.Get(gw.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK || string(body) != "ok" {
			t.Errorf("%s: %d %q", p, res.StatusCode, body)
		}
	}
	total := 0
	for _, u := range []string{up.URL, other.URL} {
		res, err := http.Get(u + "/_count")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		n, _ := strconv.Atoi(string(body))
		total += n
	}
	if total < len(paths) {
		t.Errorf("the upstreams counted %d arrivals for %d requests", total, len(paths))
	}
}
