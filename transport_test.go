package pylon

import (
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// MaxConnsPerTarget bounds the connections to a target: a request that finds
// them all busy waits up to DialTimeout, then is answered 502, and the target
// is free again once the stream that held it ends.
func TestMaxConnsPerTarget(t *testing.T) {
	release := make(chan struct{})
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stream" {
			io.WriteString(w, "s")
			w.(http.Flusher).Flush() // the gateway passes on what it has read
			<-release
		}
		io.WriteString(w, "ok")
	})
	gw := front(t, Options{}, backend(t, BackendOptions{
		Targets:           []string{up.URL},
		MaxConnsPerTarget: 1,
		DialTimeout:       50 * time.Millisecond,
	}))
	stream, err := http.Get(gw.URL + "/stream")
	require.NoError(t, err)
	require.Equal(t, 200, stream.StatusCode)

	res, err := http.Get(gw.URL + "/other")
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, http.StatusBadGateway, res.StatusCode, "no connection left for it")

	close(release)
	_, _ = io.ReadAll(stream.Body)
	stream.Body.Close()
	res, err = http.Get(gw.URL + "/other")
	require.NoError(t, err)
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	assert.Equal(t, 200, res.StatusCode)
	assert.Equal(t, "ok", string(b))
}

// holdingListener accepts connections as its Listener does, except while
// hold is set: those it keeps, unserved, so that the client's TLS handshake
// on them waits.
type holdingListener struct {
	net.Listener
	hold atomic.Bool
	held chan net.Conn
}

func (l *holdingListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil || !l.hold.Load() {
			return c, err
		}
		l.held <- c
	}
}

// MaxConnsPerTarget bounds HTTP/1.1 connections only. An HTTP/2 target
// whose connection is full (at its SETTINGS_MAX_CONCURRENT_STREAMS) gets
// another connection for the next request, without waiting for a
// connection another request is still making, which used to hold it for
// as long as that one took (here: until the test ends).
func TestMaxConnsPerTargetHTTP2(t *testing.T) {
	held, release := make(chan string, 1), make(chan struct{})
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			held <- r.Proto
			<-release
		}
		_, _ = io.WriteString(w, "ok")
	}))
	ln := &holdingListener{Listener: up.Listener, held: make(chan net.Conn, 4)}
	up.Listener = ln
	up.EnableHTTP2 = true
	up.Config.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: 1}
	up.StartTLS()
	t.Cleanup(up.Close)
	roots := x509.NewCertPool()
	roots.AddCert(up.Certificate())
	gw := front(t, Options{}, backend(t, BackendOptions{Targets: []string{up.URL}, TLS: UpstreamTLS{RootCAs: roots},
		MaxConnsPerTarget: 1, DialTimeout: 300 * time.Millisecond}))
	t.Cleanup(func() { // before the servers close
		close(release)
		for range len(ln.held) {
			_ = (<-ln.held).Close()
		}
	})

	go func() {
		if res, err := http.Get(gw.URL + "/hold"); err == nil {
			res.Body.Close()
		}
	}()
	require.Equal(t, "HTTP/2.0", <-held, "the one stream of the first connection is taken")
	ln.hold.Store(true)
	go func() { // a second connection, whose handshake waits
		if res, err := http.Get(gw.URL + "/slow"); err == nil {
			res.Body.Close()
		}
	}()
	ln.held <- <-ln.held // it is being made
	ln.hold.Store(false)

	client := &http.Client{Timeout: 3 * time.Second}
	res, err := client.Get(gw.URL + "/other")
	require.NoError(t, err, "answered on a third connection")
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	assert.Equal(t, http.StatusOK, res.StatusCode)
	assert.Equal(t, "ok", string(b))
}

// The default transport is Pylon's own for http:// targets, and a user's
// Transport still wins.
func TestDefaultTransport(t *testing.T) {
	b := backend(t, BackendOptions{Targets: []string{"http://127.0.0.1:1"}})
	_, ok := b.transport.(*Transport)
	assert.True(t, ok)
	own := &http.Transport{}
	b = backend(t, BackendOptions{Targets: []string{"http://127.0.0.1:1"}, Transport: own})
	assert.Same(t, own, b.transport)
}

// closeCounter is a user transport with a CloseIdleConnections method.
type closeCounter struct {
	http.RoundTripper
	n atomic.Int32
}

func (c *closeCounter) CloseIdleConnections() { c.n.Add(1) }

// TestBackendCloseUserTransport checks that Backend.Close closes the idle
// connections of a transport the user gave when it can.
func TestBackendCloseUserTransport(t *testing.T) {
	rt := &closeCounter{RoundTripper: http.DefaultTransport}
	b, err := NewBackend("b", BackendOptions{Targets: []string{"http://127.0.0.1:1"}, Transport: rt})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if got := rt.n.Load(); got != 1 {
		t.Errorf("CloseIdleConnections called %d times, want 1", got)
	}
}
