package cache

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// clock is a settable clock for Options.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// origin is a backend handler that counts its calls and records the last
// request it saw.
type origin struct {
	calls atomic.Int64
	mu    sync.Mutex
	last  *http.Request
	fn    func(w http.ResponseWriter, r *http.Request)
}

func (o *origin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	o.calls.Add(1)
	o.mu.Lock()
	o.last = r
	fn := o.fn
	o.mu.Unlock()
	fn(w, r)
}

func (o *origin) set(fn func(w http.ResponseWriter, r *http.Request)) {
	o.mu.Lock()
	o.fn = fn
	o.mu.Unlock()
}

func (o *origin) lastReq() *http.Request {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.last
}

// static returns an origin function answering body with the given header
// fields ("Name: value").
func static(status int, body string, fields ...string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		for _, f := range fields {
			k, v, _ := strings.Cut(f, ":")
			w.Header().Add(k, strings.TrimSpace(v))
		}
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}
}

func newTestCache(t testing.TB, opts Options) *Cache {
	t.Helper()
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// get sends a request through h; fields are "Name: value" request headers.
func get(h http.Handler, method, target string, fields ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, nil)
	for _, f := range fields {
		k, v, _ := strings.Cut(f, ":")
		r.Header.Add(k, strings.TrimSpace(v))
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// status returns the cache's own Cache-Status member (the last one).
func status(w *httptest.ResponseRecorder) string {
	v := w.Result().Header.Values("Cache-Status")
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		case <-tick.C:
		}
	}
}

// logRecorder is a slog.Handler that keeps every record.
type logRecorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *logRecorder) WithGroup(string) slog.Handler            { return h }

func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.recs = append(h.recs, r.Clone())
	h.mu.Unlock()
	return nil
}

// records returns the messages logged so far, each with its attributes
// ("msg key=value ...").
func (h *logRecorder) records() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]string, 0, len(h.recs))
	for _, r := range h.recs {
		s := r.Message
		r.Attrs(func(a slog.Attr) bool {
			s += " " + a.String()
			return true
		})
		out = append(out, s)
	}
	return out
}
