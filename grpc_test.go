package pylon

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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
