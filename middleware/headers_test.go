package middleware_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/pylon-gateway/pylon/middleware"
)

func TestHeaders(t *testing.T) {
	h := middleware.Headers(middleware.HeadersOptions{
		Request: middleware.HeaderRules{
			Remove: []string{"cookie"},
			Set:    map[string]string{"x-gateway": "pylon"},
			Add:    map[string]string{"X-Tag": "b"},
		},
		Response: middleware.HeaderRules{
			Remove: []string{"X-Internal"},
			Set:    map[string]string{"Cache-Control": "no-store"},
			Add:    map[string]string{"Via": "1.1 pylon"},
		},
	})
	var upstream http.Header
	rec := httptest.NewRecorder()
	h(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		upstream = r.Header.Clone()
		w.Header().Set("X-Internal", "10.0.0.5") // set by the upstream: removed at WriteHeader time
		w.Header().Set("Cache-Control", "public")
		w.Header().Set("Via", "1.1 backend")
		_, _ = w.Write([]byte("ok"))
	})).ServeHTTP(rec, func() *http.Request {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set("Cookie", "session=1")
		r.Header.Set("X-Gateway", "spoofed")
		r.Header.Set("X-Tag", "a")
		return r
	}())
	res := rec.Result()
	checks := []struct{ where, key, got, want string }{
		{"request", "Cookie", upstream.Get("Cookie"), ""},
		{"request", "X-Gateway", strings.Join(upstream.Values("X-Gateway"), ","), "pylon"},
		{"request", "X-Tag", strings.Join(upstream.Values("X-Tag"), ","), "a,b"},
		{"response", "X-Internal", res.Header.Get("X-Internal"), ""},
		{"response", "Cache-Control", res.Header.Get("Cache-Control"), "no-store"},
		{"response", "Via", strings.Join(res.Header.Values("Via"), ","), "1.1 backend,1.1 pylon"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s %s = %q, want %q", c.where, c.key, c.got, c.want)
		}
	}
}

func TestHeadersRejectsBadRules(t *testing.T) {
	tests := map[string]middleware.HeadersOptions{
		"CR LF in value": {Request: middleware.HeaderRules{Set: map[string]string{"X-A": "a\r\nX-Evil: 1"}}},
		"NUL in value":   {Response: middleware.HeaderRules{Add: map[string]string{"X-A": "a\x00"}}},
		"space in name":  {Request: middleware.HeaderRules{Set: map[string]string{"X A": "a"}}},
		"invalid UTF-8":  {Request: middleware.HeaderRules{Remove: []string{"X-\xff"}}},
		"Host":           {Request: middleware.HeaderRules{Set: map[string]string{"host": "evil"}}},
		"empty name":     {Response: middleware.HeaderRules{Remove: []string{""}}},
	}
	for name, o := range tests {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if r := recover(); r == nil || !strings.HasPrefix(fmt.Sprint(r), "middleware: Headers: ") {
					t.Errorf("panic %v", r)
				}
			}()
			middleware.Headers(o)
		})
	}
}

func TestHeadersLongValue(t *testing.T) {
	long := strings.Repeat("v", 8<<10)
	rec := httptest.NewRecorder()
	middleware.Headers(middleware.HeadersOptions{Response: middleware.HeaderRules{Set: map[string]string{"X-Long": long}}})(ok).
		ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Result().Header.Get("X-Long") != long {
		t.Error("8 KiB header value not set")
	}
}
