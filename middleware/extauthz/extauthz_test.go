package extauthz_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/middleware/extauthz"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// authService is a fake authorization service on loopback. It admits
// "Authorization: Bearer good" (naming the user in X-User-Id), sends
// others to a login page, and records what it was asked.
type authService struct {
	*httptest.Server
	calls atomic.Int64
	mu    sync.Mutex
	last  *http.Request
	body  string
	mode  string // "", "down", "hang"
}

func newAuthService(t *testing.T) *authService {
	s := &authService{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.calls.Add(1)
		b, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		s.last, s.body = r.Clone(r.Context()), string(b)
		mode := s.mode
		s.mu.Unlock()
		switch mode {
		case "down":
			http.Error(w, "oops", http.StatusInternalServerError)
			return
		case "hang":
			<-r.Context().Done()
			return
		}
		switch r.Header.Get("Authorization") {
		case "Bearer good":
			w.Header().Set("X-User-Id", "alice")
			w.Header().Set("X-Internal-Secret", "not for upstream")
			w.WriteHeader(http.StatusOK)
		case "":
			w.Header().Set("Location", "https://login.example/?next=x")
			w.Header().Set("Set-Cookie", "state=1")
			w.Header().Set("X-Internal-Secret", "not for the client")
			w.WriteHeader(http.StatusFound)
		default:
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("WWW-Authenticate", `Bearer realm="corp"`)
			w.WriteHeader(http.StatusForbidden)
			_, _ = io.WriteString(w, `{"error":"you shall not pass"}`)
		}
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *authService) set(mode string) {
	s.mu.Lock()
	s.mode = mode
	s.mu.Unlock()
}

type seen struct {
	mu      sync.Mutex
	header  http.Header
	body    string
	subject string
	auth    string
	calls   int
}

func serve(t *testing.T, o extauthz.Options) (string, *seen) {
	t.Helper()
	if o.Logger == nil {
		o.Logger = quiet
	}
	mw, err := extauthz.New(o)
	if err != nil {
		t.Fatal(err)
	}
	s := &seen{}
	gw := pylon.New(pylon.Options{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		info := pylon.Info(r.Context())
		s.mu.Lock()
		s.header, s.body, s.subject, s.auth = r.Header.Clone(), string(b), info.Subject, info.Auth
		s.calls++
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})
	gw.Route("GET /api/").Use(mw).Handler(h)
	gw.Route("POST /api/").Use(mw).Handler(h)
	if err := gw.Err(); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw)
	t.Cleanup(srv.Close)
	return srv.URL, s
}

func do(t *testing.T, method, url, auth, body string, hdr ...string) (*http.Response, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, url, rd)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	return resp, string(b)
}

func TestForwardAuth(t *testing.T) {
	as := newAuthService(t)
	front, up := serve(t, extauthz.Options{URL: as.URL + "/check", ResponseHeaders: []string{"X-User-Id"}, SubjectHeader: "X-User-Id"})

	t.Run("allowed, headers copied upstream, client's forgery removed", func(t *testing.T) {
		resp, _ := do(t, "GET", front+"/api/orders?id=1", "Bearer good", "", "X-User-Id", "mallory", "X-Other", "kept")
		if resp.StatusCode != 204 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		up.mu.Lock()
		defer up.mu.Unlock()
		if got := up.header.Values("X-User-Id"); len(got) != 1 || got[0] != "alice" {
			t.Errorf("upstream X-User-Id = %q", got)
		}
		if up.header.Get("X-Internal-Secret") != "" || up.header.Get("X-Other") != "kept" {
			t.Errorf("upstream headers %v", up.header)
		}
		if up.subject != "alice" || up.auth != "extauthz" {
			t.Errorf("RequestInfo subject %q auth %q", up.subject, up.auth)
		}
		as.mu.Lock()
		defer as.mu.Unlock()
		l := as.last
		if l.Method != "GET" || l.URL.Path != "/check" || l.Header.Get("X-Forwarded-Uri") != "/api/orders?id=1" ||
			l.Header.Get("X-Forwarded-Method") != "GET" || l.Header.Get("X-Forwarded-Proto") != "http" || l.Header.Get("X-Forwarded-For") == "" {
			t.Errorf("service asked %s %s with %v", l.Method, l.URL, l.Header)
		}
		if l.Header.Get("X-Other") != "" {
			t.Errorf("a header not in RequestHeaders reached the service")
		}
	})
	t.Run("denied: the service's status, body and chosen headers reach the client", func(t *testing.T) {
		resp, body := do(t, "GET", front+"/api/orders", "Bearer bad", "")
		if resp.StatusCode != 403 || body != `{"error":"you shall not pass"}` || resp.Header.Get("WWW-Authenticate") != `Bearer realm="corp"` {
			t.Fatalf("got %d %q %v", resp.StatusCode, body, resp.Header)
		}
	})
	t.Run("redirect to login passes as is", func(t *testing.T) {
		resp, _ := do(t, "GET", front+"/api/orders", "", "")
		if resp.StatusCode != 302 || resp.Header.Get("Location") == "" || resp.Header.Get("Set-Cookie") == "" {
			t.Fatalf("got %d %v", resp.StatusCode, resp.Header)
		}
		if resp.Header.Get("X-Internal-Secret") != "" {
			t.Error("a header not in DenyHeaders reached the client")
		}
	})
	up.mu.Lock()
	if up.calls != 1 {
		t.Errorf("upstream called %d times, want 1", up.calls)
	}
	up.mu.Unlock()
}

func TestEnvoyModeWithBody(t *testing.T) {
	as := newAuthService(t)
	front, up := serve(t, extauthz.Options{URL: as.URL + "/authz", Mode: extauthz.Envoy, MaxBodyBytes: 4})
	resp, _ := do(t, "POST", front+"/api/orders?x=1", "Bearer good", "0123456789")
	if resp.StatusCode != 204 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	as.mu.Lock()
	l, body := as.last, as.body
	as.mu.Unlock()
	if l.Method != "POST" || l.URL.Path != "/authz/api/orders" || l.URL.RawQuery != "x=1" || body != "0123" || l.Header.Get("X-Auth-Partial-Body") != "true" {
		t.Errorf("service asked %s %s body %q headers %v", l.Method, l.URL, body, l.Header)
	}
	up.mu.Lock()
	defer up.mu.Unlock()
	if up.body != "0123456789" {
		t.Errorf("upstream body %q, want the whole body", up.body)
	}
}

func TestFailureMode(t *testing.T) {
	for _, tt := range []struct {
		name     string
		mode     string
		failOpen bool
		want     int
	}{
		{"5xx denies by default", "down", false, 503},
		{"timeout denies by default", "hang", false, 503},
		{"5xx with FailOpen admits", "down", true, 204},
		{"timeout with FailOpen admits", "hang", true, 204},
	} {
		t.Run(tt.name, func(t *testing.T) {
			as := newAuthService(t)
			as.set(tt.mode)
			front, up := serve(t, extauthz.Options{URL: as.URL, Timeout: 50 * time.Millisecond, FailOpen: tt.failOpen, ResponseHeaders: []string{"X-User-Id"}})
			resp, body := do(t, "GET", front+"/api/x", "Bearer good", "", "X-User-Id", "mallory")
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.want)
			}
			if tt.want == 503 && (resp.Header.Get("Content-Type") != pylon.ProblemContentType || strings.Contains(body, "oops")) {
				t.Errorf("503 is not a bare problem: %q", body)
			}
			if tt.want == 204 {
				up.mu.Lock()
				defer up.mu.Unlock()
				if up.header.Get("X-User-Id") != "" || up.auth != "" {
					t.Errorf("fail-open request looks authenticated: %v %q", up.header, up.auth)
				}
			}
		})
	}
}

func TestCache(t *testing.T) {
	as := newAuthService(t)
	now := time.Now()
	var mu sync.Mutex
	clk := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	front, up := serve(t, extauthz.Options{
		URL: as.URL, ResponseHeaders: []string{"X-User-Id"}, Now: clk,
		CacheKey: func(r *http.Request) string { return r.Header.Get("Authorization") },
	})
	for range 3 {
		if resp, _ := do(t, "GET", front+"/api/x", "Bearer good", ""); resp.StatusCode != 204 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		if resp, _ := do(t, "GET", front+"/api/x", "Bearer bad", ""); resp.StatusCode != 403 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	if n := as.calls.Load(); n != 2 {
		t.Fatalf("%d calls for two keys asked 3 times each, want 2", n)
	}
	up.mu.Lock()
	if up.header.Get("X-User-Id") != "alice" {
		t.Errorf("cached answer did not copy headers: %v", up.header)
	}
	up.mu.Unlock()
	mu.Lock()
	now = now.Add(11 * time.Second)
	mu.Unlock()
	do(t, "GET", front+"/api/x", "Bearer good", "")
	if n := as.calls.Load(); n != 3 {
		t.Errorf("answer outlived CacheTTL (%d calls)", n)
	}
	// Failures are never cached.
	as.set("down")
	do(t, "GET", front+"/api/x", "Bearer other", "")
	as.set("")
	if resp, _ := do(t, "GET", front+"/api/x", "Bearer other", ""); resp.StatusCode != 403 {
		t.Errorf("failure was cached: %d", resp.StatusCode)
	}
}

func TestConfig(t *testing.T) {
	if _, err := extauthz.New(extauthz.Options{URL: "unix:///x"}); err == nil {
		t.Fatal("bad URL accepted")
	}
}

// levels records the level of every log record, by message.
type levels struct {
	mu  sync.Mutex
	got map[string]slog.Level
}

func (l *levels) Enabled(context.Context, slog.Level) bool { return true }
func (l *levels) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.got == nil {
		l.got = map[string]slog.Level{}
	}
	if lvl, ok := l.got[r.Message]; !ok || r.Level > lvl {
		l.got[r.Message] = r.Level
	}
	return nil
}
func (l *levels) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *levels) WithGroup(string) slog.Handler      { return l }

// A request body that cannot be read is the client's failure: the service
// is not asked, FailOpen does not admit the request, and the client gets
// what a Backend would answer, logged at Debug only.
func TestUnreadableBodyIsRefused(t *testing.T) {
	const idle = 100 * time.Millisecond
	for _, tt := range []struct {
		name string
		raw  string
		want int
	}{
		{"over the route's limit", "POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n32\r\n" + strings.Repeat("x", 50) + "\r\n0\r\n\r\n", 413},
		{"stalled", "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\nxxxx", 408}, // the client sends no more
		{"malformed", "POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400},
	} {
		for _, failOpen := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s, FailOpen %v", tt.name, failOpen), func(t *testing.T) {
				var asked, admitted atomic.Int64
				svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					asked.Add(1)
					w.WriteHeader(http.StatusForbidden)
				}))
				t.Cleanup(svc.Close)
				log := &levels{}
				mw, err := extauthz.New(extauthz.Options{URL: svc.URL, MaxBodyBytes: 1000, FailOpen: failOpen, Logger: slog.New(log)})
				if err != nil {
					t.Fatal(err)
				}
				gw := pylon.New(pylon.Options{})
				gw.Route("POST /upload").MaxBodyBytes(10).Use(mw).Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					admitted.Add(1)
				}))
				if err := gw.Err(); err != nil {
					t.Fatal(err)
				}
				srv := httptest.NewUnstartedServer(nil)
				srv.Config = pylon.NewServerWithOptions("", gw, pylon.ServerOptions{BodyIdleTimeout: idle})
				srv.Start()
				t.Cleanup(srv.Close)

				conn, err := net.Dial("tcp", srv.Listener.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				_ = conn.SetDeadline(time.Now().Add(10 * time.Second)) // a bound, not a wait
				if _, err := io.WriteString(conn, tt.raw); err != nil {
					t.Fatal(err)
				}
				resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode != tt.want || resp.Header.Get("Content-Type") != pylon.ProblemContentType {
					t.Errorf("got %d %q %s, want %d problem+json", resp.StatusCode, resp.Header.Get("Content-Type"), body, tt.want)
				}
				if strings.Contains(string(body), "extauthz") || strings.Contains(string(body), "http:") {
					t.Errorf("internal detail in the answer: %s", body)
				}
				if n := admitted.Load(); n != 0 {
					t.Errorf("the route's handler ran %d times", n)
				}
				if n := asked.Load(); n != 0 {
					t.Errorf("the service was asked %d times", n)
				}
				log.mu.Lock()
				defer log.mu.Unlock()
				for msg, lvl := range log.got {
					if lvl > slog.LevelDebug {
						t.Errorf("logged %q at %v, want Debug", msg, lvl)
					}
				}
				if _, ok := log.got["extauthz: request body unreadable"]; !ok {
					t.Errorf("no Debug record of the unreadable body: %v", log.got)
				}
			})
		}
	}
}
