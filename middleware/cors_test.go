package middleware_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/pylon-gateway/pylon/middleware"
)

func TestCORS(t *testing.T) {
	policy := middleware.CORSOptions{
		AllowedOrigins:   []string{"https://app.example.com", "https://*.example.org"},
		AllowedMethods:   []string{"GET", "POST", "DELETE"},
		AllowedHeaders:   []string{"Authorization", "Content-Type"},
		ExposedHeaders:   []string{"X-Request-Id"},
		AllowCredentials: true,
		MaxAge:           10 * time.Minute,
	}
	preflight := func(origin, method, headers string) *http.Request {
		r := httptest.NewRequest("OPTIONS", "/orders", nil)
		r.Header.Set("Origin", origin)
		r.Header.Set("Access-Control-Request-Method", method)
		if headers != "" {
			r.Header.Set("Access-Control-Request-Headers", headers)
		}
		return r
	}
	actual := func(origin string) *http.Request {
		r := httptest.NewRequest("GET", "/orders", nil)
		if origin != "" {
			r.Header.Set("Origin", origin)
		}
		return r
	}
	tests := []struct {
		name        string
		opts        *middleware.CORSOptions // nil means policy
		req         *http.Request
		wantStatus  int
		wantNext    bool
		wantOrigin  string // Access-Control-Allow-Origin
		wantHeaders map[string]string
	}{
		{"preflight allowed", nil, preflight("https://app.example.com", "DELETE", "authorization, content-type"), 204, false, "https://app.example.com",
			map[string]string{"Access-Control-Allow-Credentials": "true", "Access-Control-Allow-Methods": "GET, POST, DELETE",
				"Access-Control-Allow-Headers": "authorization, content-type", "Access-Control-Max-Age": "600"}},
		{"preflight wildcard subdomain", nil, preflight("https://a.b.example.org", "GET", ""), 204, false, "https://a.b.example.org", nil},
		{"preflight bad origin", nil, preflight("https://evil.com", "GET", ""), 403, false, "", nil},
		{"preflight wildcard needs a label", nil, preflight("https://example.org", "GET", ""), 403, false, "", nil},
		{"preflight suffix trick", nil, preflight("https://evil.com/.example.org", "GET", ""), 403, false, "", nil},
		{"preflight null refused", nil, preflight("null", "GET", ""), 403, false, "", nil},
		{"preflight bad method", nil, preflight("https://app.example.com", "PATCH", ""), 403, false, "", nil},
		{"preflight method is case-sensitive", nil, preflight("https://app.example.com", "delete", ""), 403, false, "", nil},
		{"preflight bad header", nil, preflight("https://app.example.com", "GET", "x-secret"), 403, false, "", nil},
		{"preflight CRLF header list", nil, preflight("https://app.example.com", "GET", "authorization\r\nx: y"), 403, false, "", nil},
		{"preflight 8 KiB header list", nil, preflight("https://app.example.com", "GET", strings.Repeat("authorization,", 600)), 403, false, "", nil},
		{"preflight invalid UTF-8 origin", nil, preflight("https://app.example.com\xff", "GET", ""), 403, false, "", nil},
		{"OPTIONS without request method is not a preflight", nil, actual("https://app.example.com"), 200, true, "https://app.example.com", nil},
		{"actual allowed", nil, actual("https://app.example.com"), 200, true, "https://app.example.com",
			map[string]string{"Access-Control-Allow-Credentials": "true", "Access-Control-Expose-Headers": "X-Request-Id", "Vary": "Origin"}},
		{"actual other origin", nil, actual("https://evil.com"), 200, true, "", map[string]string{"Vary": "Origin"}},
		{"actual null origin", nil, actual("null"), 200, true, "", nil},
		{"actual 8 KiB origin", nil, actual("https://" + strings.Repeat("a", 8<<10) + ".example.org"), 200, true, "https://" + strings.Repeat("a", 8<<10) + ".example.org", nil},
		{"same origin request", nil, actual(""), 200, true, "", map[string]string{"Vary": "Origin"}},
		{"null listed", &middleware.CORSOptions{AllowedOrigins: []string{"null"}}, actual("null"), 200, true, "null", nil},
		{"any origin", &middleware.CORSOptions{AllowedOrigins: []string{"*"}}, actual("https://x.test"), 200, true, "*", map[string]string{"Vary": ""}},
		{"any origin still refuses null", &middleware.CORSOptions{AllowedOrigins: []string{"*"}}, actual("null"), 200, true, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := policy
			if tt.opts != nil {
				o = *tt.opts
			}
			if tt.name == "OPTIONS without request method is not a preflight" {
				tt.req.Method = "OPTIONS"
			}
			reached := false
			h := middleware.CORS(o)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				reached = true
				w.Header().Set("Access-Control-Allow-Origin", "*") // a backend with CORS of its own
				w.Header().Set("Access-Control-Allow-Methods", "PUT")
				_, _ = w.Write([]byte("ok"))
			}))
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, tt.req)
			if rec.Code != tt.wantStatus {
				t.Errorf("status %d, want %d", rec.Code, tt.wantStatus)
			}
			if reached != tt.wantNext {
				t.Errorf("next handler reached: %v, want %v", reached, tt.wantNext)
			}
			if tt.wantStatus == 403 {
				problemOf(t, rec)
			}
			got := rec.Header().Values("Access-Control-Allow-Origin")
			if tt.wantOrigin == "" && len(got) != 0 || tt.wantOrigin != "" && (len(got) != 1 || got[0] != tt.wantOrigin) {
				t.Errorf("Access-Control-Allow-Origin %.80q, want %.80q", got, tt.wantOrigin)
			}
			if tt.wantNext && rec.Header().Get("Access-Control-Allow-Methods") != "" {
				t.Error("the upstream's Access-Control-Allow-Methods reached the client")
			}
			for k, v := range tt.wantHeaders {
				if got := strings.Join(rec.Header().Values(k), ", "); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
		})
	}
}

func TestCORSMisconfigurationPanics(t *testing.T) {
	tests := map[string]middleware.CORSOptions{
		"star with credentials": {AllowedOrigins: []string{"*"}, AllowCredentials: true},
		"trailing slash":        {AllowedOrigins: []string{"https://a.com/"}},
		"no scheme":             {AllowedOrigins: []string{"a.com"}},
		"two stars":             {AllowedOrigins: []string{"https://*.*.com"}},
		"star in the middle":    {AllowedOrigins: []string{"https://a*.com"}},
		"bad header":            {AllowedOrigins: []string{"https://a.com"}, AllowedHeaders: []string{"X Bad"}},
		"bad method":            {AllowedOrigins: []string{"https://a.com"}, AllowedMethods: []string{"GE T"}},
	}
	for name, o := range tests {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if v := recover(); v == nil || !strings.HasPrefix(fmt.Sprint(v), "middleware: CORS: ") {
					t.Errorf("panic %v, want a middleware: CORS: message", v)
				}
			}()
			middleware.CORS(o)
		})
	}
}
