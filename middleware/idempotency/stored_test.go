package idempotency_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/middleware"
	"github.com/pylon-gateway/pylon/middleware/idempotency"
	"github.com/pylon-gateway/pylon/overload"
	"github.com/pylon-gateway/pylon/ratelimit"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestNoClientAddressNotKeyed: a route without authentication served on
// a unix socket has no client address (RequestInfo.ClientIP invalid), so
// alice and bob cannot be told apart: the key is not used (before, bob
// was replayed alice's receipt). Every request runs, nothing is stored,
// the route is logged once at Debug, and a required key is still 400.
func TestNoClientAddressNotKeyed(t *testing.T) {
	var calls atomic.Int64
	logs := &logRecords{}
	gw := pylon.New(pylon.Options{})
	gw.Route("POST /orders").Use(idempotency.New(idempotency.Options{Required: true, Logger: slog.New(logs)})).
		Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n := calls.Add(1)
			w.WriteHeader(http.StatusCreated)
			_, _ = fmt.Fprintf(w, "receipt %d for %s", n, r.Header.Get("X-Who"))
		}))
	require.NoError(t, gw.Err())
	sock := filepath.Join(t.TempDir(), "s")
	ln, err := net.Listen("unix", sock)
	require.NoError(t, err)
	srv := &http.Server{Handler: gw}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr}
	do := func(who, key string) answer {
		req, _ := http.NewRequest(http.MethodPost, "http://gw/orders", strings.NewReader("pay"))
		if key != "" {
			req.Header.Set("Idempotency-Key", key)
		}
		req.Header.Set("X-Who", who)
		res, err := c.Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return answer{res.StatusCode, res.Header, string(b)}
	}
	assert.Equal(t, http.StatusBadRequest, do("alice", "").status, "a required key is still required")
	alice, bob, again := do("alice", "k1"), do("bob", "k1"), do("alice", "k1")
	assert.Equal(t, "receipt 1 for alice", alice.body)
	assert.Equal(t, "receipt 2 for bob", bob.body, "bob was replayed alice's answer")
	assert.Equal(t, "receipt 3 for alice", again.body, "stored: nothing is")
	for _, a := range []answer{alice, bob, again} {
		assert.Empty(t, a.header.Get("Idempotent-Replayed"))
	}
	recs := logs.all()
	require.Len(t, recs, 1, "logged once per route: %v", recs)
	assert.Equal(t, "DEBUG", recs[0]["level"])
	assert.Equal(t, "POST /orders", recs[0]["route"])
}

// TestNoRequestInfoNotKeyed: outside a Gateway there is no RequestInfo,
// hence no client: the key is not used.
func TestNoRequestInfoNotKeyed(t *testing.T) {
	up := &upstream{}
	h := idempotency.New(idempotency.Options{Logger: slog.New(slog.DiscardHandler)})(up)
	for range 2 {
		req := httptest.NewRequest(http.MethodPost, "/orders", strings.NewReader("a"))
		req.Header.Set("Idempotency-Key", "k1")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		assert.Equal(t, http.StatusCreated, rec.Code)
		assert.Empty(t, rec.Header().Get("Idempotent-Replayed"))
	}
	assert.Equal(t, int64(2), up.calls.Load())
}

// TestRefusalsNotStored: 408 and 429 say the request did not run (RFC
// 9110 §15.5.9, RFC 6585 §4): they are not stored, and the retry runs.
func TestRefusalsNotStored(t *testing.T) {
	for _, status := range []int{http.StatusRequestTimeout, http.StatusTooManyRequests} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			up := &upstream{}
			up.status.Store(int64(status))
			url := viaBackend(t, up.ServeHTTP, idempotency.Options{})
			assert.Equal(t, status, post(t, url, "alice", "k", "x").status)
			up.status.Store(0)
			got := post(t, url, "alice", "k", "x")
			assert.Equal(t, http.StatusCreated, got.status)
			assert.Empty(t, got.header.Get("Idempotent-Replayed"))
			assert.Equal(t, int64(2), up.calls.Load())
		})
	}
}

// TestGatewayShedNotStored: the gateway's own per-client limit, after the
// middleware, refuses a second order while the first runs (429, Shed set).
// The refusal is not stored: once the first is done, the retry runs
// (before, the 429 was replayed for the whole TTL).
func TestGatewayShedNotStored(t *testing.T) {
	release, in := make(chan struct{}), make(chan struct{}, 1)
	var calls atomic.Int64
	gw := pylon.New(pylon.Options{})
	gw.Route("POST /orders").Use(authAs, idempotency.New(idempotency.Options{}), overload.PerClient(ratelimit.BySubject, 1)).
		Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			calls.Add(1)
			if r.Header.Get("Idempotency-Key") == "slow" {
				in <- struct{}{}
				<-release
			}
			w.WriteHeader(http.StatusCreated)
		}))
	require.NoError(t, gw.Err())
	srv := httptest.NewServer(gw)
	t.Cleanup(srv.Close)
	url := srv.URL + "/orders"
	done := make(chan answer, 1)
	go func() { done <- post(t, url, "alice", "slow", "a") }()
	<-in
	assert.Equal(t, http.StatusTooManyRequests, post(t, url, "alice", "k-B", "b").status)
	close(release)
	assert.Equal(t, http.StatusCreated, (<-done).status)
	got := post(t, url, "alice", "k-B", "b")
	assert.Equal(t, http.StatusCreated, got.status, "the gateway's 429 was replayed")
	assert.Empty(t, got.header.Get("Idempotent-Replayed"))
	assert.Equal(t, int64(2), calls.Load())
}

// TestOuterHeadersNotReplayed: a header set by a middleware outside the
// stage (middleware.RequestID's X-Request-Id) is not recorded: the retry
// carries its own, and the fields the inner chain set are replayed.
func TestOuterHeadersNotReplayed(t *testing.T) {
	gw := pylon.New(pylon.Options{})
	gw.Use(middleware.RequestID)
	gw.Route("POST /orders").Use(authAs, idempotency.New(idempotency.Options{})).Handler(&upstream{})
	require.NoError(t, gw.Err())
	srv := httptest.NewServer(gw)
	t.Cleanup(srv.Close)
	do := func(id string) *http.Response {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/orders", strings.NewReader("pay"))
		req.Header.Set("Idempotency-Key", "k1")
		req.Header.Set("X-User", "alice")
		req.Header.Set("X-Request-Id", id)
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		_ = res.Body.Close()
		return res
	}
	first, again := do("req-1"), do("req-2")
	assert.Equal(t, []string{"req-1"}, first.Header["X-Request-Id"])
	assert.Equal(t, "true", again.Header.Get("Idempotent-Replayed"))
	assert.Equal(t, []string{"req-2"}, again.Header["X-Request-Id"], "the first request's id was replayed")
	assert.Equal(t, "1", again.Header.Get("X-Call"), "the upstream's header is replayed")
}

// TestGRPCErrorsNotStored: a gRPC answer is an HTTP 200 whatever its
// outcome; only a final grpc-status 0 is stored. UNAVAILABLE (14) in the
// trailers, or in the header of a trailers-only answer, is not: the retry
// runs (before, the error was replayed as the answer).
func TestGRPCErrorsNotStored(t *testing.T) {
	tests := []struct {
		name, ct, status string
		trailersOnly     bool
		wantCalls        int64
	}{
		{"error in trailers", "application/grpc", "14", false, 2},
		{"error trailers-only", "application/grpc+proto", "14", true, 2},
		{"ok", "application/grpc", "0", false, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls atomic.Int64
			url := newGateway(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				calls.Add(1)
				w.Header().Set("Content-Type", tt.ct)
				if tt.trailersOnly {
					w.Header().Set("Grpc-Status", tt.status)
					w.WriteHeader(http.StatusOK)
					return
				}
				w.Header().Set("Trailer", "Grpc-Status, Grpc-Message")
				w.WriteHeader(http.StatusOK)
				_, _ = w.Write([]byte{0, 0, 0, 0, 0})
				w.Header().Set("Grpc-Status", tt.status)
				w.Header().Set("Grpc-Message", "m")
			}), idempotency.Options{})
			post(t, url, "alice", "k1", "x")
			post(t, url, "alice", "k1", "x")
			assert.Equal(t, tt.wantCalls, calls.Load())
		})
	}
}

// TestHeaderAndTrailerSameName: a field that is both a header and a
// trailer (Server-Timing) is replayed with its own trailer value, not the
// header's, so the replay's trailers are the first answer's (net/http adds
// a declared trailer's header value to the trailer; it does so for both).
func TestHeaderAndTrailerSameName(t *testing.T) {
	url := viaBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Server-Timing", "db;dur=1")
		w.Header().Set("Trailer", "Server-Timing")
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, "short")
		w.(http.Flusher).Flush()
		w.Header().Set("Server-Timing", "total;dur=5")
	}, idempotency.Options{})
	get := func() *http.Response {
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader("x"))
		req.Header.Set("X-User", "alice")
		req.Header.Set("Idempotency-Key", "k1")
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		_, _ = io.ReadAll(res.Body)
		return res
	}
	first, again := get(), get()
	require.Equal(t, "true", again.Header.Get("Idempotent-Replayed"))
	assert.Equal(t, first.Header["Server-Timing"], again.Header["Server-Timing"])
	assert.Equal(t, first.Trailer, again.Trailer, "the header's value was replayed as the trailer")
	assert.Contains(t, again.Trailer["Server-Timing"], "total;dur=5")
}
