package middleware_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/middleware"
)

var generatedID = regexp.MustCompile(`^[0-9a-f]{32}$`)

func TestRequestID(t *testing.T) {
	tests := []struct {
		name     string
		incoming []string // X-Request-Id values; nil means none
		keep     bool     // the incoming ID is accepted
	}{
		{"missing", nil, false},
		{"well formed", []string{"abc-123_x.y:z+/="}, true},
		{"uuid", []string{"6ba7b810-9dad-11d1-80b4-00c04fd430c8"}, true},
		{"max length", []string{strings.Repeat("a", middleware.MaxRequestIDLength)}, true},
		{"too long", []string{strings.Repeat("a", middleware.MaxRequestIDLength+1)}, false},
		{"8 KiB", []string{strings.Repeat("a", 8<<10)}, false},
		{"empty", []string{""}, false},
		{"space", []string{"a b"}, false},
		{"CR LF injection", []string{"id\r\nSet-Cookie: x=1"}, false},
		{"invalid UTF-8", []string{"id\xff\xfe"}, false},
		{"non-ASCII", []string{"idé"}, false},
		{"two values", []string{"a", "b"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var seenHeader string
			var seenInfo *pylon.RequestInfo
			h := middleware.RequestID(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				seenHeader = r.Header.Get(middleware.RequestIDHeader)
				seenInfo = pylon.Info(r.Context())
			}))
			req := httptest.NewRequest("GET", "/", nil)
			if tt.incoming != nil {
				req.Header[middleware.RequestIDHeader] = tt.incoming
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			got := rec.Header().Get(middleware.RequestIDHeader)
			if tt.keep && got != tt.incoming[0] {
				t.Errorf("response ID %q, want the incoming %q", got, tt.incoming[0])
			}
			if !tt.keep && !generatedID.MatchString(got) {
				t.Errorf("response ID %q, want a generated 32-hex-digit ID", got)
			}
			if seenHeader != got {
				t.Errorf("request to the upstream carries %q, response %q", seenHeader, got)
			}
			if seenInfo == nil || seenInfo.RequestID != got {
				t.Errorf("RequestInfo %+v, want RequestID %q", seenInfo, got)
			}
		})
	}
}

func TestRequestIDUnique(t *testing.T) {
	seen := map[string]bool{}
	h := middleware.RequestID(ok)
	for range 1000 {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
		id := rec.Header().Get(middleware.RequestIDHeader)
		if seen[id] {
			t.Fatalf("ID %q generated twice", id)
		}
		seen[id] = true
	}
}

func TestRequestIDInGatewayInfoAndProblems(t *testing.T) {
	info := &pylon.RequestInfo{}
	h := middleware.RequestID(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if pylon.Info(r.Context()) != info {
			t.Error("RequestID replaced the Gateway's RequestInfo")
		}
		pylon.Error(w, r, http.StatusTeapot, "short and stout")
	}))
	req := httptest.NewRequest("GET", "/", nil)
	req.Header.Set("X-Request-Id", "req-42")
	req.Header.Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	req = req.WithContext(pylon.NewContext(req.Context(), info))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if p := problemOf(t, rec); p.RequestID != "req-42" {
		t.Errorf("problem request_id %q, want req-42", p.RequestID)
	}
	if info.RequestID != "req-42" {
		t.Errorf("info.RequestID %q", info.RequestID)
	}
	if got := req.Header.Get("Traceparent"); got != "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" {
		t.Errorf("traceparent changed to %q", got)
	}
}

func ExampleRequestID() {
	h := middleware.RequestID(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pylon.Error(w, r, http.StatusNotFound, "no such order")
	}))
	req := httptest.NewRequest("GET", "/orders/7", nil)
	req.Header.Set("X-Request-Id", "req-1")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	fmt.Println(rec.Header().Get("X-Request-Id"))
	fmt.Print(rec.Body.String())
	// Output:
	// req-1
	// {"title":"Not Found","status":404,"detail":"no such order","request_id":"req-1"}
}
