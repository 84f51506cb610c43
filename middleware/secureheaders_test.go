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

// upstreamLike answers as a backend would: its own Server and X-Powered-By.
var upstreamLike = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Server", "Apache/2.4.1")
	w.Header().Set("X-Powered-By", "PHP/5.6")
	w.Header().Set("X-Frame-Options", "ALLOWALL")
	w.Header().Set("Content-Security-Policy", "default-src 'self'")
	_, _ = w.Write([]byte("ok"))
})

func TestSecureHeaders(t *testing.T) {
	tests := []struct {
		name string
		opts middleware.SecureHeadersOptions
		want map[string]string // "" means absent
	}{
		{"defaults", middleware.SecureHeadersOptions{}, map[string]string{
			"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
			"Referrer-Policy": "strict-origin-when-cross-origin", "Server": "", "X-Powered-By": "",
			"Strict-Transport-Security": "", "Content-Security-Policy": "default-src 'self'",
		}},
		{"HSTS opt-in", middleware.SecureHeadersOptions{HSTSMaxAge: 365 * 24 * time.Hour, HSTSIncludeSubdomains: true, HSTSPreload: true},
			map[string]string{"Strict-Transport-Security": "max-age=31536000; includeSubDomains; preload"}},
		{"omit and override", middleware.SecureHeadersOptions{FrameOptions: "-", ReferrerPolicy: "no-referrer", KeepServerHeaders: true},
			map[string]string{"X-Frame-Options": "ALLOWALL", "Referrer-Policy": "no-referrer", "Server": "Apache/2.4.1", "X-Powered-By": "PHP/5.6"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			middleware.SecureHeaders(tt.opts)(upstreamLike).ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
			for k, v := range tt.want {
				if got := strings.Join(rec.Result().Header.Values(k), ","); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
		})
	}
}

func TestSecureHeadersBadValuePanics(t *testing.T) {
	for _, v := range []string{"DENY\r\nSet-Cookie: a=b", "x\nY", "\x00"} {
		t.Run(fmt.Sprintf("%q", v), func(t *testing.T) {
			defer func() {
				if r := recover(); r == nil || !strings.HasPrefix(fmt.Sprint(r), "middleware: SecureHeaders: ") {
					t.Errorf("panic %v", r)
				}
			}()
			middleware.SecureHeaders(middleware.SecureHeadersOptions{FrameOptions: v})
		})
	}
}
