package pylon

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	return ln
}

func TestNewServerDefaults(t *testing.T) {
	srv := NewServer(":0", http.NotFoundHandler())
	assert.Equal(t, 64<<10, srv.MaxHeaderBytes)
	assert.NotZero(t, srv.ReadHeaderTimeout)
	assert.NotZero(t, srv.IdleTimeout)
	assert.Zero(t, srv.WriteTimeout, "a write timeout would cut streams")
	assert.True(t, srv.Protocols.HTTP1() && srv.Protocols.HTTP2())
	assert.False(t, srv.Protocols.UnencryptedHTTP2())
}

func TestServerRefusesOversizeHeaders(t *testing.T) {
	ln := listen(t)
	srv := NewServer("", http.NotFoundHandler())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- RunWithOptions(ctx, srv, RunOptions{Listener: ln}) }()
	defer func() { cancel(); <-done }()

	req, _ := http.NewRequest("GET", "http://"+ln.Addr().String()+"/", nil)
	req.Header.Set("X-Big", strings.Repeat("a", 70<<10))
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, http.StatusRequestHeaderFieldsTooLarge, res.StatusCode)
}

func TestRunRefusesBadGateway(t *testing.T) {
	g := New(Options{})
	g.Route("GET /a") // no target
	err := Run(context.Background(), NewServer("127.0.0.1:0", g))
	require.Error(t, err)
	assert.Contains(t, err.Error(), `route "GET /a": no target`)
}

func TestRunDrainsInFlightRequest(t *testing.T) {
	started := make(chan struct{})
	finish := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-finish
		io.WriteString(w, "finished")
	})
	ln := listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- RunWithOptions(ctx, NewServer("", h), RunOptions{Listener: ln, DrainTimeout: 10 * time.Second})
	}()

	resc := make(chan string, 1)
	go func() {
		res, err := http.Get("http://" + ln.Addr().String() + "/")
		if err != nil {
			resc <- "error: " + err.Error()
			return
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		resc <- string(b)
	}()
	<-started
	cancel() // shutdown begins while the request is in flight
	select {
	case err := <-done:
		t.Fatalf("Run returned before the in-flight request finished: %v", err)
	case <-time.After(20 * time.Millisecond):
	}
	close(finish)
	assert.Equal(t, "finished", <-resc)
	assert.NoError(t, <-done)
}

func TestRunClosesUpgradedConnectionsAtDeadline(t *testing.T) {
	up := wsUpstream(t, func(brw *bufio.ReadWriter) {
		io.Copy(io.Discard, brw) // holds the tunnel open until closed
	})
	b := backend(t, BackendOptions{Targets: []string{up.URL}})
	g := New(Options{})
	g.Route("/").To(b)
	ln := listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- RunWithOptions(ctx, NewServer("", g), RunOptions{Listener: ln, DrainTimeout: 100 * time.Millisecond})
	}()

	conn, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer conn.Close()
	io.WriteString(conn, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	require.Equal(t, 101, res.StatusCode)

	cancel()
	require.NoError(t, <-done)
	// The tunnel was closed by the drain deadline: the client reads EOF.
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = br.ReadByte()
	assert.ErrorIs(t, err, io.EOF)
}
