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
		var m map[string]int
		m["x"] = 1 // a runtime error
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
