package middleware_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/middleware"
)

func TestAccessLogFields(t *testing.T) {
	logger, logs := newLogger()
	info := &pylon.RequestInfo{Start: time.Now(), Route: "orders"}
	h := middleware.AccessLog(logger)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		i := pylon.Info(r.Context())
		i.RequestID = "req-7"
		i.ClientIP = netip.MustParseAddr("203.0.113.9")
		i.Backend, i.Target, i.Attempts = "orders", "http://10.0.0.5:8080", 2
		i.UpstreamStatus, i.UpstreamDuration = 201, 3*time.Millisecond
		i.Subject, i.Breaker, i.Cache = "user-1", "closed", "miss"
		i.RateLimit = pylon.RateLimitInfo{Key: "user-1", Decided: true, Allowed: true, Limit: 10, Remaining: 9}
		w.WriteHeader(201)
		_, _ = w.Write([]byte("created"))
	}))
	req := httptest.NewRequest("POST", "http://api.example.com/orders?token=secret", strings.NewReader("12345"))
	h.ServeHTTP(httptest.NewRecorder(), req.WithContext(pylon.NewContext(req.Context(), info)))

	lines := logs.lines(t)
	if len(lines) != 1 {
		t.Fatalf("%d lines, want 1", len(lines))
	}
	l := lines[0]
	want := map[string]any{
		"msg": "request", "request_id": "req-7", "client_ip": "203.0.113.9", "method": "POST",
		"host": "api.example.com", "path": "/orders", "route": "orders", "status": 201.0,
		"bytes_in": 5.0, "bytes_out": 7.0, "backend": "orders", "target": "http://10.0.0.5:8080",
		"attempts": 2.0, "upstream_status": 201.0, "subject": "user-1", "breaker": "closed", "cache": "miss",
	}
	for k, v := range want {
		if l[k] != v {
			t.Errorf("%s = %v, want %v", k, l[k], v)
		}
	}
	for _, k := range []string{"time", "duration", "upstream_duration", "ratelimit"} {
		if _, ok := l[k]; !ok {
			t.Errorf("no %s in %v", k, l)
		}
	}
	if _, ok := l["query"]; ok {
		t.Error("query logged without opt-in")
	}
}

func TestAccessLogStatus(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc
		ctx     func(context.Context) context.Context
		status  float64
	}{
		{"implicit 200", func(w http.ResponseWriter, r *http.Request) {}, nil, 200},
		{"problem", func(w http.ResponseWriter, r *http.Request) { pylon.Error(w, r, 502, "") }, nil, 502},
		{"client canceled flag", func(w http.ResponseWriter, r *http.Request) {
			pylon.Info(r.Context()).ClientCanceled = true
			w.WriteHeader(502)
		}, nil, 499},
		{"canceled context, nothing written", func(w http.ResponseWriter, r *http.Request) {}, func(ctx context.Context) context.Context {
			ctx, cancel := context.WithCancel(ctx)
			cancel()
			return ctx
		}, 499},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logger, logs := newLogger()
			req := httptest.NewRequest("GET", "/", nil)
			if tt.ctx != nil {
				req = req.WithContext(tt.ctx(req.Context()))
			}
			middleware.AccessLog(logger)(tt.handler).ServeHTTP(httptest.NewRecorder(), req)
			if got := logs.lines(t)[0]["status"]; got != tt.status {
				t.Errorf("status %v, want %v", got, tt.status)
			}
		})
	}
}

func TestAccessLogPanicThenRecover(t *testing.T) {
	logger, logs := newLogger()
	h := middleware.New(middleware.Recover(logger), middleware.AccessLog(logger)).
		ThenFunc(func(w http.ResponseWriter, r *http.Request) { panic("x") })
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != 500 {
		t.Errorf("client got %d", rec.Code)
	}
	var access map[string]any
	for _, l := range logs.lines(t) {
		if l["msg"] == "request" {
			access = l
		}
	}
	if access == nil || access["status"] != 500.0 {
		t.Errorf("access line %v, want status 500", access)
	}
}

func TestAccessLogWithOptions(t *testing.T) {
	logger, logs := newLogger()
	h := middleware.AccessLogWithOptions(middleware.AccessLogOptions{
		Logger: logger, Query: true, Level: slog.LevelWarn, Message: "access",
		Skip: func(r *http.Request) bool { return r.URL.Path == "/healthz" },
	})(ok)
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/healthz", nil))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/a?b=c", nil))
	lines := logs.lines(t)
	if len(lines) != 1 {
		t.Fatalf("%d lines, want 1 (health check skipped)", len(lines))
	}
	if l := lines[0]; l["query"] != "b=c" || l["level"] != "WARN" || l["msg"] != "access" {
		t.Errorf("line %v", l)
	}
}

func TestAccessLogOutsideGatewayUsesPeer(t *testing.T) {
	logger, logs := newLogger()
	req := httptest.NewRequest("GET", "/", nil)
	req.RemoteAddr = "[fe80::1%eth0]:5555"
	middleware.AccessLog(logger)(ok).ServeHTTP(httptest.NewRecorder(), req)
	if got := logs.lines(t)[0]["client_ip"]; got != "fe80::1" {
		t.Errorf("client_ip %v, want fe80::1 (zone dropped)", got)
	}
}

// wrapped is a handler of a type AccessLog does not know, so that it logs
// through the path for handlers that may keep records.
type wrapped struct{ slog.Handler }

// TestAccessLogSameLineWhateverTheHandler checks that a line is the same,
// byte for byte, through log/slog's own handlers (whose attributes AccessLog
// reuses) and through any other handler, for JSON and text output, with a
// ReplaceAttr that sees every attribute at the top level.
func TestAccessLogSameLineWhateverTheHandler(t *testing.T) {
	var replaced []string
	opts := &slog.HandlerOptions{ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
		switch {
		case len(groups) == 0 && (a.Key == slog.TimeKey || a.Key == "duration"):
			return slog.Attr{} // differ from one request to the next
		case len(groups) == 0:
			replaced = append(replaced, a.Key)
		}
		return a
	}}
	formats := []struct {
		name string
		make func(io.Writer) slog.Handler
	}{
		{"JSON", func(w io.Writer) slog.Handler { return slog.NewJSONHandler(w, opts) }},
		{"text", func(w io.Writer) slog.Handler { return slog.NewTextHandler(w, opts) }},
		{"JSON with attrs", func(w io.Writer) slog.Handler {
			return slog.NewJSONHandler(w, opts).WithAttrs([]slog.Attr{slog.String("app", "gw")})
		}},
	}
	infos := []struct {
		name string
		fill func(*pylon.RequestInfo)
	}{
		{"bare", func(*pylon.RequestInfo) {}},
		{"every field", func(i *pylon.RequestInfo) {
			i.RequestID, i.Route, i.ClientIP = "req-1", "orders", netip.MustParseAddr("2001:db8::1")
			i.Backend, i.Target, i.Attempts = "orders", "http://10.0.0.5:8080", 1
			i.UpstreamStatus, i.UpstreamDuration = 200, time.Millisecond
			i.Subject, i.Breaker, i.Cache, i.Error = "user \"1\"", "closed", "miss", "boom"
			i.RateLimit = pylon.RateLimitInfo{Key: "sub:user-1", Decided: true, Allowed: true, Limit: 10, Remaining: 9}
		}},
	}
	for _, f := range formats {
		for _, in := range infos {
			t.Run(f.name+"/"+in.name, func(t *testing.T) {
				line := func(h slog.Handler) []string {
					replaced = nil
					h2 := middleware.AccessLogWithOptions(middleware.AccessLogOptions{Logger: slog.New(h), Query: true})(
						http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
							in.fill(pylon.Info(r.Context()))
							_, _ = w.Write([]byte("ok"))
						}))
					req := httptest.NewRequest("GET", "http://api.example.com/orders/7?x=1", nil)
					h2.ServeHTTP(httptest.NewRecorder(), req)
					return replaced
				}
				var std, other strings.Builder
				keysStd := line(f.make(&std))
				keysOther := line(wrapped{f.make(&other)})
				if std.String() != other.String() {
					t.Errorf("lines differ:\nstd   %s\nother %s", std.String(), other.String())
				}
				if strings.Join(keysStd, ",") != strings.Join(keysOther, ",") {
					t.Errorf("ReplaceAttr saw %v, and %v through another handler", keysStd, keysOther)
				}
				if !strings.Contains(std.String(), "request_id") || !strings.Contains(std.String(), "path") {
					t.Errorf("line lacks fields: %s", std.String())
				}
			})
		}
	}
}
