package h1

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// startLean serves h on a lean Server and returns its address; the server
// is shut down at the end of the test.
func startLean(t *testing.T, srv *http.Server) (string, *Server) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := NewServer(srv)
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		assert.NoError(t, s.Shutdown(ctx))
		assert.ErrorIs(t, <-done, http.ErrServerClosed)
	})
	return ln.Addr().String(), s
}

// rawExchange writes req on a new connection and returns what the server
// sent until it closed the connection or a second passed without a byte.
func rawExchange(t *testing.T, addr, req string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	_, err = io.WriteString(c, req)
	require.NoError(t, err)
	var out strings.Builder
	buf := make([]byte, 4096)
	for {
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		n, err := c.Read(buf)
		out.Write(buf[:n])
		if err != nil {
			return out.String()
		}
	}
}

func TestServerServesKeepAliveRequests(t *testing.T) {
	var conns atomic.Int32
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			assert.Empty(t, r.Header.Get("Host"), "Host is taken out of the header, as net/http does")
			fmt.Fprintf(w, "%s %s %s %q", r.Method, r.Host, r.URL.Path, body)
		}),
		ConnState: func(_ net.Conn, st http.ConnState) {
			if st == http.StateNew {
				conns.Add(1)
			}
		},
	}
	addr, _ := startLean(t, srv)
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	for i := range 5 {
		res, err := client.Post("http://"+addr+"/p", "text/plain", strings.NewReader(fmt.Sprint("body", i)))
		require.NoError(t, err)
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		assert.Equal(t, fmt.Sprintf("POST %s /p \"body%d\"", addr, i), string(b))
		assert.Equal(t, int64(len(b)), res.ContentLength, "a short body gets a Content-Length")
		assert.Equal(t, "text/plain; charset=utf-8", res.Header.Get("Content-Type"), "sniffed")
		assert.NotEmpty(t, res.Header.Get("Date"))
	}
	assert.Equal(t, int32(1), conns.Load(), "one connection carried every request")
}

func TestServerChunksLongBodiesAndSendsTrailers(t *testing.T) {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Sum")
		w.Write([]byte(strings.Repeat("a", 3000)))
		w.(http.Flusher).Flush()
		w.Write([]byte("b"))
		w.Header().Set("X-Sum", "3001")
		w.Header().Set(http.TrailerPrefix+"X-Late", "yes")
	})}
	addr, _ := startLean(t, srv)
	res, err := http.Get("http://" + addr + "/")
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	assert.Len(t, b, 3001)
	assert.Equal(t, []string{"chunked"}, res.TransferEncoding)
	assert.Equal(t, "3001", res.Trailer.Get("X-Sum"))
	assert.Equal(t, "yes", res.Trailer.Get("X-Late"))
}

func TestServerHandsOverWhatItDoesNotServe(t *testing.T) {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %d %q", r.Proto, r.ProtoMajor, body)
	})}
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv.Protocols = &p
	addr, _ := startLean(t, srv)

	// HTTP/1.0, chunked and Expect requests: net/http serves them.
	out := rawExchange(t, addr, "GET / HTTP/1.0\r\nHost: x\r\n\r\n")
	assert.Contains(t, out, "HTTP/1.0 200 OK")
	assert.Contains(t, out, `HTTP/1.0 1 ""`)
	out = rawExchange(t, addr, "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
	assert.Contains(t, out, `HTTP/1.1 1 "abc"`)
	out = rawExchange(t, addr, "POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi")
	assert.Contains(t, out, "HTTP/1.1 100 Continue")
	assert.Contains(t, out, `HTTP/1.1 1 "hi"`)
	// Requests net/http refuses are refused by it.
	out = rawExchange(t, addr, "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
	assert.True(t, strings.HasPrefix(out, "HTTP/1.1 400 Bad Request"), out)
	out = rawExchange(t, addr, "GET / HTTP/1.1\r\n\r\n")
	assert.True(t, strings.HasPrefix(out, "HTTP/1.1 400 Bad Request"), out)
	out = rawExchange(t, addr, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("b", 8000)+"\r\nConnection: close\r\n\r\n")
	assert.True(t, strings.HasPrefix(out, "HTTP/1.1 200 OK"), "a head over the loop's 4 KiB is net/http's: %.60s", out)

	// A keep-alive connection handed over mid-way keeps its bytes.
	out = rawExchange(t, addr, "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.0\r\nHost: x\r\n\r\n")
	assert.Equal(t, 2, strings.Count(out, " 200 OK"), out)

	// HTTP/2 with prior knowledge.
	var p2 http.Protocols
	p2.SetUnencryptedHTTP2(true)
	client := &http.Client{Transport: &http.Transport{Protocols: &p2}}
	res, err := client.Get("http://" + addr + "/")
	require.NoError(t, err)
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	assert.Equal(t, `HTTP/2.0 2 ""`, string(b))
}

func TestServerCancelsTheContextWhenTheClientLeaves(t *testing.T) {
	started, cancelled := make(chan struct{}), make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-r.Context().Done()
		close(cancelled)
	})}
	addr, _ := startLean(t, srv)
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	_, err = io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	require.NoError(t, err)
	<-started
	c.Close()
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("the handler's context was not cancelled when the client left")
	}
}

func TestServerKeepsAPipelinedRequestWhileWatching(t *testing.T) {
	release := make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
		io.WriteString(w, r.URL.Path)
	})}
	addr, s := startLean(t, srv)
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	br := bufio.NewReader(c)
	_, err = io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	require.NoError(t, err)
	// The next request arrives while the watch reads and must not be
	// lost: wait until the watch has started.
	require.Eventually(t, func() bool { return watching(s) }, 5*time.Second, time.Millisecond)
	_, err = io.WriteString(c, "GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
	require.NoError(t, err)
	close(release)
	for _, want := range []string{"/slow", "/next"} {
		res, err := http.ReadResponse(br, nil)
		require.NoError(t, err)
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		assert.Equal(t, want, string(b))
	}
}

// watching reports whether a connection of s has its client-gone read
// running.
func watching(s *Server) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.mu.Lock()
		w := c.watching
		c.mu.Unlock()
		if w {
			return true
		}
	}
	return false
}

func TestServerShutdownDrains(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(started)
			<-release
		}
		io.WriteString(w, "done")
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := NewServer(srv)
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	addr := ln.Addr().String()

	// An idle keep-alive connection, and one with a request in flight.
	idle, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer idle.Close()
	_, err = io.WriteString(idle, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	require.NoError(t, err)
	ibr := bufio.NewReader(idle)
	res, err := http.ReadResponse(ibr, nil)
	require.NoError(t, err)
	io.Copy(io.Discard, res.Body)
	busy, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer busy.Close()
	_, err = io.WriteString(busy, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	require.NoError(t, err)
	<-started

	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(context.Background()) }()
	_ = idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = ibr.ReadByte()
	assert.ErrorIs(t, err, io.EOF, "the idle connection is closed")
	close(release)
	res, err = http.ReadResponse(bufio.NewReader(busy), nil)
	require.NoError(t, err)
	b, _ := io.ReadAll(res.Body)
	assert.Equal(t, "done", string(b))
	assert.True(t, res.Close, "the last response says Connection: close")
	require.NoError(t, <-shut)
	assert.ErrorIs(t, <-served, http.ErrServerClosed)
}

func TestServerHijack(t *testing.T) {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if !assert.NoError(t, err) {
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhijacked")
		brw.Flush()
	})}
	addr, _ := startLean(t, srv)
	out := rawExchange(t, addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	assert.Equal(t, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhijacked", out)
}

func TestServerPanicClosesTheConnection(t *testing.T) {
	var logged lockedBuf
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/panic" {
			panic("boom")
		}
		io.WriteString(w, "ok")
	})}
	srv.ErrorLog = log.New(&logged, "", 0)
	addr, _ := startLean(t, srv)
	out := rawExchange(t, addr, "GET /panic HTTP/1.1\r\nHost: x\r\n\r\n")
	assert.Empty(t, out)
	out = rawExchange(t, addr, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	assert.Contains(t, out, "\r\n\r\nok")
	assert.Contains(t, logged.String(), "panic serving")
	assert.Contains(t, logged.String(), "boom")
}

type lockedBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
