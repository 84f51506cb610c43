package pylon

import (
	"io"
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
	"golang.org/x/net/http2"
)

func TestGRPCErrorsAreTrailersOnly(t *testing.T) {
	for _, tc := range []struct {
		status int
		want   string
	}{
		{http.StatusNotFound, "12"}, {http.StatusUnauthorized, "16"}, {http.StatusForbidden, "7"},
		{http.StatusRequestEntityTooLarge, "8"}, {http.StatusTooManyRequests, "8"},
		{http.StatusServiceUnavailable, "14"}, {http.StatusBadGateway, "14"}, {http.StatusGatewayTimeout, "4"},
		{http.StatusBadRequest, "13"}, {http.StatusTeapot, "2"},
	} {
		for _, ct := range []string{"application/grpc", "application/grpc+proto", "application/grpc-web+proto", "application/grpc-web-text"} {
			rec := httptest.NewRecorder()
			r := httptest.NewRequest("POST", "/pkg.Svc/M", nil)
			r.Header.Set("Content-Type", ct)
			rec.Header().Set("Retry-After", "3")
			Error(rec, r, tc.status, "100% über\nfull")
			assert.Equal(t, 200, rec.Code)
			assert.Equal(t, tc.want, rec.Header().Get("Grpc-Status"), "%d %s", tc.status, ct)
			assert.Equal(t, "100%25 %C3%BCber%0Afull", rec.Header().Get("Grpc-Message"))
			assert.Equal(t, "3", rec.Header().Get("Retry-After"))
			assert.Equal(t, "3000", rec.Header().Get("Grpc-Retry-Pushback-Ms"))
			assert.True(t, strings.HasPrefix(rec.Header().Get("Content-Type"), "application/grpc"))
			assert.Empty(t, rec.Body.String())
		}
	}
	rec := httptest.NewRecorder()
	r := httptest.NewRequest("POST", "/x", nil)
	r.Header.Set("Content-Type", "application/grpcfoo")
	Error(rec, r, 404, "")
	assert.Equal(t, ProblemContentType, rec.Header().Get("Content-Type"), "not a gRPC subtype")
}

func TestGRPCTimeoutFormat(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"1S", time.Second, true}, {"250m", 250 * time.Millisecond, true}, {"3H", 3 * time.Hour, true},
		{"100u", 100 * time.Microsecond, true}, {"5n", 5, true}, {"2M", 2 * time.Minute, true},
		{"123456789S", 0, false}, {"S", 0, false}, {"-1S", 0, false}, {"1x", 0, false}, {"+1S", 0, false},
	} {
		d, ok := ParseGRPCTimeout(tc.in)
		assert.Equal(t, tc.ok, ok, tc.in)
		assert.Equal(t, tc.want, d, tc.in)
	}
	for _, d := range []time.Duration{time.Nanosecond, 1500 * time.Millisecond, 10 * time.Minute, 1000 * time.Hour} {
		back, ok := ParseGRPCTimeout(FormatGRPCTimeout(d))
		require.True(t, ok)
		assert.LessOrEqual(t, back, d)
		assert.Greater(t, back, d-d/1000-time.Microsecond)
	}
	assert.Equal(t, "1n", FormatGRPCTimeout(-time.Second))
}

func FuzzParseGRPCHealthResponse(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 2, 8, 1})
	f.Add(grpcHealthRequest("svc"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = parseGRPCHealthResponse(b)
	})
}

func TestGRPCHealthMessages(t *testing.T) {
	assert.Equal(t, []byte{0, 0, 0, 0, 5, 0x0a, 3, 's', 'v', 'c'}, grpcHealthRequest("svc"))
	assert.Equal(t, []byte{0, 0, 0, 0, 0}, grpcHealthRequest(""))
	st, err := parseGRPCHealthResponse([]byte{0, 0, 0, 0, 2, 8, 1})
	require.NoError(t, err)
	assert.Equal(t, uint64(grpcServing), st)
	st, err = parseGRPCHealthResponse([]byte{0, 0, 0, 0, 0})
	require.NoError(t, err)
	assert.Equal(t, uint64(0), st)
	_, err = parseGRPCHealthResponse([]byte{0, 0, 0, 0, 3, 8, 1})
	assert.Error(t, err)
}

func TestGRPCMethod(t *testing.T) {
	s, m := grpcMethod("/helloworld.Greeter/SayHello")
	assert.Equal(t, "helloworld.Greeter", s)
	assert.Equal(t, "SayHello", m)
	for _, p := range []string{"/", "/a", "/a/", "//b", "/a/b/c"} {
		s, m := grpcMethod(p)
		assert.Empty(t, s+m, p)
	}
}

// BenchmarkGRPCError measures a gateway-made gRPC error, the trailers-only
// answer every package's refusals become for a gRPC call.
func BenchmarkGRPCError(b *testing.B) {
	r := httptest.NewRequest("POST", "/pkg.Svc/M", nil)
	r.Header.Set("Content-Type", "application/grpc")
	b.ReportAllocs()
	for b.Loop() {
		w := httptest.NewRecorder()
		Error(w, r, http.StatusServiceUnavailable, "The upstream service is unavailable.")
	}
}

// TestGRPCEmptyBodyRetried: a gRPC call whose body is empty and of unknown
// length (no Content-Length; it ends with an empty DATA frame, or an empty
// chunked body), refused trailers-only UNAVAILABLE, is sent again with an
// empty body and answered. The retry used to crash the whole gateway
// process, from the transport's body-writing goroutine.
func TestGRPCEmptyBodyRetried(t *testing.T) {
	for _, tc := range []struct {
		name   string
		client *http.Client
		scheme string // the target's
	}{
		{"h2c", h2cClient(t), "h2c"},
		{"HTTP/1.1", &http.Client{Transport: &http.Transport{}}, "http"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int32
			bodies := make(chan string, 2)
			up := NewServer("", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, err := io.ReadAll(r.Body)
				if err != nil {
					b = []byte("read error: " + err.Error())
				}
				bodies <- string(b)
				w.Header().Set("Content-Type", "application/grpc")
				if calls.Add(1) == 1 {
					w.Header().Set("Grpc-Status", "14") // refused: may be sent again
				} else {
					w.Header().Set("Grpc-Status", "0")
				}
				w.WriteHeader(http.StatusOK)
			}))
			target := tc.scheme + "://" + strings.TrimPrefix(startServer(t, up), "http://")
			b := MustNewBackend("b", BackendOptions{Targets: []string{target}, Retries: 1, RetryBufferBytes: 1 << 10, RetryBackoff: -1})
			t.Cleanup(func() { _ = b.Close() })
			gw := New(Options{})
			gw.Route("/svc.S/").To(b)
			require.NoError(t, gw.Err())
			base := startServer(t, NewServer("", gw))

			req, err := http.NewRequest("POST", base+"/svc.S/M", io.NopCloser(strings.NewReader("")))
			require.NoError(t, err)
			req.ContentLength = 0 // with a body: its length is unknown on the wire
			req.Header.Set("Content-Type", "application/grpc")
			req.Header.Set("Te", "trailers")
			res, err := tc.client.Do(req)
			require.NoError(t, err)
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			assert.Equal(t, http.StatusOK, res.StatusCode)
			assert.Equal(t, "0", res.Header.Get("Grpc-Status"), "the retry answered the call")
			assert.Equal(t, int32(2), calls.Load())
			assert.Equal(t, "", <-bodies)
			assert.Equal(t, "", <-bodies, "the retry's body is empty too")
		})
	}
}

// cancelingUpstream is an HTTP/2 (h2c) target that resets every stream with
// CANCEL as soon as its headers arrive, as a gRPC server does when it gives
// up on a call. It returns the target's h2c:// URL.
func cancelingUpstream(t *testing.T) string {
	ln := listen(t)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				if _, err := io.ReadFull(c, make([]byte, len(http2.ClientPreface))); err != nil {
					return
				}
				fr := http2.NewFramer(c, c)
				if fr.WriteSettings() != nil {
					return
				}
				for {
					f, err := fr.ReadFrame()
					if err != nil {
						return
					}
					switch f := f.(type) {
					case *http2.SettingsFrame:
						if !f.IsAck() && fr.WriteSettingsAck() != nil {
							return
						}
					case *http2.HeadersFrame:
						if fr.WriteRSTStream(f.StreamID, http2.ErrCodeCancel) != nil {
							return
						}
					}
				}
			})
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return "h2c://" + ln.Addr().String()
}

// TestGRPCUpstreamCancelNearDeadline: an upstream that resets a call with
// CANCEL within the slack of the client's deadline gave up on that deadline,
// which says nothing of the target; the same reset long before the
// deadline is the target's failure.
func TestGRPCUpstreamCancelNearDeadline(t *testing.T) {
	up := cancelingUpstream(t)
	for _, tc := range []struct {
		timeout    string
		wantStatus string
		ejected    bool
	}{
		{"40m", "4", false}, // DEADLINE_EXCEEDED, the client's outcome
		{"10S", "14", true}, // UNAVAILABLE, the target failed
	} {
		t.Run(tc.timeout, func(t *testing.T) {
			b := MustNewBackend("b", BackendOptions{Targets: []string{up}, Outlier: OutlierDetection{ConsecutiveFailures: 1}})
			t.Cleanup(func() { _ = b.Close() })
			rec := httptest.NewRecorder()
			r := httptest.NewRequest("POST", "/svc.S/M", strings.NewReader("\x00\x00\x00\x00\x00"))
			r.Header.Set("Content-Type", "application/grpc")
			r.Header.Set("Grpc-Timeout", tc.timeout)
			b.ServeHTTP(rec, r)
			assert.Equal(t, tc.wantStatus, rec.Header().Get("Grpc-Status"))
			assert.Equal(t, tc.ejected, b.Targets()[0].Ejections() > 0)
		})
	}
}
