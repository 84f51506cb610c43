package pylon

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// h2cClient speaks HTTP/2 with prior knowledge to http:// URLs.
func h2cClient(t *testing.T) *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &p}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// startServer serves srv on a loopback listener until the test ends.
func startServer(t *testing.T, srv *http.Server) string {
	ln := listen(t)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close(); <-done })
	return "http://" + ln.Addr().String()
}

func protoEcho() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Proto)
	})
}

func TestNewServerServesH2CAndHTTP1(t *testing.T) {
	base := startServer(t, NewServer("", protoEcho()))
	for _, tc := range []struct {
		name   string
		client *http.Client
		want   string
	}{
		{"h2c prior knowledge", h2cClient(t), "HTTP/2.0"},
		{"http/1.1", &http.Client{Transport: &http.Transport{}}, "HTTP/1.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := tc.client.Get(base + "/")
			require.NoError(t, err)
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			assert.Equal(t, tc.want, string(body))
			tc.client.CloseIdleConnections()
		})
	}
}

func TestNewServerServesHTTP2OverTLS(t *testing.T) {
	srv := NewServer("", protoEcho())
	ts := httptest.NewUnstartedServer(srv.Handler)
	ts.Config.Protocols = srv.Protocols
	ts.EnableHTTP2 = true
	ts.StartTLS()
	defer ts.Close()
	c := ts.Client()
	res, err := c.Get(ts.URL)
	require.NoError(t, err)
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	assert.Equal(t, "HTTP/2.0", string(body))
}

func TestNewServerRefusesUpgradeH2C(t *testing.T) {
	srv := NewServer("", protoEcho())
	base := startServer(t, srv)
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	require.NoError(t, err)
	defer conn.Close()
	_, err = io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
	require.NoError(t, err)
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	defer res.Body.Close()
	assert.NotEqual(t, http.StatusSwitchingProtocols, res.StatusCode)
	body, _ := io.ReadAll(res.Body)
	assert.Equal(t, "HTTP/1.1", string(body), "served as HTTP/1.1, not upgraded")
}

func TestBackendH2CTarget(t *testing.T) {
	var conns atomic.Int32
	up := NewServer("", protoEcho())
	up.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	base := startServer(t, up)
	b := MustNewBackend("grpc", BackendOptions{Targets: []string{strings.Replace(base, "http://", "h2c://", 1)}})
	defer b.Close()
	for range 5 {
		rec := httptest.NewRecorder()
		b.ServeHTTP(rec, httptest.NewRequest("GET", "/x", nil))
		assert.Equal(t, "HTTP/2.0", rec.Body.String())
	}
	b.Close()
	assert.Equal(t, int32(1), conns.Load(), "one HTTP/2 connection is reused")
}

func TestBackendTLSSettings(t *testing.T) {
	up := httptest.NewUnstartedServer(protoEcho())
	up.TLS = &tls.Config{ClientAuth: tls.RequireAnyClientCert}
	up.EnableHTTP2 = true
	up.Config.ErrorLog = log.New(io.Discard, "", 0)
	up.StartTLS()
	defer up.Close()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	require.NoError(t, os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: up.Certificate().Raw}), 0o600))
	client := up.TLS.Certificates // reuse the server's pair as a client certificate
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(up.URL, "https://"))

	t.Run("private CA, client certificate, server name", func(t *testing.T) {
		b := MustNewBackend("tls", BackendOptions{
			Targets: []string{"https://127.0.0.1:" + port},
			TLS:     UpstreamTLS{CAFile: ca, Certificates: client, ServerName: "example.com"},
		})
		defer b.Close()
		rec := httptest.NewRecorder()
		b.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
		assert.Equal(t, "HTTP/2.0", rec.Body.String())
	})
	t.Run("no client certificate", func(t *testing.T) {
		b := MustNewBackend("tls", BackendOptions{
			Targets: []string{"https://127.0.0.1:" + port},
			TLS:     UpstreamTLS{CAFile: ca, ServerName: "example.com"},
		})
		defer b.Close()
		rec := httptest.NewRecorder()
		b.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
		assert.Equal(t, http.StatusBadGateway, rec.Code)
	})
	t.Run("bad files fail at start", func(t *testing.T) {
		_, err := NewBackend("tls", BackendOptions{Targets: []string{up.URL}, TLS: UpstreamTLS{CAFile: filepath.Join(dir, "none")}})
		assert.ErrorContains(t, err, `backend "tls": TLS.CAFile`)
		_, err = NewBackend("tls", BackendOptions{Targets: []string{up.URL}, TLS: UpstreamTLS{CertFile: ca}})
		assert.ErrorContains(t, err, "set together")
	})
}

func TestBackendRefusesExtendedConnect(t *testing.T) {
	var hits atomic.Int32
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		assert.Nil(t, r.Header[":protocol"])
	}))
	defer up.Close()
	b := MustNewBackend("ws", BackendOptions{Targets: []string{up.URL}, Outlier: OutlierDetection{ConsecutiveFailures: 1}})
	defer b.Close()

	r := httptest.NewRequest(http.MethodConnect, "/chat", nil)
	r.Proto, r.ProtoMajor = "HTTP/2.0", 2
	r.Header[":protocol"] = []string{"websocket"}
	rec := httptest.NewRecorder()
	b.ServeHTTP(rec, r)
	assert.Equal(t, http.StatusNotImplemented, rec.Code)
	assert.Zero(t, hits.Load())

	// A pseudo-header on any other request is never copied upstream.
	r = httptest.NewRequest(http.MethodGet, "/chat", nil)
	r.Header[":protocol"] = []string{"websocket"}
	rec = httptest.NewRecorder()
	b.ServeHTTP(rec, r)
	assert.Equal(t, http.StatusOK, rec.Code)
	assert.Zero(t, b.Targets()[0].Ejections())
}

// countingRT wraps a transport, as tracing does.
type countingRT struct {
	rt http.RoundTripper
	n  atomic.Int32
}

func (c *countingRT) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return c.rt.RoundTrip(r)
}

func TestWrappedNewTransportSpeaksH2C(t *testing.T) {
	base := startServer(t, NewServer("", protoEcho()))
	opts := BackendOptions{Targets: []string{strings.Replace(base, "http://", "h2c://", 1)}}
	tr := NewTransport(opts)
	defer tr.CloseIdleConnections()
	wrapped := &countingRT{rt: tr}
	opts.Transport = wrapped
	b := MustNewBackend("grpc", opts)
	defer b.Close()
	rec := httptest.NewRecorder()
	b.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	assert.Equal(t, "HTTP/2.0", rec.Body.String())
	assert.Equal(t, int32(1), wrapped.n.Load())
}

func TestBackendH2CRespectsTheTargetsStreamLimit(t *testing.T) {
	var conns atomic.Int32
	entered := make(chan struct{}, 3)
	release := make(chan struct{})
	up := NewServer("", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
	}))
	up.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: 1} // the target allows one stream per connection
	up.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	base := startServer(t, up)
	b := MustNewBackend("grpc", BackendOptions{Targets: []string{strings.Replace(base, "http://", "h2c://", 1)}})
	defer b.Close()
	// One request first: the connection is up and the target's SETTINGS
	// are known.
	go func() { release <- struct{}{} }()
	rec := httptest.NewRecorder()
	b.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	<-entered
	require.Equal(t, http.StatusOK, rec.Code)
	done := make(chan struct{}, 2)
	for range 2 {
		go func() {
			b.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
			done <- struct{}{}
		}()
	}
	<-entered
	<-entered // both at once: with one stream per connection, on two connections
	close(release)
	<-done
	<-done
	// Two connections if the first request's stream was already
	// forgotten by the client connection when the two were sent (HTTP/2
	// does that on the stream's writer goroutine, a moment after the body's
	// end reached the caller), three if not; never one stream too many on
	// a connection, which would have kept the second request from entering.
	n := conns.Load()
	assert.GreaterOrEqual(t, n, int32(2))
	assert.LessOrEqual(t, n, int32(3))
}

// ResponseHeaderTimeout still bounds requests other than gRPC calls to
// HTTP/2 targets (h2c, and h2 over TLS): a target that does not answer in
// time gets 504, and one whose headers came in time may take longer with
// its body.
func TestResponseHeaderTimeoutHTTP2(t *testing.T) {
	const rht = 50 * time.Millisecond
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		switch r.URL.Path {
		case "/silent":
			<-r.Context().Done()
		case "/late-body":
			w.WriteHeader(http.StatusOK)
			_ = http.NewResponseController(w).Flush()
			<-time.After(4 * rht) // a slow body, after headers in time
			_, _ = io.WriteString(w, "late")
		}
	})
	for _, tls := range []bool{false, true} {
		t.Run(map[bool]string{false: "h2c", true: "h2 over TLS"}[tls], func(t *testing.T) {
			opts := BackendOptions{ResponseHeaderTimeout: rht}
			if tls {
				up := httptest.NewUnstartedServer(h)
				up.EnableHTTP2 = true
				up.StartTLS()
				t.Cleanup(up.Close)
				roots := x509.NewCertPool()
				roots.AddCert(up.Certificate())
				opts.Targets, opts.TLS.RootCAs = []string{up.URL}, roots
			} else {
				opts.Targets = []string{"h2c://" + strings.TrimPrefix(startServer(t, NewServer("", h)), "http://")}
			}
			gw := front(t, Options{}, backend(t, opts))
			tr := &http.Transport{}
			t.Cleanup(tr.CloseIdleConnections)
			client := &http.Client{Transport: tr}
			for _, method := range []string{"GET", "POST"} {
				req, err := http.NewRequest(method, gw.URL+"/late-body", strings.NewReader("some body"))
				require.NoError(t, err)
				res, err := client.Do(req)
				require.NoError(t, err)
				b, err := io.ReadAll(res.Body)
				res.Body.Close()
				require.NoError(t, err)
				assert.Equal(t, http.StatusOK, res.StatusCode, method)
				assert.Equal(t, "late", string(b), method)
			}
			res, err := client.Post(gw.URL+"/silent", "text/plain", strings.NewReader("some body"))
			require.NoError(t, err)
			res.Body.Close()
			assert.Equal(t, http.StatusGatewayTimeout, res.StatusCode)
		})
	}
}
