package pylon

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
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
	assert.True(t, srv.Protocols.UnencryptedHTTP2(), "h2c with prior knowledge is on by default")
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

// serveRaw serves srv on a fresh loopback listener with srv.Serve, the way a
// user who does not call Run serves it, and returns the address.
func serveRaw(t testing.TB, srv *http.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return ln.Addr().String()
}

// exchange writes raw to a new connection to addr and reads until the
// server closes it. It fails the test if the connection is still open after
// 5s.
func exchange(t *testing.T, addr, raw string) string {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	_, err = io.WriteString(conn, raw)
	require.NoError(t, err)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
	b, err := io.ReadAll(conn)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("connection not closed by the server: %v (read %q)", err, b)
	}
	return string(b)
}

// pathRecorder is a handler that reads the body and records each request's
// path.
type pathRecorder struct {
	mu    sync.Mutex
	paths []string
}

func (p *pathRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	p.mu.Lock()
	p.paths = append(p.paths, r.URL.Path)
	p.mu.Unlock()
	io.WriteString(w, "body="+string(b))
}

func (p *pathRecorder) seen() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.paths...)
}

func TestServerSmugglingClosesConnection(t *testing.T) {
	const smuggled = "GET /admin HTTP/1.1\r\nHost: x\r\n\r\n"
	cases := []struct{ name, raw string }{
		{"CL then TE", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n" +
			"3\r\nabc\r\n0\r\n\r\n" + smuggled},
		{"TE then CL", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n" +
			"3\r\nabc\r\n0\r\n\r\n" + smuggled},
		{"obs-folded TE with CL", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\nTransfer-Encoding:\r\n chunked\r\n\r\n" +
			"3\r\nabc\r\n0\r\n\r\n" + smuggled},
		{"obs-folded TE alone", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n\tchunked\r\n\r\n" +
			"3\r\nabc\r\n0\r\n\r\n" + smuggled},
		// HTTP/1.0: net/http ignores Transfer-Encoding and uses Content-Length,
		// the reverse of a proxy that honours the chunked framing.
		{"HTTP/1.0 keep-alive TE with CL", "POST / HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n" +
			"abc" + smuggled},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := &pathRecorder{}
			addr := serveRaw(t, NewServer("", rec))
			out := exchange(t, addr, tc.raw)
			assert.Equal(t, 1, strings.Count(out, "HTTP/1."), "exactly one response: %q", out)
			assert.Contains(t, out, "body=abc")
			assert.Contains(t, out, "Connection: close")
			assert.Equal(t, []string{"/"}, rec.seen(), "the smuggled request reached the handler")
		})
	}
}

func TestServerKeepAliveWithoutSmuggling(t *testing.T) {
	rec := &pathRecorder{}
	addr := serveRaw(t, NewServer("", rec))
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.SetDeadline(time.Now().Add(5*time.Second)))
	br := bufio.NewReader(conn)
	roundTrip := func(raw string) *http.Response {
		t.Helper()
		_, err := io.WriteString(conn, raw)
		require.NoError(t, err)
		res, err := http.ReadResponse(br, nil)
		require.NoError(t, err)
		b, err := io.ReadAll(res.Body)
		require.NoError(t, err)
		res.Body.Close()
		res.Body = io.NopCloser(strings.NewReader(string(b)))
		return res
	}
	body := func(res *http.Response) string { b, _ := io.ReadAll(res.Body); return string(b) }

	// Content-Length bodies and bodiless requests share one connection.
	for i, p := range []string{"/a", "/b", "/c"} {
		raw := "GET " + p + " HTTP/1.1\r\nHost: x\r\n\r\n"
		if i%2 == 0 {
			raw = "POST " + p + " HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
		}
		res := roundTrip(raw)
		assert.False(t, res.Close, "request %s closed the connection", p)
		assert.Equal(t, map[bool]string{true: "body=hi", false: "body="}[i%2 == 0], body(res))
	}
	// A chunked body is served, then the connection ends (see NewServer).
	res := roundTrip("POST /d HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n")
	assert.Equal(t, "body=hi", body(res))
	assert.True(t, res.Close)
	_, err = br.ReadByte()
	assert.ErrorIs(t, err, io.EOF)
	assert.Equal(t, []string{"/a", "/b", "/c", "/d"}, rec.seen())
}

func TestServerSlowBodyTimesOut(t *testing.T) {
	const idle = 200 * time.Millisecond
	const raw = "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nfirst bytes"

	t.Run("handler", func(t *testing.T) {
		readErr := make(chan error, 1)
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, err := io.ReadAll(r.Body)
			readErr <- err
			if errors.Is(err, ErrBodyTimeout) {
				Error(w, r, http.StatusRequestTimeout, "slow")
			}
		})
		addr := serveRaw(t, NewServerWithOptions("", h, ServerOptions{BodyIdleTimeout: idle}))
		start := time.Now()
		out := exchange(t, addr, raw) // the client then sends nothing more
		elapsed := time.Since(start)
		select {
		case err := <-readErr:
			assert.ErrorIs(t, err, ErrBodyTimeout)
			assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
		case <-time.After(5 * time.Second):
			t.Fatal("the body read never returned")
		}
		assert.Contains(t, out, "HTTP/1.1 408 ")
		assert.Less(t, elapsed, 3*time.Second)
	})

	t.Run("backend answers 408", func(t *testing.T) {
		upErr := make(chan error, 1)
		up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
			_, err := io.ReadAll(r.Body)
			upErr <- err
		})
		g := New(Options{})
		g.Route("/").To(backend(t, BackendOptions{Targets: []string{up.URL}}))
		addr := serveRaw(t, NewServerWithOptions("", g, ServerOptions{BodyIdleTimeout: idle}))
		out := exchange(t, addr, raw)
		res, err := http.ReadResponse(bufio.NewReader(strings.NewReader(out)), nil)
		require.NoError(t, err, "response: %q", out)
		assert.Equal(t, http.StatusRequestTimeout, res.StatusCode)
		assert.Equal(t, ProblemContentType, res.Header.Get("Content-Type"))
		select {
		case err := <-upErr:
			assert.Error(t, err, "the upstream attempt was not aborted")
		case <-time.After(5 * time.Second):
			t.Fatal("the upstream still waits for the body")
		}
	})
}

// trickle writes n bytes to w, one every interval, the way a slow but live
// client uploads.
func trickle(w io.Writer, n int, interval time.Duration) error {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for range n {
		<-tick.C
		if _, err := w.Write([]byte{'x'}); err != nil {
			return err
		}
	}
	return nil
}

func TestServerFlowingUploadIsNotCut(t *testing.T) {
	const idle = 200 * time.Millisecond
	const n = 24 // one byte every 50ms: 1.2s in all, six times the idle limit
	g := New(Options{})
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			w.WriteHeader(http.StatusTeapot)
			return
		}
		io.WriteString(w, strconv.Itoa(len(b)))
	})
	g.Route("/").To(backend(t, BackendOptions{Targets: []string{up.URL}}))
	addr := serveRaw(t, NewServerWithOptions("", g, ServerOptions{BodyIdleTimeout: idle}))

	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.SetDeadline(time.Now().Add(10*time.Second)))
	_, err = io.WriteString(conn, "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: "+strconv.Itoa(n)+"\r\n\r\n")
	require.NoError(t, err)
	require.NoError(t, trickle(conn, n, 50*time.Millisecond))
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	assert.Equal(t, http.StatusOK, res.StatusCode)
	assert.Equal(t, strconv.Itoa(n), string(b))
	assert.False(t, res.Close)

	// The body's deadline does not outlive it: a keep-alive client that
	// pauses for longer than the idle limit before its next request is
	// served, under the server's own IdleTimeout.
	<-time.After(2 * idle) // the client's think time, not a wait for an event
	_, err = io.WriteString(conn, "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
	require.NoError(t, err)
	res, err = http.ReadResponse(br, nil)
	require.NoError(t, err)
	b, _ = io.ReadAll(res.Body)
	res.Body.Close()
	assert.Equal(t, "3", string(b))
}

// A response that takes longer than the idle limit, after the body was read
// in full, is not cut: net/http's background read of the connection must
// not inherit the body's deadline.
func TestServerSlowBodyLimitSparesLongResponses(t *testing.T) {
	const idle = 200 * time.Millisecond
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			w.WriteHeader(http.StatusTeapot)
			return
		}
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for range 12 { // 600ms of streaming, three times the idle limit
			<-tick.C
			if r.Context().Err() != nil {
				return
			}
			io.WriteString(w, "x")
			http.NewResponseController(w).Flush()
		}
	})
	addr := serveRaw(t, NewServerWithOptions("", h, ServerOptions{BodyIdleTimeout: idle}))
	res, err := http.Post("http://"+addr+"/", "text/plain", strings.NewReader("hello"))
	require.NoError(t, err)
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, res.StatusCode)
	assert.Equal(t, strings.Repeat("x", 12), string(b))
	http.DefaultClient.CloseIdleConnections()
}

func TestNewServerWithOptionsBodyIdleTimeout(t *testing.T) {
	for _, tc := range []struct {
		in, want time.Duration
	}{{0, 60 * time.Second}, {time.Second, time.Second}, {-1, -1}} {
		srv := NewServerWithOptions("", http.NotFoundHandler(), ServerOptions{BodyIdleTimeout: tc.in})
		assert.Equal(t, tc.want, srv.Handler.(*guardHandler).idle, "BodyIdleTimeout %v", tc.in)
	}
}

// A handler that answers without reading the body: net/http reads the
// rest of it before it writes the response, and that read is bounded too.
func TestServerSlowUnreadBody(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		Error(w, r, http.StatusUnauthorized, "no")
	})
	addr := serveRaw(t, NewServerWithOptions("", h, ServerOptions{BodyIdleTimeout: 200 * time.Millisecond}))
	out := exchange(t, addr, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nfirst bytes")
	assert.Contains(t, out, "HTTP/1.1 401 ")
}

// Over HTTP/2 the limit applies per stream, through the same
// ResponseController call.
func TestServerSlowBodyHTTP2(t *testing.T) {
	const idle = 200 * time.Millisecond
	readErr := make(chan error, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		readErr <- err
		if err != nil {
			Error(w, r, http.StatusRequestTimeout, "slow")
			return
		}
		io.WriteString(w, strconv.Itoa(len(b)))
	})
	ts := httptest.NewUnstartedServer(nil)
	ts.Config = NewServerWithOptions("", h, ServerOptions{BodyIdleTimeout: idle})
	ts.EnableHTTP2 = true
	ts.StartTLS()
	defer ts.Close()
	client := ts.Client()
	defer client.CloseIdleConnections()

	t.Run("flowing", func(t *testing.T) {
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(trickle(pw, 12, 50*time.Millisecond)) }()
		res, err := client.Post(ts.URL, "text/plain", pr)
		require.NoError(t, err)
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		assert.Equal(t, 2, res.ProtoMajor)
		assert.Equal(t, "12", string(b))
		assert.NoError(t, <-readErr)
	})
	t.Run("stalled", func(t *testing.T) {
		pr, pw := io.Pipe()
		defer pw.Close()
		go func() { pw.Write([]byte("first bytes")) }() // then nothing
		res, err := client.Post(ts.URL, "text/plain", pr)
		require.NoError(t, err)
		res.Body.Close()
		assert.Equal(t, http.StatusRequestTimeout, res.StatusCode)
		assert.ErrorIs(t, <-readErr, ErrBodyTimeout)
	})
}

// BenchmarkServerGuard measures what NewServer's handler layer costs a
// request, over loopback with keep-alive, against a bare http.Server with
// the same handler: a GET, and a POST of 1 KiB (whose body reads arm the
// idle deadline).
func BenchmarkServerGuard(b *testing.B) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	})
	payload := strings.Repeat("x", 1<<10)
	for _, s := range []struct {
		name string
		srv  *http.Server
	}{
		{"net-http", &http.Server{Handler: h}},
		{"NewServer", NewServer("", h)},
	} {
		addr := "http://" + serveRaw(b, s.srv) + "/"
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
		for _, m := range []string{"GET", "POST"} {
			b.Run(s.name+"/"+m, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					var body io.Reader
					if m == "POST" {
						body = strings.NewReader(payload)
					}
					req, _ := http.NewRequest(m, addr, body)
					res, err := client.Do(req)
					if err != nil {
						b.Fatal(err)
					}
					io.Copy(io.Discard, res.Body)
					res.Body.Close()
				}
			})
		}
		client.CloseIdleConnections()
	}
}

// deadlineWriter is a ResponseWriter whose SetReadDeadline sets a real TCP
// connection's deadline, as net/http's does.
type deadlineWriter struct {
	http.ResponseWriter
	conn net.Conn
}

func (d deadlineWriter) SetReadDeadline(t time.Time) error { return d.conn.SetReadDeadline(t) }

// BenchmarkIdleBody measures the handler layer alone for a request with a
// 1 KiB body read in two reads (data, EOF), deadline calls included.
func BenchmarkIdleBody(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(b, err)
	defer ln.Close()
	conn, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(b, err)
	defer conn.Close()
	buf := make([]byte, 2<<10)
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for {
			if _, err := r.Body.Read(buf); err != nil {
				return
			}
		}
	})
	payload := []byte(strings.Repeat("x", 1<<10))
	var w http.ResponseWriter = &deadlineWriter{httptest.NewRecorder(), conn}
	for _, c := range []struct {
		name string
		h    http.Handler
	}{{"bare", inner}, {"NewServer", NewServer("", inner).Handler}} {
		b.Run(c.name, func(b *testing.B) {
			rd := bytes.NewReader(payload)
			r := httptest.NewRequest("POST", "/", nil)
			b.ReportAllocs()
			for b.Loop() {
				rd.Reset(payload)
				r.Body, r.ContentLength = io.NopCloser(rd), int64(len(payload))
				c.h.ServeHTTP(w, r)
			}
		})
	}
}

// A gRPC Content-Type, with or without a grpc-timeout, does not lift the
// body idle timeout on any route: a call over HTTP/2 whose body stalls gets
// five idle timeouts, then the gateway answers it DEADLINE_EXCEEDED (408)
// and releases the stream. It used to stay open for as long as the client
// wished.
func TestBodyIdleTimeoutGRPCOverHTTP2(t *testing.T) {
	const idle = 50 * time.Millisecond
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
	})
	gw := New(Options{})
	gw.Route("/upload").To(backend(t, BackendOptions{Targets: []string{up.URL}}))
	base := startServer(t, NewServerWithOptions("", gw, ServerOptions{BodyIdleTimeout: idle}))
	for _, timeout := range []string{"", "99999999H"} {
		t.Run("grpc-timeout "+timeout, func(t *testing.T) {
			pr, pw := io.Pipe()
			defer pw.Close()
			go func() { _, _ = pw.Write([]byte("hello")) }() // then nothing
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, "POST", base+"/upload", pr)
			require.NoError(t, err)
			req.Header.Set("Content-Type", "application/grpc")
			if timeout != "" {
				req.Header.Set("Grpc-Timeout", timeout)
			}
			start := time.Now()
			res, err := h2cClient(t).Do(req)
			require.NoError(t, err, "the stream stays open")
			res.Body.Close()
			assert.Equal(t, "4", res.Header.Get("Grpc-Status"), "DEADLINE_EXCEEDED")
			assert.GreaterOrEqual(t, time.Since(start), 5*idle, "a gRPC stream may be silent five idle timeouts")
		})
	}
}
