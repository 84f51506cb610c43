package grpc_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/breaker"
	"github.com/pylon-gateway/pylon/middleware"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	ggrpc "google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// testServer is a grpc.testing.TestService with the knobs the tests turn.
type testServer struct {
	testpb.UnimplementedTestServiceServer
	deadlines chan time.Duration // UnaryCall sends the deadline it saw, if any
	code      codes.Code         // UnaryCall fails with it when not OK
	calls     atomic.Int32
}

func (s *testServer) EmptyCall(context.Context, *testpb.Empty) (*testpb.Empty, error) {
	return &testpb.Empty{}, nil
}

func (s *testServer) UnaryCall(ctx context.Context, in *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	s.calls.Add(1)
	if s.deadlines != nil {
		if dl, ok := ctx.Deadline(); ok {
			s.deadlines <- time.Until(dl)
		} else {
			s.deadlines <- 0
		}
	}
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("x-echo"); len(v) > 0 {
		_ = ggrpc.SetHeader(ctx, metadata.Pairs("x-echo", v[0]))
		_ = ggrpc.SetTrailer(ctx, metadata.Pairs("x-echo-trailer", v[0]))
	}
	if v := md.Get("x-sleep"); len(v) > 0 {
		d, _ := time.ParseDuration(v[0])
		t := time.NewTimer(d) // the upstream is slow: it works, it does not wait for the test
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	if s.code != codes.OK {
		return nil, status.Error(s.code, "upstream says no")
	}
	if in.ResponseStatus != nil {
		st, _ := status.New(codes.Code(in.ResponseStatus.Code), in.ResponseStatus.Message).
			WithDetails(&errdetails.ErrorInfo{Reason: "TEST", Domain: "pylon"})
		return nil, st.Err()
	}
	return &testpb.SimpleResponse{Payload: &testpb.Payload{Body: make([]byte, in.ResponseSize)}}, nil
}

func (s *testServer) StreamingOutputCall(in *testpb.StreamingOutputCallRequest, stream ggrpc.ServerStreamingServer[testpb.StreamingOutputCallResponse]) error {
	for _, p := range in.ResponseParameters {
		if err := stream.Send(&testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: make([]byte, p.Size)}}); err != nil {
			return err
		}
	}
	return nil
}

func (s *testServer) StreamingInputCall(stream ggrpc.ClientStreamingServer[testpb.StreamingInputCallRequest, testpb.StreamingInputCallResponse]) error {
	var sum int32
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&testpb.StreamingInputCallResponse{AggregatedPayloadSize: sum})
		}
		if err != nil {
			return err
		}
		sum += int32(len(m.Payload.GetBody()))
	}
}

func (s *testServer) FullDuplexCall(stream ggrpc.BidiStreamingServer[testpb.StreamingOutputCallRequest, testpb.StreamingOutputCallResponse]) error {
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		for _, p := range m.ResponseParameters {
			if err := stream.Send(&testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: make([]byte, p.Size)}}); err != nil {
				return err
			}
		}
	}
}

// startUpstream serves s (and a health service) with grpc-go on loopback.
func startUpstream(t testing.TB, s *testServer, opts ...ggrpc.ServerOption) (addr string, hs *health.Server) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := ggrpc.NewServer(opts...)
	testpb.RegisterTestServiceServer(srv, s)
	hs = health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	return ln.Addr().String(), hs
}

// startGateway serves h with pylon.NewServer (h2c on by default).
func startGateway(t testing.TB, h http.Handler) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := pylon.NewServer("", h)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close(); <-done })
	return ln.Addr().String()
}

func dial(t testing.TB, addr string) testpb.TestServiceClient {
	cc, err := ggrpc.NewClient(addr, ggrpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = cc.Close() })
	return testpb.NewTestServiceClient(cc)
}

// front builds a gateway with one route to backend b for the TestService.
func front(t testing.TB, b *pylon.Backend, mws ...pylon.Middleware) string {
	t.Cleanup(func() { _ = b.Close() })
	gw := pylon.New(pylon.Options{})
	gw.Route("/grpc.testing.TestService/").Use(mws...).To(b)
	require.NoError(t, gw.Err())
	return startGateway(t, gw)
}

func h2c(addr string) string { return "h2c://" + addr }

func TestProxiesEveryKindOfCall(t *testing.T) {
	up, _ := startUpstream(t, &testServer{})
	c := dial(t, front(t, pylon.MustNewBackend("test", pylon.BackendOptions{Targets: []string{h2c(up)}})))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	t.Run("unary with metadata and trailers", func(t *testing.T) {
		var hdr, trl metadata.MD
		res, err := c.UnaryCall(metadata.AppendToOutgoingContext(ctx, "x-echo", "hi"),
			&testpb.SimpleRequest{ResponseSize: 1000}, ggrpc.Header(&hdr), ggrpc.Trailer(&trl))
		require.NoError(t, err)
		assert.Len(t, res.Payload.Body, 1000)
		assert.Equal(t, []string{"hi"}, hdr.Get("x-echo"))
		assert.Equal(t, []string{"hi"}, trl.Get("x-echo-trailer"))
	})
	t.Run("error details", func(t *testing.T) {
		_, err := c.UnaryCall(ctx, &testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.NotFound), Message: "no such order"}})
		st := status.Convert(err)
		assert.Equal(t, codes.NotFound, st.Code())
		assert.Equal(t, "no such order", st.Message())
		require.Len(t, st.Details(), 1)
		assert.Equal(t, "TEST", st.Details()[0].(*errdetails.ErrorInfo).Reason)
	})
	t.Run("server streaming", func(t *testing.T) {
		s, err := c.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: 10}, {Size: 20}, {Size: 30}}})
		require.NoError(t, err)
		var sizes []int
		for {
			m, err := s.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			require.NoError(t, err)
			sizes = append(sizes, len(m.Payload.Body))
		}
		assert.Equal(t, []int{10, 20, 30}, sizes)
	})
	t.Run("client streaming", func(t *testing.T) {
		s, err := c.StreamingInputCall(ctx)
		require.NoError(t, err)
		for _, n := range []int{1, 2, 3} {
			require.NoError(t, s.Send(&testpb.StreamingInputCallRequest{Payload: &testpb.Payload{Body: make([]byte, n)}}))
		}
		res, err := s.CloseAndRecv()
		require.NoError(t, err)
		assert.Equal(t, int32(6), res.AggregatedPayloadSize)
	})
	t.Run("bidi streaming, message by message", func(t *testing.T) {
		s, err := c.FullDuplexCall(ctx)
		require.NoError(t, err)
		for _, n := range []int32{5, 7} {
			require.NoError(t, s.Send(&testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: n}}}))
			m, err := s.Recv() // the answer arrives before the client sends more
			require.NoError(t, err)
			assert.Len(t, m.Payload.Body, int(n))
		}
		require.NoError(t, s.CloseSend())
		_, err = s.Recv()
		assert.ErrorIs(t, err, io.EOF)
	})
	t.Run("cancellation", func(t *testing.T) {
		cctx, ccancel := context.WithCancel(ctx)
		s, err := c.FullDuplexCall(cctx)
		require.NoError(t, err)
		ccancel()
		_, err = s.Recv()
		assert.Equal(t, codes.Canceled, status.Code(err))
	})
}

// refuse answers every request with status, as a policy middleware would.
func refuse(status int, retryAfter string) pylon.Middleware {
	return func(http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if retryAfter != "" {
				w.Header().Set("Retry-After", retryAfter)
			}
			pylon.Error(w, r, status, "refused by policy")
		})
	}
}

type refuseAll struct{}

func (refuseAll) Allow(*http.Request, *pylon.Target) (func(int, error), error) {
	return nil, errors.New("breaker open")
}

func TestGatewayErrorsSpeakGRPC(t *testing.T) {
	up, _ := startUpstream(t, &testServer{})
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	deadAddr := dead.Addr().String()
	dead.Close()
	backend := func(o pylon.BackendOptions) *pylon.Backend {
		if o.Targets == nil {
			o.Targets = []string{h2c(up)}
		}
		return pylon.MustNewBackend("test", o)
	}
	for _, tc := range []struct {
		name  string
		addr  func(t *testing.T) string
		md    []string
		want  codes.Code
		retry string
	}{
		{"no route", func(t *testing.T) string {
			return startGateway(t, pylon.New(pylon.Options{}))
		}, nil, codes.Unimplemented, ""},
		{"401", func(t *testing.T) string { return front(t, backend(pylon.BackendOptions{}), refuse(401, "")) }, nil, codes.Unauthenticated, ""},
		{"403", func(t *testing.T) string { return front(t, backend(pylon.BackendOptions{}), refuse(403, "")) }, nil, codes.PermissionDenied, ""},
		{"429 with Retry-After", func(t *testing.T) string { return front(t, backend(pylon.BackendOptions{}), refuse(429, "7")) }, nil, codes.ResourceExhausted, "7"},
		{"413", func(t *testing.T) string { return front(t, backend(pylon.BackendOptions{}), middleware.BodyLimit(10)) }, nil, codes.ResourceExhausted, ""},
		{"breaker open", func(t *testing.T) string { return front(t, backend(pylon.BackendOptions{Guard: refuseAll{}})) }, nil, codes.Unavailable, ""},
		{"502 unreachable", func(t *testing.T) string {
			return front(t, backend(pylon.BackendOptions{Targets: []string{h2c(deadAddr)}}))
		}, nil, codes.Unavailable, ""},
		{"504", func(t *testing.T) string {
			gw := pylon.New(pylon.Options{})
			b := backend(pylon.BackendOptions{})
			t.Cleanup(func() { _ = b.Close() })
			gw.Route("/grpc.testing.TestService/").Timeout(50 * time.Millisecond).To(b)
			return startGateway(t, gw)
		}, []string{"x-sleep", "2s"}, codes.DeadlineExceeded, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, tc.addr(t))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if tc.md != nil {
				ctx = metadata.AppendToOutgoingContext(ctx, tc.md...)
			}
			var trl metadata.MD // a trailers-only response's metadata is the trailer's
			_, err := c.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: make([]byte, 100)}}, ggrpc.Trailer(&trl))
			st := status.Convert(err)
			assert.Equal(t, tc.want, st.Code(), st.Message())
			assert.NotContains(t, st.Message(), "127.0.0.1", "nothing internal in grpc-message")
			if tc.retry != "" {
				assert.Equal(t, []string{tc.retry}, trl.Get("retry-after"))
			}
		})
	}
}

func TestDeadlines(t *testing.T) {
	s := &testServer{deadlines: make(chan time.Duration, 10)}
	up, _ := startUpstream(t, s)
	b := pylon.MustNewBackend("test", pylon.BackendOptions{Targets: []string{h2c(up)}, Outlier: pylon.OutlierDetection{ConsecutiveFailures: 1}})
	gw := pylon.New(pylon.Options{})
	gw.Route("/grpc.testing.TestService/UnaryCall").To(b)
	gw.Route("/grpc.testing.TestService/EmptyCall").Timeout(300 * time.Millisecond).To(b)
	c := dial(t, startGateway(t, gw))
	t.Cleanup(func() { _ = b.Close() })

	t.Run("client deadline forwarded, reduced", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := c.UnaryCall(ctx, &testpb.SimpleRequest{})
		require.NoError(t, err)
		d := <-s.deadlines
		assert.Greater(t, d, time.Second)
		assert.LessOrEqual(t, d, 2*time.Second)
	})
	t.Run("client deadline passes: its own outcome", func(t *testing.T) {
		for range 3 {
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			_, err := c.UnaryCall(metadata.AppendToOutgoingContext(ctx, "x-sleep", "5s"), &testpb.SimpleRequest{})
			cancel()
			assert.Equal(t, codes.DeadlineExceeded, status.Code(err))
			<-s.deadlines
		}
		assert.Zero(t, b.Targets()[0].Ejections(), "a client's deadline never ejects a target")
		_, err := c.UnaryCall(context.Background(), &testpb.SimpleRequest{})
		require.NoError(t, err)
		<-s.deadlines
	})
	t.Run("client cancels mid-call: its own outcome", func(t *testing.T) {
		for range 3 {
			ctx, cancel := context.WithCancel(context.Background())
			errc := make(chan error, 1)
			go func() {
				_, err := c.UnaryCall(metadata.AppendToOutgoingContext(ctx, "x-sleep", "5s"), &testpb.SimpleRequest{})
				errc <- err
			}()
			<-s.deadlines // the upstream has the call
			cancel()
			assert.Equal(t, codes.Canceled, status.Code(<-errc))
		}
		assert.Zero(t, b.Targets()[0].Ejections(), "a client's cancellation never ejects a target")
	})
	t.Run("no client deadline: none invented", func(t *testing.T) {
		_, err := c.UnaryCall(context.Background(), &testpb.SimpleRequest{})
		require.NoError(t, err)
		assert.Zero(t, <-s.deadlines)
	})
}

// TestShortDeadlineDoesNotHideDeadTarget: a client deadline shorter than
// the slack allowed to an upstream's own report of the deadline (50ms)
// does not make a refused connection the client's outcome: the call is
// retried on the live target, the dead one is ejected, and with no live
// target the client gets UNAVAILABLE, not DEADLINE_EXCEEDED.
func TestShortDeadlineDoesNotHideDeadTarget(t *testing.T) {
	good, _ := startUpstream(t, &testServer{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	dead := ln.Addr().String()
	require.NoError(t, ln.Close()) // nothing listens there: connections are refused
	const deadline = 45 * time.Millisecond
	call := func(c testpb.TestServiceClient) error {
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		defer cancel()
		_, err := c.EmptyCall(ctx, &testpb.Empty{})
		return err
	}

	b := pylon.MustNewBackend("test", pylon.BackendOptions{Targets: []string{h2c(dead), h2c(good)}, Retries: 1, RetryBackoff: -1,
		Outlier: pylon.OutlierDetection{ConsecutiveFailures: 2}})
	c := dial(t, front(t, b))
	_, err = c.EmptyCall(context.Background(), &testpb.Empty{}) // connects to the gateway, and it to the live target
	require.NoError(t, err)
	for range 6 {
		assert.NoError(t, call(c), "retried on the live target")
	}
	assert.Positive(t, b.Targets()[0].Ejections(), "the dead target is ejected")
	assert.False(t, b.Targets()[0].Healthy())

	only := pylon.MustNewBackend("dead", pylon.BackendOptions{Targets: []string{h2c(dead)}})
	c = dial(t, front(t, only))
	_, err = c.EmptyCall(context.Background(), &testpb.Empty{}) // connects to the gateway
	require.Equal(t, codes.Unavailable, status.Code(err))
	assert.Equal(t, codes.Unavailable, status.Code(call(c)), "unreachable, not out of time")
}

// TestLongUnaryCallOutlastsResponseHeaderTimeout: grpc-go sends a unary
// call's response headers only when its handler returns, so a call that
// rightly takes longer than ResponseHeaderTimeout is bounded by its own
// deadline, or by none, and never charged to its target.
func TestLongUnaryCallOutlastsResponseHeaderTimeout(t *testing.T) {
	up, _ := startUpstream(t, &testServer{})
	b := pylon.MustNewBackend("test", pylon.BackendOptions{
		Targets: []string{h2c(up)}, ResponseHeaderTimeout: 100 * time.Millisecond,
		Outlier: pylon.OutlierDetection{ConsecutiveFailures: 1},
	})
	c := dial(t, front(t, b))
	for _, tc := range []struct {
		name     string
		deadline time.Duration // none when 0
	}{{"client deadline", 10 * time.Second}, {"no deadline", 0}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			if tc.deadline > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.deadline)
				defer cancel()
			}
			res, err := c.UnaryCall(metadata.AppendToOutgoingContext(ctx, "x-sleep", "400ms"), &testpb.SimpleRequest{ResponseSize: 2})
			require.NoError(t, err)
			assert.Len(t, res.Payload.Body, 2)
			assert.Zero(t, b.Targets()[0].Ejections())
		})
	}
}

// TestTimeoutMiddlewareSpeaksGRPC: middleware.Timeout answers a gRPC call
// whose time ran out in gRPC: DEADLINE_EXCEEDED, trailers-only.
func TestTimeoutMiddlewareSpeaksGRPC(t *testing.T) {
	up, _ := startUpstream(t, &testServer{})
	b := pylon.MustNewBackend("test", pylon.BackendOptions{Targets: []string{h2c(up)}})
	c := dial(t, front(t, b, middleware.Timeout(100*time.Millisecond)))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := c.UnaryCall(metadata.AppendToOutgoingContext(ctx, "x-sleep", "5s"), &testpb.SimpleRequest{})
	st := status.Convert(err)
	assert.Equal(t, codes.DeadlineExceeded, st.Code(), st.Message())
	assert.Equal(t, "the request took too long", st.Message())
}

func TestRouteTimeoutIsForwarded(t *testing.T) {
	var seen atomic.Int64
	up, _ := startUpstream(t, &testServer{}, ggrpc.UnaryInterceptor(func(ctx context.Context, req any, _ *ggrpc.UnaryServerInfo, h ggrpc.UnaryHandler) (any, error) {
		if dl, ok := ctx.Deadline(); ok {
			seen.Store(int64(time.Until(dl)))
		}
		return h(ctx, req)
	}))
	b := pylon.MustNewBackend("test", pylon.BackendOptions{Targets: []string{h2c(up)}})
	t.Cleanup(func() { _ = b.Close() })
	gw := pylon.New(pylon.Options{})
	gw.Route("/grpc.testing.TestService/").Timeout(300 * time.Millisecond).To(b)
	c := dial(t, startGateway(t, gw))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := c.EmptyCall(ctx, &testpb.Empty{})
	require.NoError(t, err)
	assert.LessOrEqual(t, time.Duration(seen.Load()), 300*time.Millisecond, "the route's timeout caps the client's")
	assert.Positive(t, seen.Load())
}

func TestClassificationByGRPCStatus(t *testing.T) {
	for _, tc := range []struct {
		code    codes.Code
		ejected bool
	}{
		{codes.NotFound, false}, {codes.InvalidArgument, false}, {codes.Unavailable, true}, {codes.ResourceExhausted, true},
	} {
		t.Run(tc.code.String(), func(t *testing.T) {
			up, _ := startUpstream(t, &testServer{code: tc.code})
			b := pylon.MustNewBackend("test", pylon.BackendOptions{Targets: []string{h2c(up)}, Outlier: pylon.OutlierDetection{ConsecutiveFailures: 2}})
			c := dial(t, front(t, b))
			for range 2 {
				_, err := c.UnaryCall(context.Background(), &testpb.SimpleRequest{})
				assert.Equal(t, tc.code, status.Code(err))
			}
			assert.Equal(t, tc.ejected, b.Targets()[0].Ejections() > 0)
		})
	}
}

func TestRetriesUnavailableOnAnotherTarget(t *testing.T) {
	bad := &testServer{code: codes.Unavailable}
	good := &testServer{}
	badAddr, _ := startUpstream(t, bad)
	goodAddr, _ := startUpstream(t, good)
	b := pylon.MustNewBackend("test", pylon.BackendOptions{
		Targets: []string{h2c(badAddr), h2c(goodAddr)}, Retries: 1, RetryBufferBytes: 64 << 10,
		RetryBackoff: -1, Outlier: pylon.OutlierDetection{ConsecutiveFailures: -1},
	})
	c := dial(t, front(t, b))
	for range 4 {
		res, err := c.UnaryCall(context.Background(), &testpb.SimpleRequest{ResponseSize: 3, Payload: &testpb.Payload{Body: make([]byte, 500)}})
		require.NoError(t, err)
		assert.Len(t, res.Payload.Body, 3)
	}
	assert.Equal(t, int32(2), bad.calls.Load(), "round robin sent half the calls to the bad target first")
	assert.Equal(t, int32(4), good.calls.Load())
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		<-tick.C
	}
}

func TestGRPCHealthChecks(t *testing.T) {
	for _, secure := range []bool{false, true} {
		t.Run("tls="+strconv.FormatBool(secure), func(t *testing.T) {
			var opts []ggrpc.ServerOption
			var tlsOpt pylon.UpstreamTLS
			scheme := "h2c://"
			if secure {
				cert, pool := selfSigned(t, "orders.internal")
				opts = append(opts, ggrpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}})))
				tlsOpt = pylon.UpstreamTLS{RootCAs: pool, ServerName: "orders.internal"}
				scheme = "https://"
			}
			up, hs := startUpstream(t, &testServer{}, opts...)
			hs.SetServingStatus("grpc.testing.TestService", healthpb.HealthCheckResponse_SERVING)
			b := pylon.MustNewBackend("test", pylon.BackendOptions{
				Targets: []string{scheme + up}, TLS: tlsOpt,
				HealthCheck: pylon.HealthCheck{GRPC: true, GRPCService: "grpc.testing.TestService", Interval: 10 * time.Millisecond, UnhealthyThreshold: 1, HealthyThreshold: 1},
			})
			c := dial(t, front(t, b))
			tg := b.Targets()[0]
			_, err := c.EmptyCall(context.Background(), &testpb.Empty{})
			require.NoError(t, err, "proxied over %s", scheme)
			hs.SetServingStatus("grpc.testing.TestService", healthpb.HealthCheckResponse_NOT_SERVING)
			waitFor(t, func() bool { return !tg.Healthy() })
			hs.SetServingStatus("grpc.testing.TestService", healthpb.HealthCheckResponse_SERVING)
			waitFor(t, tg.Healthy)
		})
	}
}

// selfSigned returns a certificate for name and a pool that trusts it.
func selfSigned(t *testing.T, name string) (tls.Certificate, *x509.CertPool) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	leaf, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// syncBuffer is a bytes.Buffer safe for the server goroutines' log lines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestAccessLogCarriesGRPC(t *testing.T) {
	up, _ := startUpstream(t, &testServer{})
	b := pylon.MustNewBackend("test", pylon.BackendOptions{Targets: []string{h2c(up)}})
	t.Cleanup(func() { _ = b.Close() })
	var logs syncBuffer
	gw := pylon.New(pylon.Options{})
	gw.Use(middleware.AccessLog(slog.New(slog.NewJSONHandler(&logs, nil))))
	gw.Route("/grpc.testing.TestService/").To(b)
	c := dial(t, startGateway(t, gw))
	_, err := c.UnaryCall(context.Background(), &testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.NotFound)}})
	require.Equal(t, codes.NotFound, status.Code(err))
	_, err = c.UnimplementedCall(context.Background(), &testpb.Empty{})
	require.Equal(t, codes.Unimplemented, status.Code(err))
	cc, err := ggrpc.NewClient(startGateway(t, gw), ggrpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer cc.Close()
	_, err = healthpb.NewHealthClient(cc).Check(context.Background(), &healthpb.HealthCheckRequest{})
	require.Equal(t, codes.Unimplemented, status.Code(err), "no route")

	waitFor(t, func() bool { return strings.Count(logs.String(), "\n") >= 3 })
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	var got []map[string]any
	for _, l := range lines {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &m))
		got = append(got, m)
	}
	assert.Equal(t, "grpc.testing.TestService", got[0]["grpc_service"])
	assert.Equal(t, "UnaryCall", got[0]["grpc_method"])
	assert.EqualValues(t, codes.NotFound, got[0]["grpc_status"])
	assert.EqualValues(t, codes.Unimplemented, got[1]["grpc_status"])
	assert.Equal(t, "grpc.health.v1.Health", got[2]["grpc_service"])
	assert.EqualValues(t, codes.Unimplemented, got[2]["grpc_status"], "the gateway's own answer")
}

func TestBreakerJudgesByGRPCStatus(t *testing.T) {
	for _, tc := range []struct {
		name  string
		code  codes.Code
		sleep string // with a 100ms client deadline
		trips bool
	}{
		{"UNAVAILABLE", codes.Unavailable, "", true},
		{"NOT_FOUND", codes.NotFound, "", false},
		{"the client's deadline", codes.OK, "5s", false},
	} {
		for _, perTarget := range []bool{false, true} {
			t.Run(tc.name+"/perTarget="+strconv.FormatBool(perTarget), func(t *testing.T) {
				up, _ := startUpstream(t, &testServer{code: tc.code})
				s := breaker.Settings{ConsecutiveFailures: 2, OpenDuration: time.Hour}
				opts := pylon.BackendOptions{Targets: []string{h2c(up)}, Outlier: pylon.OutlierDetection{ConsecutiveFailures: -1}}
				var mws []pylon.Middleware
				if perTarget {
					opts.Guard = breaker.MustPerTarget(s)
				} else {
					mws = append(mws, breaker.MustNew(s).Middleware)
				}
				c := dial(t, front(t, pylon.MustNewBackend("test", opts), mws...))
				for range 2 {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					if tc.sleep != "" {
						ctx, cancel = context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "x-sleep", tc.sleep), 100*time.Millisecond)
					}
					_, err := c.UnaryCall(ctx, &testpb.SimpleRequest{})
					cancel()
					require.Error(t, err)
				}
				_, err := c.EmptyCall(context.Background(), &testpb.Empty{})
				if tc.trips {
					assert.Equal(t, codes.Unavailable, status.Code(err), "the breaker is open")
				} else {
					assert.NoError(t, err, "the breaker stays closed")
				}
			})
		}
	}
}

func TestTLSOnBothSides(t *testing.T) {
	upCert, upPool := selfSigned(t, "orders.internal")
	up, _ := startUpstream(t, &testServer{}, ggrpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{upCert}})))
	b := pylon.MustNewBackend("test", pylon.BackendOptions{
		Targets: []string{"https://" + up},
		TLS:     pylon.UpstreamTLS{RootCAs: upPool, ServerName: "orders.internal"},
	})
	t.Cleanup(func() { _ = b.Close() })
	gw := pylon.New(pylon.Options{})
	gw.Route("/grpc.testing.TestService/").To(b)

	gwCert, gwPool := selfSigned(t, "gateway.example")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := pylon.NewServer("", gw)
	srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{gwCert}}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Close(); <-done })

	cc, err := ggrpc.NewClient(ln.Addr().String(), ggrpc.WithTransportCredentials(
		credentials.NewTLS(&tls.Config{RootCAs: gwPool, ServerName: "gateway.example"})))
	require.NoError(t, err)
	defer cc.Close()
	c := testpb.NewTestServiceClient(cc)
	res, err := c.UnaryCall(context.Background(), &testpb.SimpleRequest{ResponseSize: 9})
	require.NoError(t, err)
	assert.Len(t, res.Payload.Body, 9)
}

// silentStreamGateway serves a gateway in front of a TestService upstream
// with the body idle timeout idle.
func silentStreamGateway(t *testing.T, idle time.Duration) testpb.TestServiceClient {
	up, _ := startUpstream(t, &testServer{})
	b := pylon.MustNewBackend("test", pylon.BackendOptions{Targets: []string{h2c(up)}})
	t.Cleanup(func() { _ = b.Close() })
	gw := pylon.New(pylon.Options{})
	gw.Route("/grpc.testing.TestService/").To(b)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := pylon.NewServerWithOptions("", gw, pylon.ServerOptions{BodyIdleTimeout: idle})
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close(); <-done })
	return dial(t, ln.Addr().String())
}

// A client stream may be silent between its messages for longer than
// BodyIdleTimeout (up to five of them), without a deadline.
func TestSilentClientStreamOutlivesBodyIdleTimeout(t *testing.T) {
	const idle = 40 * time.Millisecond
	c := silentStreamGateway(t, idle)
	s, err := c.StreamingInputCall(context.Background())
	require.NoError(t, err)
	require.NoError(t, s.Send(&testpb.StreamingInputCallRequest{Payload: &testpb.Payload{Body: make([]byte, 3)}}))
	<-time.After(5 * idle / 2) // the client has nothing to say for 2.5 idle timeouts
	require.NoError(t, s.Send(&testpb.StreamingInputCallRequest{Payload: &testpb.Payload{Body: make([]byte, 4)}}))
	res, err := s.CloseAndRecv()
	require.NoError(t, err)
	assert.Equal(t, int32(7), res.AggregatedPayloadSize)
}

// A stream silent for five idle timeouts is ended (DEADLINE_EXCEEDED): no
// client holds one open forever with a silent body.
func TestSilentStreamEndsAfterFiveBodyIdleTimeouts(t *testing.T) {
	const idle = 20 * time.Millisecond
	c := silentStreamGateway(t, idle)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	s, err := c.FullDuplexCall(ctx)
	require.NoError(t, err)
	require.NoError(t, s.Send(&testpb.StreamingOutputCallRequest{})) // then nothing
	_, err = s.Recv()
	assert.Equal(t, codes.DeadlineExceeded, status.Code(err), "%v", err)
	assert.GreaterOrEqual(t, time.Since(start), 5*idle)
	assert.NoError(t, ctx.Err(), "ended by the gateway, not by the client's deadline")
}
