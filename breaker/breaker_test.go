package breaker

import (
	"context"
	"encoding/json"
	"errors"
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
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var quiet = slog.New(slog.DiscardHandler)

// clock is a settable time source for Retry-After.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *clock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// upstream is a handler that counts its hits and answers the status it is
// told to.
type upstream struct {
	hits   atomic.Int64
	status atomic.Int64
}

func newUpstream(status int) *upstream {
	u := &upstream{}
	u.status.Store(int64(status))
	return u
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.hits.Add(1)
	w.WriteHeader(int(u.status.Load()))
}

// newTest builds a breaker with a fake clock for Retry-After.
func newTest(t *testing.T, s Settings) (*Breaker, *clock) {
	t.Helper()
	if s.Logger == nil {
		s.Logger = quiet
	}
	b, err := New(s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	c := newClock()
	b.cfg.now = c.Now
	return b, c
}

// do sends one request through h, with a RequestInfo in its context.
func do(h http.Handler) (*httptest.ResponseRecorder, *pylon.RequestInfo) {
	info := &pylon.RequestInfo{RequestID: "req-1"}
	r := httptest.NewRequest("GET", "/orders/1", nil)
	r = r.WithContext(pylon.NewContext(r.Context(), info))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w, info
}

// eventually polls cond until it holds or a deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// waitHalfOpen waits for the open period (gobreaker reads the real clock)
// to end; gobreaker's State moves the breaker to half-open once it has.
func waitHalfOpen(t *testing.T, b *Breaker) {
	t.Helper()
	eventually(t, "half-open", func() bool {
		if b.ts.Load() != nil {
			return b.ts.Load().State() == StateHalfOpen
		}
		return b.cb.Load().State() == StateHalfOpen
	})
}

func TestTripsAndRefusesWithoutCallingBackend(t *testing.T) {
	tests := []struct {
		name     string
		settings Settings
		statuses []int // upstream answers, in order; the last one trips
	}{
		{"consecutive failures", Settings{ConsecutiveFailures: 3}, []int{500, 502, 503}},
		{"default is 5 in a row", Settings{}, []int{500, 500, 500, 500, 504}},
		{"ratio over window", Settings{FailureRatio: 0.5, MinRequests: 4}, []int{500, 500, 200, 200, 500}},
		{"custom failure status", Settings{ConsecutiveFailures: 2, FailureStatus: []int{429}}, []int{429, 429}},
		{"predicate", Settings{ConsecutiveFailures: 2, IsFailure: func(_ *http.Request, status int, _ error) bool {
			return status == http.StatusTeapot
		}}, []int{418, 418}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, clk := newTest(t, tt.settings)
			up := newUpstream(200)
			h := b.Middleware(up)
			for i, st := range tt.statuses {
				if b.State() != StateClosed {
					t.Fatalf("open after %d requests, want after %d", i, len(tt.statuses))
				}
				up.status.Store(int64(st))
				w, info := do(h)
				if w.Code != st || info.Breaker != "closed" {
					t.Fatalf("request %d: status %d, breaker %q; want %d through a closed breaker", i, w.Code, info.Breaker, st)
				}
			}
			if b.State() != StateOpen {
				t.Fatalf("state %v after the failures, want open", b.State())
			}
			hits := up.hits.Load()
			clk.Advance(10 * time.Second)
			for range 5 {
				w, info := do(h)
				if w.Code != http.StatusServiceUnavailable {
					t.Fatalf("open breaker answered %d, want 503", w.Code)
				}
				if got := w.Header().Get("Retry-After"); got != "20" {
					t.Errorf("Retry-After %q, want 20 (30s open, 10s gone)", got)
				}
				if ct := w.Header().Get("Content-Type"); ct != pylon.ProblemContentType {
					t.Errorf("Content-Type %q", ct)
				}
				var p pylon.Problem
				if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil || p.Status != 503 || p.RequestID != "req-1" {
					t.Errorf("problem %+v (%v)", p, err)
				}
				if info.Breaker != "open" {
					t.Errorf("RequestInfo.Breaker %q, want open", info.Breaker)
				}
			}
			if got := up.hits.Load(); got != hits {
				t.Fatalf("backend called %d times while open", got-hits)
			}
		})
	}
}

func TestNotCounted(t *testing.T) {
	t.Run("4xx are successes", func(t *testing.T) {
		b, _ := newTest(t, Settings{ConsecutiveFailures: 1})
		for _, st := range []int{400, 401, 403, 404, 409, 429, 499} {
			do(b.Middleware(newUpstream(st)))
		}
		if b.State() != StateClosed {
			t.Fatalf("4xx tripped the breaker")
		}
		if c := b.cb.Load().Counts(); c.TotalSuccesses != 7 || c.TotalFailures != 0 {
			t.Fatalf("counts %+v, want 7 successes", c)
		}
	})
	t.Run("client cancellation is neither failure nor success", func(t *testing.T) {
		b, _ := newTest(t, Settings{ConsecutiveFailures: 1})
		// Like a pylon Backend: nothing is written when the client is gone.
		gone := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if info := pylon.Info(r.Context()); info != nil {
				info.ClientCanceled = true
			}
		})
		for range 10 {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			r := httptest.NewRequest("GET", "/", nil).WithContext(pylon.NewContext(ctx, &pylon.RequestInfo{}))
			b.Middleware(gone).ServeHTTP(httptest.NewRecorder(), r)
		}
		if c := b.cb.Load().Counts(); b.State() != StateClosed || c.TotalFailures != 0 || c.TotalSuccesses != 0 || c.TotalExclusions != 10 {
			t.Fatalf("state %v, counts %+v; want closed and 10 exclusions", b.State(), c)
		}
	})
	t.Run("client cancellation does not close a half-open breaker", func(t *testing.T) {
		b, _ := newTest(t, Settings{ConsecutiveFailures: 1, OpenDuration: 20 * time.Millisecond})
		do(b.Middleware(newUpstream(500)))
		waitHalfOpen(t, b)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		r := httptest.NewRequest("GET", "/", nil).WithContext(ctx)
		b.Middleware(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})).ServeHTTP(httptest.NewRecorder(), r)
		if s := b.cb.Load().State(); s != StateHalfOpen {
			t.Fatalf("state %v after a canceled probe, want half-open", s)
		}
		// The canceled probe gave its place back: a real probe goes through.
		up := newUpstream(200)
		if w, _ := do(b.Middleware(up)); w.Code != 200 || up.hits.Load() != 1 {
			t.Fatalf("probe after a canceled one: %d", w.Code)
		}
		if s := b.cb.Load().State(); s != StateClosed {
			t.Fatalf("state %v after a good probe, want closed", s)
		}
	})
}

func TestHalfOpen(t *testing.T) {
	const probes = 3
	b, _ := newTest(t, Settings{ConsecutiveFailures: 1, OpenDuration: 20 * time.Millisecond, MaxRequests: probes})
	up := newUpstream(500)
	do(b.Middleware(up))
	if b.State() != StateOpen {
		t.Fatal("not open")
	}
	waitHalfOpen(t, b)

	// 100 concurrent requests: exactly `probes` reach the backend, which
	// holds them; the rest are refused at once.
	release := make(chan struct{})
	var hits atomic.Int64
	held := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		<-release
		w.WriteHeader(200)
	})
	h := b.Middleware(held)
	codes := make(chan int, 100)
	var wg sync.WaitGroup
	for range 100 {
		wg.Go(func() {
			w, _ := do(h)
			codes <- w.Code
		})
	}
	refused := 0
	for refused < 100-probes {
		select {
		case c := <-codes:
			if c != http.StatusServiceUnavailable {
				t.Fatalf("a request beyond the probes got %d", c)
			}
			refused++
		case <-time.After(5 * time.Second):
			t.Fatalf("only %d requests refused", refused)
		}
	}
	// Every request is now either refused or admitted; the admitted ones
	// may still be on their way into the handler.
	eventually(t, "the probes to arrive", func() bool { return hits.Load() >= probes })
	if got := hits.Load(); got != probes {
		t.Fatalf("%d probes reached the backend, want %d", got, probes)
	}
	close(release)
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != 200 {
			t.Fatalf("probe answered %d", c)
		}
	}
	if b.State() != StateClosed {
		t.Fatalf("state %v after %d good probes, want closed", b.State(), probes)
	}
	if w, _ := do(h); w.Code != 200 {
		t.Fatalf("closed breaker answered %d", w.Code)
	}

	// A failing probe opens it again.
	do(b.Middleware(up))
	waitHalfOpen(t, b)
	before := up.hits.Load()
	if w, _ := do(b.Middleware(up)); w.Code != 500 {
		t.Fatalf("probe answered %d", w.Code)
	}
	if b.State() != StateOpen {
		t.Fatalf("state %v after a failed probe, want open", b.State())
	}
	if w, _ := do(b.Middleware(up)); w.Code != 503 || up.hits.Load() != before+1 {
		t.Fatalf("reopened breaker answered %d, backend hits %d", w.Code, up.hits.Load()-before)
	}
}

func TestTimeoutsTrip(t *testing.T) {
	// A route timeout: the handler (a pylon Backend) answers 504.
	b, _ := newTest(t, Settings{ConsecutiveFailures: 2})
	h := b.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), time.Nanosecond)
		defer cancel()
		<-ctx.Done()
		pylon.Error(w, r, http.StatusGatewayTimeout, "slow")
	}))
	do(h)
	do(h)
	if b.State() != StateOpen {
		t.Fatal("504s did not trip the breaker")
	}
}

// errTransport fails every round trip with err.
type errTransport struct {
	err  error
	hits atomic.Int64
}

func (e *errTransport) RoundTrip(*http.Request) (*http.Response, error) {
	e.hits.Add(1)
	return nil, e.err
}

func TestTransport(t *testing.T) {
	timeout := &net.OpError{Op: "read", Net: "tcp", Err: context.DeadlineExceeded}
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	tests := []struct {
		name  string
		err   error
		trips bool
	}{
		{"timeout", timeout, true},
		{"deadline", context.DeadlineExceeded, true},
		{"connection refused", refused, true},
		{"client canceled", context.Canceled, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, _ := newTest(t, Settings{ConsecutiveFailures: 2})
			et := &errTransport{err: tt.err}
			rt := b.Transport(et)
			for range 2 {
				r := httptest.NewRequest("GET", "http://upstream/", nil)
				if _, err := rt.RoundTrip(r); !errors.Is(err, tt.err) {
					t.Fatalf("err %v", err)
				}
			}
			if got := b.State() == StateOpen; got != tt.trips {
				t.Fatalf("open = %v, want %v", got, tt.trips)
			}
			if !tt.trips {
				return
			}
			r := httptest.NewRequest("POST", "http://upstream/", strings.NewReader("x"))
			_, err := rt.RoundTrip(r)
			var ref *RefusedError
			if !errors.Is(err, ErrOpen) || !errors.As(err, &ref) || ref.RetryAfter() != 30*time.Second {
				t.Fatalf("refusal %v", err)
			}
			if et.hits.Load() != 2 {
				t.Fatalf("refused request was sent")
			}
		})
	}

	t.Run("statuses", func(t *testing.T) {
		up := newUpstream(503)
		srv := httptest.NewServer(up)
		defer srv.Close()
		b, _ := newTest(t, Settings{ConsecutiveFailures: 2})
		c := &http.Client{Transport: b.Transport(nil)}
		for range 3 {
			res, err := c.Get(srv.URL)
			if err == nil {
				res.Body.Close()
			}
		}
		if b.State() != StateOpen || up.hits.Load() != 2 {
			t.Fatalf("state %v, hits %d", b.State(), up.hits.Load())
		}
	})
}

func TestFallback(t *testing.T) {
	b, _ := newTest(t, Settings{ConsecutiveFailures: 1, Fallback: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"orders":[]}`)
	})})
	do(b.Middleware(newUpstream(500)))
	w, info := do(b.Middleware(newUpstream(200)))
	if w.Code != 200 || w.Body.String() != `{"orders":[]}` || info.Breaker != "open" {
		t.Fatalf("fallback: %d %q %q", w.Code, w.Body, info.Breaker)
	}
}

// records collects log records.
type records struct {
	mu   sync.Mutex
	msgs []string
}

func (r *records) Enabled(context.Context, slog.Level) bool { return true }
func (r *records) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var to string
	rec.Attrs(func(a slog.Attr) bool {
		if a.Key == "to" {
			to = a.Value.String()
		}
		return true
	})
	r.msgs = append(r.msgs, rec.Message+" to="+to)
	return nil
}
func (r *records) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *records) WithGroup(string) slog.Handler      { return r }

func TestStateChangesLoggedAndReportedOnce(t *testing.T) {
	var mu sync.Mutex
	var events []string
	logs := &records{}
	b, _ := newTest(t, Settings{
		Name:                "orders",
		ConsecutiveFailures: 2,
		OpenDuration:        20 * time.Millisecond,
		Logger:              slog.New(logs),
		OnStateChange: func(name string, from, to State) {
			mu.Lock()
			defer mu.Unlock()
			events = append(events, name+":"+from.String()+">"+to.String())
		},
	})
	bad, good := b.Middleware(newUpstream(500)), b.Middleware(newUpstream(200))
	for range 5 {
		do(bad) // trips on the 2nd; the rest are refused
	}
	waitHalfOpen(t, b)
	for range 3 {
		do(good)
	}
	want := []string{"orders:closed>open", "orders:open>half-open", "orders:half-open>closed"}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(events, " ") != strings.Join(want, " ") {
		t.Fatalf("events %v, want %v", events, want)
	}
	logs.mu.Lock()
	defer logs.mu.Unlock()
	if len(logs.msgs) != 3 || logs.msgs[0] != "breaker: state change to=open" {
		t.Fatalf("logs %v", logs.msgs)
	}
}

func TestSettingsErrors(t *testing.T) {
	tests := []struct {
		name string
		s    Settings
	}{
		{"ratio above 1", Settings{FailureRatio: 1.5}},
		{"negative ratio", Settings{FailureRatio: -0.1}},
		{"negative open", Settings{OpenDuration: -time.Second}},
		{"bad status", Settings{FailureStatus: []int{700}}},
		{"window too short", Settings{Window: 5, Buckets: 10}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.s.Name = "orders"
			_, err := New(tt.s)
			if err == nil || !strings.Contains(err.Error(), `breaker "orders"`) {
				t.Fatalf("err %v, want one naming the breaker", err)
			}
			if _, err := PerTarget(tt.s); err == nil {
				t.Fatal("PerTarget accepted it")
			}
		})
	}
}

func TestWriterKeepsFlushAndHijack(t *testing.T) {
	b, _ := newTest(t, Settings{})
	srv := httptest.NewServer(b.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hijack" {
			conn, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				t.Errorf("hijack: %v", err)
				return
			}
			defer conn.Close()
			brw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi")
			brw.Flush()
			return
		}
		io.WriteString(w, "a")
		if err := http.NewResponseController(w).Flush(); err != nil {
			t.Errorf("flush: %v", err)
		}
		if _, ok := w.(interface{ Unwrap() http.ResponseWriter }); !ok {
			t.Error("no Unwrap")
		}
	})))
	defer srv.Close()
	for _, path := range []string{"/flush", "/hijack"} {
		res, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || len(body) == 0 {
			t.Fatalf("%s: %d %q", path, res.StatusCode, body)
		}
	}
	srv.CloseClientConnections()
}

func TestReset(t *testing.T) {
	var changes []string
	b, _ := newTest(t, Settings{Name: "pay", ConsecutiveFailures: 2, OnStateChange: func(name string, from, to State) {
		changes = append(changes, from.String()+">"+to.String())
	}})
	up := newUpstream(500)
	h := b.Middleware(up)
	do(h)
	do(h)
	if b.State() != StateOpen {
		t.Fatalf("state %v, want open", b.State())
	}
	if err := b.Reset(); err != nil {
		t.Fatal(err)
	}
	if b.State() != StateClosed {
		t.Fatalf("state after Reset %v, want closed", b.State())
	}
	up.status.Store(200)
	if w, _ := do(h); w.Code != 200 {
		t.Fatalf("after Reset: %d, want the upstream's 200", w.Code)
	}
	if want := []string{"closed>open", "open>closed"}; fmt.Sprint(changes) != fmt.Sprint(want) {
		t.Fatalf("changes %v, want %v", changes, want)
	}
	// A guard's breakers reset the same way.
	g := MustPerBackend(Settings{Name: "orders", ConsecutiveFailures: 1, Logger: quiet})
	done, err := g.Allow(httptest.NewRequest("GET", "/", nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	done(502, nil)
	if g.State() != StateOpen || g.Name() != "orders" {
		t.Fatalf("guard %q state %v, want open", g.Name(), g.State())
	}
	if err := g.Reset(); err != nil || g.State() != StateClosed {
		t.Fatalf("guard after Reset: %v %v", g.State(), err)
	}
}
