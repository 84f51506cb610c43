package jwtauth

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/pylon-gateway/pylon"
)

// seen records what the protected handler received.
type seen struct {
	claims  *Claims
	headers http.Header
	calls   int
}

func (s *seen) handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.calls++
		s.claims, _ = FromContext(r.Context())
		s.headers = r.Header.Clone()
		w.WriteHeader(http.StatusNoContent)
	})
}

func TestRequire(t *testing.T) {
	iss := newIssuer(t)
	v := newVerifier(t, issuerOptions(iss))
	good := iss.Mint(map[string]any{"sub": "alice", "scope": "orders:read orders:write"})
	expired := iss.Mint(map[string]any{"exp": 1})

	tests := []struct {
		name      string
		opts      RequireOptions
		req       func(r *http.Request)
		status    int
		challenge string
	}{
		{"valid bearer", RequireOptions{}, func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+good) }, 204, ""},
		{"lower-case scheme", RequireOptions{}, func(r *http.Request) { r.Header.Set("Authorization", "bearer "+good) }, 204, ""},
		{"no token", RequireOptions{}, func(*http.Request) {}, 401, `Bearer realm="api"`},
		{"other scheme", RequireOptions{}, func(r *http.Request) { r.SetBasicAuth("a", "b") }, 401, `Bearer realm="api"`},
		{"expired token", RequireOptions{}, func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+expired) }, 401, `Bearer realm="api", error="invalid_token"`},
		{"garbage token", RequireOptions{}, func(r *http.Request) { r.Header.Set("Authorization", "Bearer abc") }, 401, `Bearer realm="api", error="invalid_token"`},
		{"64 KiB token", RequireOptions{}, func(r *http.Request) {
			r.Header.Set("Authorization", "Bearer "+strings.Repeat("a", 64<<10))
		}, 401, `Bearer realm="api", error="invalid_token"`},
		{"two Authorization headers", RequireOptions{}, func(r *http.Request) {
			r.Header.Add("Authorization", "Bearer "+good)
			r.Header.Add("Authorization", "Bearer "+good)
		}, 401, `Bearer realm="api", error="invalid_token"`},
		{"realm", RequireOptions{Realm: "api"}, func(r *http.Request) { r.Header.Set("Authorization", "Bearer x") }, 401, `Bearer realm="api", error="invalid_token"`},
		{"cookie", RequireOptions{Cookie: "session"}, func(r *http.Request) { r.AddCookie(&http.Cookie{Name: "session", Value: good}) }, 204, ""},
		{"cookie not configured", RequireOptions{}, func(r *http.Request) { r.AddCookie(&http.Cookie{Name: "session", Value: good}) }, 401, `Bearer realm="api"`},
		{"header", RequireOptions{Header: "X-Token"}, func(r *http.Request) { r.Header.Set("X-Token", good) }, 204, ""},
		{"all scopes present", RequireOptions{Rules: []Rule{Scopes("orders:read", "orders:write")}}, func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+good) }, 204, ""},
		{"a scope missing", RequireOptions{Rules: []Rule{Scopes("orders:read", "admin")}}, func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+good) }, 403, `Bearer realm="api", error="insufficient_scope"`},
		{"any scope", RequireOptions{Rules: []Rule{AnyScope("admin", "orders:read")}}, func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+good) }, 204, ""},
		{"no scope of any", RequireOptions{Rules: []Rule{AnyScope("admin", "root")}}, func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+good) }, 403, `Bearer realm="api", error="insufficient_scope"`},
		{"predicate false", RequireOptions{Rules: []Rule{Predicate("not bob", func(c *Claims) bool { return c.Subject == "bob" })}}, func(r *http.Request) {
			r.Header.Set("Authorization", "Bearer "+good)
		}, 403, `Bearer realm="api", error="insufficient_scope"`},
	}
	authFailures := map[string]string{ // RequestInfo.AuthFailure by case; "" when admitted
		"no token": "missing_token", "other scheme": "missing_token", "expired token": "expired",
		"garbage token": "invalid_token", "64 KiB token": "invalid_token", "two Authorization headers": "invalid_token",
		"realm": "invalid_token", "cookie not configured": "missing_token", "a scope missing": "insufficient_scope",
		"no scope of any": "insufficient_scope", "predicate false": "insufficient_scope",
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			tt.opts.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			var s seen
			h := RequireWithOptions(v, tt.opts)(s.handler())
			r := httptest.NewRequest("GET", "/orders/1", nil)
			tt.req(r)
			info := &pylon.RequestInfo{RequestID: "req-1"}
			r = r.WithContext(pylon.NewContext(r.Context(), info))
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tt.status {
				t.Fatalf("status = %d, want %d", w.Code, tt.status)
			}
			if got, want := info.AuthFailure, authFailures[tt.name]; got != want {
				t.Errorf("AuthFailure = %q, want %q", got, want)
			}
			if got := w.Header().Get("WWW-Authenticate"); got != tt.challenge {
				t.Errorf("WWW-Authenticate = %q, want %q", got, tt.challenge)
			}
			if tt.status == 204 {
				if s.claims == nil || info.Subject != s.claims.Subject || info.Subject == "" {
					t.Errorf("claims %v, subject %q", s.claims, info.Subject)
				}
				return
			}
			if s.calls != 0 {
				t.Errorf("next handler ran on a rejected request")
			}
			if ct := w.Header().Get("Content-Type"); ct != pylon.ProblemContentType {
				t.Errorf("Content-Type = %q", ct)
			}
			var p pylon.Problem
			if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil {
				t.Fatalf("body %q: %v", w.Body, err)
			}
			if p.Status != tt.status || p.RequestID != "req-1" || p.Detail != "" {
				t.Errorf("problem = %+v, want status %d, request ID, no detail", p, tt.status)
			}
			if strings.Contains(w.Body.String(), "jwtauth") {
				t.Errorf("body leaks the reason: %s", w.Body)
			}
			if !strings.Contains(logs.String(), "jwtauth:") {
				t.Errorf("reason not logged: %q", logs.String())
			}
		})
	}
}

func TestRequireRoles(t *testing.T) {
	iss := newIssuer(t)
	v := newVerifier(t, issuerOptions(iss))
	tok := iss.Mint(map[string]any{"realm_access": map[string]any{"roles": []string{"user", "billing"}}})
	tests := []struct {
		name   string
		rule   Rule
		status int
	}{
		{"one of roles", Roles("realm_access.roles", "admin", "billing"), 204},
		{"none of roles", Roles("realm_access.roles", "admin"), 403},
		{"all roles", AllRoles("realm_access.roles", "user", "billing"), 204},
		{"not all roles", AllRoles("realm_access.roles", "user", "admin"), 403},
		{"missing claim path", Roles("resource_access.api.roles", "user"), 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s seen
			r := httptest.NewRequest("GET", "/", nil)
			r.Header.Set("Authorization", "Bearer "+tok)
			w := httptest.NewRecorder()
			RequireWithOptions(v, RequireOptions{Rules: []Rule{tt.rule}, Logger: quiet})(s.handler()).ServeHTTP(w, r)
			if w.Code != tt.status {
				t.Fatalf("status = %d, want %d", w.Code, tt.status)
			}
		})
	}
}

func TestRequireForwarding(t *testing.T) {
	iss := newIssuer(t)
	v := newVerifier(t, issuerOptions(iss))
	tok := iss.Mint(map[string]any{"sub": "alice", "org": map[string]any{"id": "acme"}})
	tests := []struct {
		name     string
		opts     RequireOptions
		wantAuth bool
		want     map[string]string
	}{
		{"claims replace spoofed headers, Authorization stripped", RequireOptions{
			ForwardClaims: map[string]string{"x-user-id": "sub", "X-Tenant": "org.id", "X-Email": "email"},
		}, false, map[string]string{"X-User-Id": "alice", "X-Tenant": "acme", "X-Email": ""}},
		{"Authorization forwarded", RequireOptions{ForwardAuthorization: true}, true, map[string]string{"X-User-Id": "spoofed"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s seen
			tt.opts.Logger = quiet
			r := httptest.NewRequest("GET", "/", nil)
			r.Header.Set("Authorization", "Bearer "+tok)
			r.Header.Add("X-User-Id", "spoofed")
			r.Header.Add("X-User-Id", "admin")
			r.Header.Set("X-Email", "root@example.com")
			w := httptest.NewRecorder()
			RequireWithOptions(v, tt.opts)(s.handler()).ServeHTTP(w, r)
			if w.Code != 204 {
				t.Fatalf("status = %d", w.Code)
			}
			if got := s.headers.Get("Authorization") != ""; got != tt.wantAuth {
				t.Errorf("Authorization forwarded = %v, want %v", got, tt.wantAuth)
			}
			for name, want := range tt.want {
				if got := s.headers.Get(name); got != want {
					t.Errorf("%s = %q, want %q", name, got, want)
				}
				if tt.opts.ForwardClaims != nil && len(s.headers.Values(name)) > 1 {
					t.Errorf("%s has several values: %q", name, s.headers.Values(name))
				}
			}
		})
	}
}

// TestHeaderPastServerLimit checks that a header larger than the server's
// MaxHeaderBytes is refused by net/http with 431 before the middleware runs.
func TestHeaderPastServerLimit(t *testing.T) {
	iss := newIssuer(t)
	v := newVerifier(t, issuerOptions(iss))
	var reached atomic.Int64
	counting := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			reached.Add(1)
			next.ServeHTTP(w, r)
		})
	}
	var s seen
	srv := httptest.NewUnstartedServer(counting(RequireWithOptions(v, RequireOptions{Logger: quiet})(s.handler())))
	srv.Config.MaxHeaderBytes = 64 << 10
	srv.Config.ErrorLog = nil
	srv.Start()
	t.Cleanup(srv.Close)

	tests := []struct {
		name    string
		size    int
		status  int
		reached int64
	}{
		{"token past the header limit", 128 << 10, http.StatusRequestHeaderFieldsTooLarge, 0},
		{"64 KiB token under a larger limit reaches the middleware", 60 << 10, http.StatusUnauthorized, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reached.Store(0)
			req, _ := http.NewRequest("GET", srv.URL, nil)
			req.Header.Set("Authorization", "Bearer "+strings.Repeat("a", tt.size))
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Errorf("status = %d, want %d", resp.StatusCode, tt.status)
			}
			if got := reached.Load(); got != tt.reached {
				t.Errorf("middleware ran %d times, want %d", got, tt.reached)
			}
		})
	}
}
