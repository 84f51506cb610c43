package apikey

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/pylon-gateway/pylon"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func TestStatic(t *testing.T) {
	lookup := Static(map[string]string{"k-alice": "alice", "k-bob": "bob", "": "nobody"})
	tests := []struct {
		key   string
		owner string
		ok    bool
	}{
		{"k-alice", "alice", true},
		{"k-bob", "bob", true},
		{"k-bo", "", false},
		{"k-bobb", "", false},
		{"", "", false},
		{"K-ALICE", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			owner, ok, err := lookup(context.Background(), tt.key)
			if owner != tt.owner || ok != tt.ok || err != nil {
				t.Errorf("lookup(%q) = %q, %v, %v", tt.key, owner, ok, err)
			}
		})
	}
}

func TestRequire(t *testing.T) {
	static := Static(map[string]string{"secret-1": "team-a"})
	failing := func(context.Context, string) (string, bool, error) {
		return "", false, errors.New("store down at 10.0.0.7")
	}
	tests := []struct {
		name    string
		opts    Options
		headers map[string][]string
		status  int
		owner   string
	}{
		{"valid key", Options{Lookup: static}, map[string][]string{"X-Api-Key": {"secret-1"}}, 200, "team-a"},
		{"no key", Options{Lookup: static}, nil, 401, ""},
		{"empty key", Options{Lookup: static}, map[string][]string{"X-Api-Key": {""}}, 401, ""},
		{"unknown key", Options{Lookup: static}, map[string][]string{"X-Api-Key": {"secret-2"}}, 401, ""},
		{"two keys", Options{Lookup: static}, map[string][]string{"X-Api-Key": {"secret-1", "secret-1"}}, 401, ""},
		{"too long", Options{Lookup: static}, map[string][]string{"X-Api-Key": {strings.Repeat("k", 257)}}, 401, ""},
		{"custom header", Options{Lookup: static, Header: "authorization-key"}, map[string][]string{"Authorization-Key": {"secret-1"}}, 200, "team-a"},
		{"lookup fails", Options{Lookup: failing}, map[string][]string{"X-Api-Key": {"secret-1"}}, 503, ""},
	}
	authFailures := map[string]string{ // RequestInfo.AuthFailure by case; "" when admitted
		"no key": "missing_key", "empty key": "missing_key", "unknown key": "unknown_key",
		"two keys": "invalid_key", "too long": "invalid_key", "lookup fails": "unavailable",
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.Logger = quiet
			var got http.Header
			var owner string
			h := RequireWithOptions(tt.opts)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				got = r.Header.Clone()
				owner, _ = Owner(r.Context())
			}))
			r := httptest.NewRequest("GET", "/", nil)
			for k, v := range tt.headers {
				r.Header[k] = v
			}
			info := &pylon.RequestInfo{RequestID: "r1"}
			r = r.WithContext(pylon.NewContext(r.Context(), info))
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tt.status {
				t.Fatalf("status = %d, want %d", w.Code, tt.status)
			}
			if got, want := info.AuthFailure, authFailures[tt.name]; got != want {
				t.Errorf("AuthFailure = %q, want %q", got, want)
			}
			if tt.status == 200 {
				if owner != tt.owner || info.Subject != tt.owner {
					t.Errorf("owner %q, subject %q, want %q", owner, info.Subject, tt.owner)
				}
				for k := range tt.headers {
					if got.Get(k) != "" {
						t.Errorf("key header %s forwarded", k)
					}
				}
				return
			}
			var p pylon.Problem
			if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil || p.Status != tt.status || p.Detail != "" || p.RequestID != "r1" {
				t.Errorf("problem %+v (%v)", p, err)
			}
			if strings.Contains(w.Body.String(), "10.0.0.7") || strings.Contains(w.Body.String(), "apikey") {
				t.Errorf("body leaks detail: %s", w.Body)
			}
			if tt.status == 401 && w.Header().Get("WWW-Authenticate") == "" {
				t.Errorf("401 without WWW-Authenticate")
			}
		})
	}
}

func TestForward(t *testing.T) {
	var got string
	h := RequireWithOptions(Options{Lookup: Static(map[string]string{"k": "o"}), Forward: true})(
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = r.Header.Get("X-Api-Key") }))
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("X-API-Key", "k")
	h.ServeHTTP(httptest.NewRecorder(), r)
	if got != "k" {
		t.Errorf("forwarded key = %q", got)
	}
}

func BenchmarkRequire(b *testing.B) {
	keys := map[string]string{}
	for i := range 100 {
		keys["key-"+strings.Repeat("x", i)] = "owner"
	}
	keys["the-key"] = "me"
	h := RequireWithOptions(Options{Lookup: Static(keys), Forward: true})(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("X-API-Key", "the-key")
	w := httptest.NewRecorder()
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(w, r)
	}
}
