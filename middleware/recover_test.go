package middleware_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/middleware"
)

func TestRecover(t *testing.T) {
	logger, logs := newLogger()
	h := middleware.RequestID(middleware.Recover(logger)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		panic("secret: db password is hunter2")
	})))
	req := httptest.NewRequest("GET", "/x", nil)
	req.Header.Set("X-Request-Id", "req-panic")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 500 {
		t.Fatalf("status %d, want 500", rec.Code)
	}
	p := problemOf(t, rec)
	if p.RequestID != "req-panic" {
		t.Errorf("request_id %q", p.RequestID)
	}
	if strings.Contains(rec.Body.String(), "hunter2") || strings.Contains(rec.Body.String(), "goroutine") {
		t.Errorf("panic detail leaked to the client: %s", rec.Body.String())
	}
	lines := logs.lines(t)
	if len(lines) != 1 {
		t.Fatalf("%d log lines, want 1", len(lines))
	}
	l := lines[0]
	if l["request_id"] != "req-panic" || !strings.Contains(l["panic"].(string), "hunter2") ||
		!strings.Contains(l["stack"].(string), "recover_test.go") || l["level"] != "ERROR" {
		t.Errorf("log line %v lacks request ID, panic value or stack", l)
	}
}

func TestRecoverRepanicsAbortHandler(t *testing.T) {
	logger, logs := newLogger()
	h := middleware.Recover(logger)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		panic(http.ErrAbortHandler)
	}))
	defer func() {
		if v := recover(); v != http.ErrAbortHandler {
			t.Errorf("recovered %v, want http.ErrAbortHandler", v)
		}
		if n := len(logs.lines(t)); n != 0 {
			t.Errorf("%d log lines for ErrAbortHandler, want 0", n)
		}
	}()
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
}

func TestRecoverAfterResponseStarted(t *testing.T) {
	logger, logs := newLogger()
	h := middleware.Recover(logger)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("partial"))
		panic("boom")
	}))
	rec := httptest.NewRecorder()
	func() {
		defer func() {
			if v := recover(); v != http.ErrAbortHandler {
				t.Errorf("recovered %v, want http.ErrAbortHandler so the connection is cut", v)
			}
		}()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	}()
	if rec.Body.String() != "partial" {
		t.Errorf("body %q: nothing may be appended to a started response", rec.Body.String())
	}
	if n := len(logs.lines(t)); n != 1 {
		t.Errorf("%d log lines, want 1", n)
	}
}

func TestRecoverRecordsError(t *testing.T) {
	logger, _ := newLogger()
	h := middleware.Recover(logger)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var s []int
		_ = s[len(r.URL.Path)] // a runtime error: index out of range
	}))
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/", nil)
	info := &pylon.RequestInfo{}
	h.ServeHTTP(rec, req.WithContext(pylon.NewContext(req.Context(), info)))
	problemOf(t, rec)
	if info.Error != "panic" {
		t.Errorf("info.Error = %q, want panic", info.Error)
	}
}

// TestRecoverAndAccessLogInsideHookedWriter runs Recover and AccessLog
// inside a writer with a BeforeWriteHeader hook (as the metrics and headers
// middlewares make), which they share instead of wrapping again: the hook
// runs once, on the response Recover writes, and the log records it.
func TestRecoverAndAccessLogInsideHookedWriter(t *testing.T) {
	tests := []struct {
		name       string
		handler    http.HandlerFunc
		wantStatus int
		wantBytes  float64
	}{
		{"panic before the response", func(http.ResponseWriter, *http.Request) { panic("boom") }, 500, -1},
		{"plain response", func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusAccepted)
			_, _ = w.Write([]byte("hello"))
		}, 202, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logger, logs := newLogger()
			hooks := 0
			var seen int
			outer := func(next http.Handler) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					ww := middleware.WrapWriterWithOptions(w, middleware.WriterOptions{
						BeforeWriteHeader: func(status int, h http.Header) { hooks++; seen = status; h.Set("X-Hook", "1") },
					})
					next.ServeHTTP(ww, r)
				})
			}
			h := outer(middleware.Recover(logger)(middleware.AccessLog(logger)(tt.handler)))
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("GET", "/x", nil))
			if rec.Code != tt.wantStatus || hooks != 1 || seen != tt.wantStatus || rec.Header().Get("X-Hook") != "1" {
				t.Fatalf("status %d, hook ran %d times with %d, X-Hook %q; want %d once",
					rec.Code, hooks, seen, rec.Header().Get("X-Hook"), tt.wantStatus)
			}
			var access map[string]any
			for _, l := range logs.lines(t) {
				if l["msg"] == "request" {
					access = l
				}
			}
			if access == nil || access["status"] != float64(tt.wantStatus) {
				t.Fatalf("access line %v, want status %d", access, tt.wantStatus)
			}
			if tt.wantBytes >= 0 && access["bytes_out"] != tt.wantBytes {
				t.Errorf("bytes_out %v, want %v", access["bytes_out"], tt.wantBytes)
			}
		})
	}
}
