package pylon_test

import (
	"bufio"
	"context"
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

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/breaker"
)

// How a cutUpstream answers.
const (
	answerOK        = iota // 200, the whole body
	answer503              // 503, the whole body
	answerTruncated        // Content-Length: 10000, half the bytes, then FIN
	answerChunkCut         // chunked, one chunk, then FIN in the middle of the next
	answerReset            // Content-Length: 10000, half the bytes, then RST once told to
)

const fullBody = 10000

var quiet = slog.New(slog.DiscardHandler)

// cutUpstream is a loopback upstream whose answer mode selects. For
// answerReset it waits for a value on cut (sent once the test's client has
// the response headers, so the proxy is mid-body) before resetting.
type cutUpstream struct {
	*httptest.Server
	mode atomic.Int32
	hits atomic.Int32
	cut  chan struct{}
}

func newCutUpstream(t *testing.T, mode int32) *cutUpstream {
	t.Helper()
	u := &cutUpstream{cut: make(chan struct{})}
	u.mode.Store(mode)
	release := make(chan struct{})
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.hits.Add(1)
		body := strings.Repeat("x", fullBody)
		switch m := u.mode.Load(); m {
		case answerOK, answer503:
			w.Header().Set("Content-Length", fmt.Sprint(fullBody))
			if m == answer503 {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
			io.WriteString(w, body)
			return
		default:
			conn, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				t.Errorf("hijack: %v", err)
				return
			}
			defer conn.Close()
			switch m {
			case answerTruncated, answerReset:
				fmt.Fprintf(brw, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: text/plain\r\n\r\n%s", fullBody, body[:fullBody/2])
			case answerChunkCut:
				fmt.Fprintf(brw, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n%x\r\n%s\r\n%x\r\n%s", 4000, body[:4000], 4000, body[:1000])
			}
			brw.Flush()
			if m == answerReset {
				select {
				case <-u.cut:
				case <-release:
				}
				conn.(*net.TCPConn).SetLinger(0) // Close sends RST
			}
		}
	}))
	t.Cleanup(u.Close)
	t.Cleanup(func() { close(release) }) // runs first: no handler outlives Close
	return u
}

// abortFront serves a Gateway with one catch-all route to be over loopback.
// Each request's RequestInfo, as the stages left it, is sent on the
// returned channel once the request is over, panics included, as an access
// log would see it.
func abortFront(t *testing.T, be *pylon.Backend) (*httptest.Server, *http.Client, <-chan pylon.RequestInfo) {
	t.Helper()
	infos := make(chan pylon.RequestInfo, 64)
	g := pylon.New(pylon.Options{})
	g.Use(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			defer func() { infos <- *pylon.Info(r.Context()) }()
			next.ServeHTTP(w, r)
		})
	})
	g.Route("/").To(be)
	require.NoError(t, g.Err())
	s := httptest.NewServer(g)
	t.Cleanup(s.Close)
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return s, &http.Client{Transport: tr}, infos
}

func nextInfo(t *testing.T, infos <-chan pylon.RequestInfo) pylon.RequestInfo {
	t.Helper()
	select {
	case info := <-infos:
		return info
	case <-time.After(5 * time.Second):
		t.Fatal("timed out waiting for the request to end")
		return pylon.RequestInfo{}
	}
}

// get sends GET url and reads the whole body; it returns the status, how
// many body bytes arrived, and the error reading them. cut, when not nil,
// is signalled once the response headers are in.
func get(t *testing.T, c *http.Client, url string, cut chan<- struct{}) (status, n int, err error) {
	t.Helper()
	res, err := c.Get(url)
	require.NoError(t, err)
	defer res.Body.Close()
	if cut != nil {
		cut <- struct{}{}
	}
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, len(b), err
}

// eventually polls cond every millisecond until it holds or 5s pass.
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

func abortBackend(t *testing.T, opts pylon.BackendOptions) *pylon.Backend {
	t.Helper()
	opts.Logger = quiet
	be, err := pylon.NewBackend("orders", opts)
	require.NoError(t, err)
	t.Cleanup(func() { be.Close() })
	return be
}

// TestAbortedResponseEndsItsAttempt: a body the upstream cuts mid-way
// aborts the client's response, and still ends the attempt: the target's
// in-flight count returns to zero and RequestInfo tells what happened.
func TestAbortedResponseEndsItsAttempt(t *testing.T) {
	for _, tc := range []struct {
		name string
		mode int32
	}{
		{"content-length truncated", answerTruncated},
		{"chunked cut", answerChunkCut},
		{"connection reset", answerReset},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := newCutUpstream(t, tc.mode)
			be := abortBackend(t, pylon.BackendOptions{
				Targets:  []string{up.URL},
				Balancer: pylon.LeastRequests(),
				Outlier:  pylon.OutlierDetection{ConsecutiveFailures: -1},
			})
			gw, c, infos := abortFront(t, be)
			var cut chan struct{}
			if tc.mode == answerReset {
				cut = up.cut
			}
			const n = 5
			for range n {
				status, got, err := get(t, c, gw.URL+"/orders", cut)
				assert.Equal(t, 200, status)
				assert.Error(t, err, "the client never sees a cut body as complete")
				assert.Less(t, got, fullBody)
				info := nextInfo(t, infos)
				assert.Equal(t, 200, info.UpstreamStatus)
				assert.Equal(t, up.URL, info.Target)
				assert.False(t, info.ClientCanceled)
				assert.True(t, strings.HasPrefix(info.Error, "upstream body: "), "info.Error %q", info.Error)
			}
			target := be.Targets()[0]
			eventually(t, "in-flight back to 0", func() bool { return target.InFlight() == 0 })

			up.mode.Store(answerOK)
			status, got, err := get(t, c, gw.URL+"/orders", nil)
			require.NoError(t, err)
			assert.Equal(t, 200, status)
			assert.Equal(t, fullBody, got)
			assert.Equal(t, int32(n+1), up.hits.Load())
			nextInfo(t, infos)
			assert.Equal(t, 0, target.InFlight())
		})
	}
}

// TestAbortedResponsesEjectTheTarget: a target that cuts every body is a
// failing target for passive health, while a healthy one keeps serving.
func TestAbortedResponsesEjectTheTarget(t *testing.T) {
	bad := newCutUpstream(t, answerTruncated)
	good := newCutUpstream(t, answerOK)
	be := abortBackend(t, pylon.BackendOptions{
		Targets:  []string{bad.URL, good.URL},
		Balancer: pylon.RoundRobin(),
		Outlier:  pylon.OutlierDetection{ConsecutiveFailures: 3, BaseEjectionTime: time.Minute, PanicThreshold: -1},
	})
	gw, c, infos := abortFront(t, be)
	aborted, whole := 0, 0
	for range 12 {
		_, got, err := get(t, c, gw.URL+"/", nil)
		nextInfo(t, infos) // the attempt has ended
		if err != nil {
			aborted++
		} else if got == fullBody {
			whole++
		}
	}
	assert.Equal(t, 3, aborted, "three cut bodies in a row eject the bad target")
	assert.Equal(t, 9, whole)
	assert.Equal(t, int32(3), bad.hits.Load())
	ts := be.Targets()
	assert.Equal(t, uint64(1), ts[0].Ejections())
	assert.False(t, ts[0].Healthy())
	assert.True(t, ts[1].Healthy())
	assert.Equal(t, 0, ts[0].InFlight())
	assert.Equal(t, 0, ts[1].InFlight())
}

// TestAbortedProbeReleasesTheBreaker: a half-open breaker's probe whose body
// the upstream cuts counts as a failure and frees the probe's slot, so once
// the upstream recovers the breaker closes again.
func TestAbortedProbeReleasesTheBreaker(t *testing.T) {
	settings := breaker.Settings{Name: "orders", ConsecutiveFailures: 2, OpenDuration: 20 * time.Millisecond, Logger: quiet}
	for _, tc := range []struct {
		name  string
		guard func() (pylon.Guard, func(*pylon.Target) breaker.State)
	}{
		{"per target", func() (pylon.Guard, func(*pylon.Target) breaker.State) {
			g := breaker.MustPerTarget(settings)
			return g, g.State
		}},
		{"per backend", func() (pylon.Guard, func(*pylon.Target) breaker.State) {
			g := breaker.MustPerBackend(settings)
			return g, func(*pylon.Target) breaker.State { return g.State() }
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := newCutUpstream(t, answer503)
			guard, state := tc.guard()
			be := abortBackend(t, pylon.BackendOptions{
				Targets: []string{up.URL},
				Outlier: pylon.OutlierDetection{ConsecutiveFailures: -1}, // the breaker alone decides
				Guard:   guard,
			})
			target := be.Targets()[0]
			gw, c, infos := abortFront(t, be)

			// Two 503s open the breaker.
			for range 2 {
				status, _, _ := get(t, c, gw.URL+"/", nil)
				assert.Equal(t, 503, status)
				nextInfo(t, infos)
			}
			require.Equal(t, breaker.StateOpen, state(target))

			// Once half-open, the probe reaches the upstream, which cuts
			// its body: a failure, and the probe's slot is given back.
			up.mode.Store(answerTruncated)
			eventually(t, "a probe", func() bool {
				_, _, err := get(t, c, gw.URL+"/", nil)
				info := nextInfo(t, infos)
				if up.hits.Load() == 2 {
					return false // refused while open
				}
				assert.Error(t, err)
				assert.Equal(t, "half-open", info.Breaker)
				return true
			})
			assert.NotEqual(t, breaker.StateClosed, state(target), "a cut probe is a failure")

			// The upstream recovers: the next probe succeeds and the
			// breaker closes, where before it stayed half-open for good.
			up.mode.Store(answerOK)
			eventually(t, "a successful probe", func() bool {
				status, got, err := get(t, c, gw.URL+"/", nil)
				nextInfo(t, infos)
				return err == nil && status == 200 && got == fullBody
			})
			assert.Equal(t, breaker.StateClosed, state(target))
			for range 3 {
				status, got, err := get(t, c, gw.URL+"/", nil)
				nextInfo(t, infos)
				require.NoError(t, err)
				assert.Equal(t, 200, status)
				assert.Equal(t, fullBody, got)
			}
			assert.Equal(t, 0, target.InFlight())
		})
	}
}

// TestClientGoneMidBodyIsNotTheTargets: a client that goes away mid-body is
// logged as canceled and counts against neither passive health nor the
// breaker, whose thresholds here are one failure.
func TestClientGoneMidBodyIsNotTheTargets(t *testing.T) {
	for _, tc := range []struct {
		name   string
		stream bool // the upstream keeps writing (the proxy's write fails); else it stalls
	}{
		{"stalled upstream", false},
		{"streaming upstream", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			release := make(chan struct{})
			chunk := []byte(strings.Repeat("y", 4<<10))
			up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/plain")
				w.Write(chunk)
				w.(http.Flusher).Flush()
				if r.URL.Path == "/whole" {
					return
				}
				for tc.stream {
					if _, err := w.Write(chunk); err != nil {
						return
					}
					w.(http.Flusher).Flush()
				}
				select {
				case <-r.Context().Done(): // the proxy closed the connection
				case <-release:
				}
			}))
			t.Cleanup(up.Close)
			t.Cleanup(func() { close(release) })
			g := breaker.MustPerTarget(breaker.Settings{Name: "orders", ConsecutiveFailures: 1, Logger: quiet})
			be := abortBackend(t, pylon.BackendOptions{
				Targets: []string{up.URL},
				Outlier: pylon.OutlierDetection{ConsecutiveFailures: 1, BaseEjectionTime: time.Minute, PanicThreshold: -1},
				Guard:   g,
			})
			target := be.Targets()[0]
			gw, c, infos := abortFront(t, be)

			for range 3 {
				ctx, cancel := context.WithCancel(t.Context())
				req, _ := http.NewRequestWithContext(ctx, "GET", gw.URL+"/", nil)
				res, err := c.Do(req)
				require.NoError(t, err)
				_, err = io.ReadFull(res.Body, make([]byte, 1024))
				require.NoError(t, err)
				cancel() // the client goes away mid-body
				res.Body.Close()
				info := nextInfo(t, infos)
				assert.True(t, info.ClientCanceled, "logged as 499")
				assert.Equal(t, "client canceled", info.Error)
			}
			eventually(t, "in-flight back to 0", func() bool { return target.InFlight() == 0 })
			assert.Zero(t, target.Ejections())
			assert.True(t, target.Healthy())
			assert.Equal(t, breaker.StateClosed, g.State(target))

			status, _, err := get(t, c, gw.URL+"/whole", nil)
			require.NoError(t, err)
			assert.Equal(t, 200, status)
			nextInfo(t, infos)
		})
	}
}

// recordingGuard admits every attempt and records each done call.
type recordingGuard struct {
	mu        sync.Mutex
	statuses  []int
	errs      []error
	panicDone bool
}

func (g *recordingGuard) Allow(*http.Request, *pylon.Target) (func(int, error), error) {
	return func(status int, err error) {
		g.mu.Lock()
		g.statuses = append(g.statuses, status)
		g.errs = append(g.errs, err)
		g.mu.Unlock()
		if g.panicDone {
			panic("guard done")
		}
	}, nil
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// panicWriter is a ResponseWriter (a user's middleware's, say) that panics
// on the first body write.
type panicWriter struct{ *httptest.ResponseRecorder }

func (panicWriter) Write([]byte) (int, error) { panic("writer") }

// TestPanicInAttemptEndsIt: a panic from a Transport, a ResponseWriter or a
// Guard's done still ends the attempt exactly once, and says nothing about
// the target.
func TestPanicInAttemptEndsIt(t *testing.T) {
	up := newCutUpstream(t, answerOK)
	for _, tc := range []struct {
		name       string
		transport  http.RoundTripper
		writer     func(*httptest.ResponseRecorder) http.ResponseWriter
		panicDone  bool
		wantStatus int  // the status the guard is told
		wantNeutr  bool // the guard is told the attempt says nothing about the target
	}{
		{name: "transport", transport: roundTripFunc(func(*http.Request) (*http.Response, error) { panic("transport") }), wantStatus: 0, wantNeutr: true},
		{name: "writer", writer: func(rec *httptest.ResponseRecorder) http.ResponseWriter { return panicWriter{rec} }, wantStatus: 200, wantNeutr: true},
		{name: "guard done", panicDone: true, wantStatus: 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := &recordingGuard{panicDone: tc.panicDone}
			be := abortBackend(t, pylon.BackendOptions{
				Targets:   []string{up.URL},
				Transport: tc.transport,
				Guard:     g,
				Outlier:   pylon.OutlierDetection{ConsecutiveFailures: 1, BaseEjectionTime: time.Minute, PanicThreshold: -1},
			})
			rec := httptest.NewRecorder()
			var w http.ResponseWriter = rec
			if tc.writer != nil {
				w = tc.writer(rec)
			}
			assert.Panics(t, func() { be.ServeHTTP(w, httptest.NewRequest("GET", "/", nil)) })
			target := be.Targets()[0]
			assert.Equal(t, 0, target.InFlight())
			assert.Zero(t, target.Ejections())
			require.Len(t, g.statuses, 1, "done is called exactly once")
			assert.Equal(t, tc.wantStatus, g.statuses[0])
			if tc.wantNeutr {
				assert.ErrorIs(t, g.errs[0], context.Canceled)
			} else {
				assert.NoError(t, g.errs[0])
			}
		})
	}
}

// TestUnaskedUpgradeIsAFailure: a target that switches protocols when the
// client did not ask answers 502 and counts as failing, for passive health
// and for the guard.
func TestUnaskedUpgradeIsAFailure(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		bufio.NewReader(conn).ReadByte() // until the proxy closes
	}))
	t.Cleanup(up.Close)
	g := &recordingGuard{}
	be := abortBackend(t, pylon.BackendOptions{
		Targets: []string{up.URL},
		Guard:   g,
		Outlier: pylon.OutlierDetection{ConsecutiveFailures: 1, BaseEjectionTime: time.Minute, PanicThreshold: -1},
	})
	rec := httptest.NewRecorder()
	be.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	assert.Equal(t, 502, rec.Code)
	target := be.Targets()[0]
	assert.Equal(t, 0, target.InFlight())
	assert.Equal(t, uint64(1), target.Ejections())
	require.Len(t, g.errs, 1)
	assert.Equal(t, 101, g.statuses[0])
	assert.Error(t, g.errs[0])
	assert.False(t, errors.Is(g.errs[0], context.Canceled))
}
