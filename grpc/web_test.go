package grpc_test

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pylon-gateway/pylon"
	pgrpc "github.com/pylon-gateway/pylon/grpc"
	"github.com/pylon-gateway/pylon/middleware"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/protobuf/proto"
)

// webFrame frames m as a gRPC(-Web) data message.
func webFrame(t *testing.T, m proto.Message) []byte {
	b, err := proto.Marshal(m)
	require.NoError(t, err)
	out := make([]byte, 5, 5+len(b))
	binary.BigEndian.PutUint32(out[1:], uint32(len(b)))
	return append(out, b...)
}

// webResponse is a decoded gRPC-Web response body: its data messages and
// its trailers.
type webResponse struct {
	messages [][]byte
	trailers map[string]string
}

func parseWeb(t *testing.T, body []byte) webResponse {
	res := webResponse{trailers: map[string]string{}}
	for len(body) > 0 {
		require.GreaterOrEqual(t, len(body), 5)
		n := binary.BigEndian.Uint32(body[1:5])
		payload := body[5 : 5+n]
		if body[0]&0x80 != 0 {
			sc := bufio.NewScanner(bytes.NewReader(payload))
			for sc.Scan() {
				k, v, _ := strings.Cut(sc.Text(), ": ")
				res.trailers[k] = v
			}
		} else {
			res.messages = append(res.messages, payload)
		}
		body = body[5+n:]
	}
	return res
}

// decodeTextChunks decodes a grpc-web-text body made of padded chunks.
func decodeTextChunks(t *testing.T, s string) []byte {
	var out []byte
	for s != "" {
		i := strings.Index(s, "=")
		end := len(s)
		if i >= 0 {
			end = i
			for end < len(s) && s[end] == '=' {
				end++
			}
		}
		b, err := base64.StdEncoding.DecodeString(s[:end])
		require.NoError(t, err)
		out = append(out, b...)
		s = s[end:]
	}
	return out
}

func webGateway(t *testing.T) string {
	up, _ := startUpstream(t, &testServer{})
	b := pylon.MustNewBackend("test", pylon.BackendOptions{Targets: []string{h2c(up)}})
	t.Cleanup(func() { _ = b.Close() })
	gw := pylon.New(pylon.Options{})
	gw.Use(middleware.CORS(middleware.CORSOptions{
		AllowedOrigins: []string{"https://app.example"},
		AllowedMethods: []string{"POST"},
		AllowedHeaders: pgrpc.CORSHeaders,
		ExposedHeaders: pgrpc.CORSExposedHeaders,
	}), pgrpc.Web)
	gw.Route("/grpc.testing.TestService/").To(b)
	require.NoError(t, gw.Err())
	return "http://" + startGateway(t, gw)
}

func webCall(t *testing.T, url, ct string, body []byte) (*http.Response, []byte) {
	req, err := http.NewRequest("POST", url, bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", ct)
	req.Header.Set("X-Grpc-Web", "1")
	req.Header.Set("Origin", "https://app.example")
	tr := &http.Transport{} // HTTP/1.1, as browsers' gRPC-Web usually is
	defer tr.CloseIdleConnections()
	res, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	out, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res, out
}

func TestWebUnaryBinaryAndText(t *testing.T) {
	base := webGateway(t)
	req := webFrame(t, &testpb.SimpleRequest{ResponseSize: 7})
	for _, tc := range []struct{ ct string }{{"application/grpc-web+proto"}, {"application/grpc-web"}, {"application/grpc-web-text+proto"}} {
		t.Run(tc.ct, func(t *testing.T) {
			body := req
			text := strings.Contains(tc.ct, "-text")
			if text {
				// Two independently padded chunks, as clients may send.
				body = []byte(base64.StdEncoding.EncodeToString(req[:4]) + base64.StdEncoding.EncodeToString(req[4:]))
			}
			res, out := webCall(t, base+"/grpc.testing.TestService/UnaryCall", tc.ct, body)
			require.Equal(t, 200, res.StatusCode)
			assert.Equal(t, tc.ct, res.Header.Get("Content-Type"))
			assert.Equal(t, "https://app.example", res.Header.Get("Access-Control-Allow-Origin"))
			assert.Contains(t, res.Header.Get("Access-Control-Expose-Headers"), "Grpc-Status")
			if text {
				out = decodeTextChunks(t, string(out))
			}
			w := parseWeb(t, out)
			require.Len(t, w.messages, 1)
			var m testpb.SimpleResponse
			require.NoError(t, proto.Unmarshal(w.messages[0], &m))
			assert.Len(t, m.Payload.Body, 7)
			assert.Equal(t, "0", w.trailers["grpc-status"])
		})
	}
}

func TestWebServerStreamingAndErrors(t *testing.T) {
	base := webGateway(t)
	t.Run("server streaming, text", func(t *testing.T) {
		req := webFrame(t, &testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: 1}, {Size: 2}, {Size: 3}}})
		res, out := webCall(t, base+"/grpc.testing.TestService/StreamingOutputCall", "application/grpc-web-text", []byte(base64.StdEncoding.EncodeToString(req)))
		require.Equal(t, 200, res.StatusCode)
		w := parseWeb(t, decodeTextChunks(t, string(out)))
		assert.Len(t, w.messages, 3)
		assert.Equal(t, "0", w.trailers["grpc-status"])
	})
	t.Run("upstream error in the trailer frame", func(t *testing.T) {
		req := webFrame(t, &testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: 5, Message: "no such order"}})
		res, out := webCall(t, base+"/grpc.testing.TestService/UnaryCall", "application/grpc-web+proto", req)
		require.Equal(t, 200, res.StatusCode)
		// grpc-go answers errors trailers-only: the status is in the headers.
		if res.Header.Get("Grpc-Status") != "" {
			assert.Equal(t, "5", res.Header.Get("Grpc-Status"))
			assert.Empty(t, out)
		} else {
			assert.Equal(t, "5", parseWeb(t, out).trailers["grpc-status"])
		}
	})
	t.Run("gateway error, trailers-only", func(t *testing.T) {
		res, out := webCall(t, base+"/other.Service/Call", "application/grpc-web+proto", webFrame(t, &testpb.Empty{}))
		require.Equal(t, 200, res.StatusCode)
		assert.Equal(t, "12", res.Header.Get("Grpc-Status"))
		assert.Equal(t, "application/grpc-web+proto", res.Header.Get("Content-Type"))
		assert.Empty(t, out)
	})
	t.Run("bad text body", func(t *testing.T) {
		res, _ := webCall(t, base+"/grpc.testing.TestService/UnaryCall", "application/grpc-web-text", []byte("!!!"))
		assert.Equal(t, "13", res.Header.Get("Grpc-Status"))
	})
	t.Run("CORS preflight", func(t *testing.T) {
		req, _ := http.NewRequest("OPTIONS", base+"/grpc.testing.TestService/UnaryCall", nil)
		req.Header.Set("Origin", "https://app.example")
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "content-type,x-grpc-web,x-user-agent")
		tr := &http.Transport{}
		defer tr.CloseIdleConnections()
		res, err := (&http.Client{Transport: tr}).Do(req)
		require.NoError(t, err)
		res.Body.Close()
		assert.Less(t, res.StatusCode, 300)
		assert.Equal(t, "https://app.example", res.Header.Get("Access-Control-Allow-Origin"))
	})
}
