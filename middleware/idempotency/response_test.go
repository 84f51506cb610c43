package idempotency_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/middleware/idempotency"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// viaBackend serves POST /pay through the middleware to a Backend whose
// one target is up.
func viaBackend(t *testing.T, up http.HandlerFunc, opts idempotency.Options) string {
	t.Helper()
	u := httptest.NewServer(up)
	t.Cleanup(u.Close)
	b := pylon.MustNewBackend("pay", pylon.BackendOptions{Targets: []string{u.URL}})
	t.Cleanup(func() { b.Close() })
	gw := pylon.New(pylon.Options{})
	gw.Route("POST /pay").Use(authAs, idempotency.New(opts)).To(b)
	require.NoError(t, gw.Err())
	srv := httptest.NewServer(gw)
	t.Cleanup(srv.Close)
	return srv.URL + "/pay"
}

// TestBackendChunkedAnswerStored: an upstream's 201 of 10,000 bytes sent
// chunked (no Content-Length), with a trailer, reaches the middleware
// through a Backend, which flushes every answer of unknown length. A
// flush is not a stream: the answer is stored, and the retry is replayed
// whole (status, headers, body, trailer) instead of paying twice.
func TestBackendChunkedAnswerStored(t *testing.T) {
	var calls atomic.Int64
	body := strings.Repeat("0123456789", 1000)
	url := viaBackend(t, func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Trailer", "X-Checksum")
		w.WriteHeader(http.StatusCreated)
		for i := 0; i < len(body); i += 1000 {
			_, _ = io.WriteString(w, body[i:i+1000])
			w.(http.Flusher).Flush() // chunked: no Content-Length
		}
		w.Header().Set("X-Checksum", "c-1")
	}, idempotency.Options{})

	pay := func() (*http.Response, string) {
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader("x"))
		req.Header.Set("X-User", "alice")
		req.Header.Set("Idempotency-Key", "k1")
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		require.NoError(t, err)
		return res, string(b)
	}
	first, b1 := pay()
	assert.Equal(t, http.StatusCreated, first.StatusCode)
	assert.Equal(t, int64(-1), first.ContentLength, "the first answer was chunked")
	assert.Equal(t, body, b1)
	assert.Equal(t, "c-1", first.Trailer.Get("X-Checksum"))

	again, b2 := pay()
	assert.Equal(t, int64(1), calls.Load(), "the retry ran again")
	assert.Equal(t, "true", again.Header.Get("Idempotent-Replayed"))
	assert.Equal(t, http.StatusCreated, again.StatusCode)
	assert.Equal(t, "application/json", again.Header.Get("Content-Type"))
	assert.Equal(t, body, b2)
	assert.Equal(t, "c-1", again.Trailer.Get("X-Checksum"), "the trailer replayed")
}

// TestNotReplayable: what cannot be replayed is not stored, whatever is
// flushed: an event stream, a body over MaxResponseBytes. The retry runs
// again.
func TestNotReplayable(t *testing.T) {
	tests := []struct {
		name string
		up   http.HandlerFunc
	}{
		{"event stream", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			_, _ = io.WriteString(w, "data: 1\n\n")
			w.(http.Flusher).Flush()
		}},
		{"over MaxResponseBytes", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusCreated)
			for range 3 {
				_, _ = io.WriteString(w, strings.Repeat("a", 400))
				w.(http.Flusher).Flush()
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls atomic.Int64
			url := viaBackend(t, func(w http.ResponseWriter, r *http.Request) {
				calls.Add(1)
				tt.up(w, r)
			}, idempotency.Options{MaxResponseBytes: 1000})
			for range 2 {
				a := post(t, url, "alice", "k1", "x")
				assert.Empty(t, a.header.Get("Idempotent-Replayed"))
			}
			assert.Equal(t, int64(2), calls.Load())
		})
	}
}

// fakeRenewals makes the middlewares that New returns until restore renew
// their claims with fake timers, sent on the channel as they start.
func fakeRenewals() (timers chan *fakeTimer, restore func()) {
	timers = make(chan *fakeTimer, 8)
	restore = idempotency.SetAfterFunc(func(d time.Duration, f func()) idempotency.Timer {
		ft := &fakeTimer{d: d, f: f, armed: true}
		timers <- ft
		return ft
	})
	return timers, restore
}

// waitStopped polls until ft was stopped: the request that started it
// has ended in the middleware.
func waitStopped(t *testing.T, ft *fakeTimer) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		ft.mu.Lock()
		stopped := ft.stopped
		ft.mu.Unlock()
		if stopped {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the first request never ended")
		}
		<-tick.C
	}
}

// TestClientGoneKeyHeldUntilLockTimeout: a client that gives up after its
// request was passed on, before the upstream answers or after it answered
// in full (the charge is done either way), leaves its claim neither
// stored nor released: a retry within LockTimeout gets 409 with
// Retry-After and the upstream does not run again (before, the key was
// released and the retry charged twice). After LockTimeout the outcome is
// unknown and a retry runs.
func TestClientGoneKeyHeldUntilLockTimeout(t *testing.T) {
	for _, answered := range []bool{false, true} {
		name := map[bool]string{false: "before the answer", true: "after the upstream answered"}[answered]
		t.Run(name, func(t *testing.T) {
			c := &clock{now: time.Unix(0, 0)}
			store := idempotency.NewMemoryStore(idempotency.MemoryOptions{Now: c.Now})
			var calls atomic.Int64
			arrived := make(chan struct{}, 1)
			big := strings.Repeat("x", 4<<20)
			timers, restore := fakeRenewals()
			url := viaBackend(t, func(w http.ResponseWriter, r *http.Request) {
				n := calls.Add(1)
				_, _ = io.Copy(io.Discard, r.Body)
				if n == 1 && !answered {
					arrived <- struct{}{}
					<-r.Context().Done() // the Backend gave up on this attempt
					return
				}
				w.WriteHeader(http.StatusCreated)
				if n == 1 {
					_, _ = io.WriteString(w, big)
					return
				}
				_, _ = io.WriteString(w, "charged")
			}, idempotency.Options{Store: store, LockTimeout: time.Minute, MaxResponseBytes: 8 << 20})
			restore()

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader("x"))
			req.Header.Set("X-User", "alice")
			req.Header.Set("Idempotency-Key", "k1")
			errc := make(chan error, 1)
			go func() {
				res, err := http.DefaultClient.Do(req)
				if err == nil {
					_, err = io.ReadFull(res.Body, make([]byte, 10)) // then hang up
					res.Body.Close()
				}
				errc <- err
			}()
			if answered {
				require.NoError(t, <-errc)
			} else {
				<-arrived
				cancel()
				require.ErrorIs(t, <-errc, context.Canceled)
			}
			waitStopped(t, <-timers)

			dup := post(t, url, "alice", "k1", "x")
			assert.Equal(t, http.StatusConflict, dup.status, "the retry ran again: %s", dup.body)
			assert.NotEmpty(t, dup.header.Get("Retry-After"))
			assert.Equal(t, int64(1), calls.Load(), "the upstream ran twice for one key")

			c.Add(time.Minute + time.Second) // the claim expired: the outcome is unknown
			a := post(t, url, "alice", "k1", "x")
			assert.Equal(t, http.StatusCreated, a.status)
			assert.Equal(t, "charged", a.body)
			assert.Equal(t, int64(2), calls.Load())
			assert.Equal(t, "true", post(t, url, "alice", "k1", "x").header.Get("Idempotent-Replayed"))
		})
	}
}

// TestNothingWrittenStoredAs200: a handler that returns without writing
// answers an implicit 200, as net/http sends it; it is stored and replayed
// like any other answer (before, the retry ran the handler again).
func TestNothingWrittenStoredAs200(t *testing.T) {
	var calls atomic.Int64
	url := newGateway(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		calls.Add(1)
		w.Header().Set("X-Done", "1")
	}), idempotency.Options{})
	first := post(t, url, "alice", "k1", "x")
	assert.Equal(t, http.StatusOK, first.status)
	again := post(t, url, "alice", "k1", "x")
	assert.Equal(t, http.StatusOK, again.status)
	assert.Equal(t, "true", again.header.Get("Idempotent-Replayed"))
	assert.Equal(t, "1", again.header.Get("X-Done"))
	assert.Equal(t, int64(1), calls.Load())
}

// TestHijackedNotStored: a handler that takes the connection writes no
// answer to store: the key is released and the next try runs again.
func TestHijackedNotStored(t *testing.T) {
	var calls atomic.Int64
	url := newGateway(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		calls.Add(1)
		c, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		_, _ = rw.WriteString("HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
		_ = rw.Flush()
		_ = c.Close()
	}), idempotency.Options{})
	for i := range 2 {
		// The client reads the hijacked answer before the handler has
		// returned and the key is released: a try in between is 409
		// (in flight), so the second one polls, with a deadline.
		a := post(t, url, "alice", "k1", "x")
		for deadline := time.Now().Add(5 * time.Second); i == 1 && a.status == http.StatusConflict && time.Now().Before(deadline); {
			a = post(t, url, "alice", "k1", "x")
		}
		assert.Equal(t, http.StatusNoContent, a.status)
		assert.Empty(t, a.header.Get("Idempotent-Replayed"))
	}
	assert.Equal(t, int64(2), calls.Load())
}
