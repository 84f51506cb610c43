package grpc_test

import (
	"context"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/traffic"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	ggrpc "google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// received counts, by method, the calls a gRPC server handled and the
// messages it received on them.
type received struct {
	mu       sync.Mutex
	calls    map[string]int
	messages map[string]int
}

func (rc *received) add(method string, calls, messages int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.calls[method] += calls
	rc.messages[method] += messages
}

func (rc *received) get() (calls, messages map[string]int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.calls, rc.messages
}

// countingStream counts the messages a server stream receives.
type countingStream struct {
	ggrpc.ServerStream
	n int
}

func (s *countingStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if err == nil {
		s.n++
	}
	return err
}

// options make a server record what it received in rc.
func (rc *received) options() []ggrpc.ServerOption {
	return []ggrpc.ServerOption{
		ggrpc.UnaryInterceptor(func(ctx context.Context, req any, info *ggrpc.UnaryServerInfo, h ggrpc.UnaryHandler) (any, error) {
			defer rc.add(info.FullMethod, 1, 1)
			return h(ctx, req)
		}),
		ggrpc.StreamInterceptor(func(srv any, ss ggrpc.ServerStream, info *ggrpc.StreamServerInfo, h ggrpc.StreamHandler) error {
			cs := &countingStream{ServerStream: ss}
			defer func() { rc.add(info.FullMethod, 1, cs.n) }()
			return h(srv, cs)
		}),
	}
}

// TestMirrorStreamingCalls: a route that mirrors (default options) still
// serves bidirectional and client-streaming calls as they stream: a reply
// to the first message of a FullDuplexCall arrives while the client's side
// is open (the mirror never reads the body ahead of the primary), and the
// shadow gets each call, whole, once its client side has ended.
func TestMirrorStreamingCalls(t *testing.T) {
	up, _ := startUpstream(t, &testServer{})
	shadowGot := &received{calls: map[string]int{}, messages: map[string]int{}}
	shadowUp, _ := startUpstream(t, &testServer{}, shadowGot.options()...)
	b := pylon.MustNewBackend("test", pylon.BackendOptions{Targets: []string{h2c(up)}})
	sb := pylon.MustNewBackend("shadow", pylon.BackendOptions{Targets: []string{h2c(shadowUp)}})
	t.Cleanup(func() { _ = sb.Close() })
	m, err := traffic.NewMirror(sb, traffic.MirrorOptions{})
	require.NoError(t, err)
	t.Cleanup(m.Close)
	c := dial(t, front(t, b, m.Middleware))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	bidi, err := c.FullDuplexCall(ctx)
	require.NoError(t, err)
	for i := range 3 { // each reply comes before the next message is sent
		require.NoError(t, bidi.Send(&testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: int32(5 + i)}}}))
		reply, err := bidi.Recv()
		require.NoError(t, err, "reply %d while the stream is open", i)
		assert.Len(t, reply.GetPayload().GetBody(), 5+i)
	}
	require.NoError(t, bidi.CloseSend())
	_, err = bidi.Recv()
	require.ErrorIs(t, err, io.EOF)

	in, err := c.StreamingInputCall(ctx)
	require.NoError(t, err)
	for _, n := range []int{3, 4} {
		require.NoError(t, in.Send(&testpb.StreamingInputCallRequest{Payload: &testpb.Payload{Body: make([]byte, n)}}))
	}
	sum, err := in.CloseAndRecv()
	require.NoError(t, err)
	assert.Equal(t, int32(7), sum.AggregatedPayloadSize)

	_, err = c.UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: 3})
	require.NoError(t, err)

	m.Close() // the shadow requests have ended
	assert.Equal(t, traffic.MirrorStats{Mirrored: 3}, m.Stats())
	calls, messages := shadowGot.get()
	const svc = "/grpc.testing.TestService/"
	assert.Equal(t, map[string]int{svc + "FullDuplexCall": 1, svc + "StreamingInputCall": 1, svc + "UnaryCall": 1}, calls)
	assert.Equal(t, map[string]int{svc + "FullDuplexCall": 3, svc + "StreamingInputCall": 2, svc + "UnaryCall": 1}, messages,
		"the shadow gets every message of each call")
}

// TestBackendWithoutTargetsIsUnavailable: a Backend built with no targets
// (discovery has not answered yet) answers gRPC calls UNAVAILABLE with a
// retry-after of one second, nothing internal in the message.
func TestBackendWithoutTargetsIsUnavailable(t *testing.T) {
	c := dial(t, front(t, pylon.MustNewBackend("test", pylon.BackendOptions{})))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var trl metadata.MD
	_, err := c.UnaryCall(ctx, &testpb.SimpleRequest{}, ggrpc.Trailer(&trl))
	st := status.Convert(err)
	assert.Equal(t, codes.Unavailable, st.Code(), st.Message())
	assert.Equal(t, []string{"1"}, trl.Get("retry-after"))
	assert.NotContains(t, st.Message(), "pylon:")
}
