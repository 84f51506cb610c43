package idempotency_test

import (
	"context"
	"errors"
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

// retryUntilFree posts until the answer is not a 409 (the first request's
// claim is released as its handler returns, just after its client left).
func retryUntilFree(t *testing.T, url, key string) answer {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		a := post(t, url, "alice", key, "x")
		if a.status != http.StatusConflict || time.Now().After(deadline) {
			return a
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestClientGoneNotStored: a client that gives up before the upstream
// answers, or in the middle of the answer, leaves nothing stored under its
// key (before, an empty 200 that the Backend never wrote, or the part of the
// body it had relayed): its retry runs again and gets the real answer.
func TestClientGoneNotStored(t *testing.T) {
	for _, midBody := range []bool{false, true} {
		name := map[bool]string{false: "before the answer", true: "in the middle of the body"}[midBody]
		t.Run(name, func(t *testing.T) {
			var calls atomic.Int64
			arrived := make(chan struct{}, 1)
			url := viaBackend(t, func(w http.ResponseWriter, r *http.Request) {
				n := calls.Add(1)
				_, _ = io.Copy(io.Discard, r.Body)
				if n == 1 {
					if midBody {
						w.WriteHeader(http.StatusCreated)
						_, _ = io.WriteString(w, strings.Repeat("a", 1000))
						w.(http.Flusher).Flush()
					}
					arrived <- struct{}{}
					<-r.Context().Done() // the Backend gave up on this attempt
					return
				}
				w.WriteHeader(http.StatusCreated)
				_, _ = io.WriteString(w, "charged")
			}, idempotency.Options{})

			ctx, cancel := context.WithCancel(context.Background())
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader("x"))
			req.Header.Set("X-User", "alice")
			req.Header.Set("Idempotency-Key", "k1")
			errc := make(chan error, 1)
			go func() {
				res, err := http.DefaultClient.Do(req)
				if err == nil {
					_, err = io.ReadAll(res.Body) // canceled in the middle
					res.Body.Close()
				}
				errc <- err
			}()
			<-arrived
			if midBody {
				time.Sleep(20 * time.Millisecond) // the first bytes reach the client
			}
			cancel()
			require.True(t, errors.Is(<-errc, context.Canceled))

			a := retryUntilFree(t, url, "k1")
			assert.Equal(t, http.StatusCreated, a.status)
			assert.Equal(t, "charged", a.body)
			assert.Empty(t, a.header.Get("Idempotent-Replayed"), "a fabricated or partial answer was replayed")
			assert.Equal(t, int64(2), calls.Load())
			again := post(t, url, "alice", "k1", "x")
			assert.Equal(t, "true", again.header.Get("Idempotent-Replayed"), "the real answer is stored")
			assert.Equal(t, "charged", again.body)
		})
	}
}

// TestNothingWrittenNotStored: a handler that returns without writing
// leaves nothing stored: the next try runs again.
func TestNothingWrittenNotStored(t *testing.T) {
	var calls atomic.Int64
	url := newGateway(t, http.HandlerFunc(func(http.ResponseWriter, *http.Request) { calls.Add(1) }), idempotency.Options{})
	for range 2 {
		assert.Empty(t, post(t, url, "alice", "k1", "x").header.Get("Idempotent-Replayed"))
	}
	assert.Equal(t, int64(2), calls.Load())
}
