package h1

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// rawServer serves each accepted connection with handle, for upstreams that
// misbehave in ways net/http would not. It returns the base URL and the
// number of connections accepted so far.
func rawServer(t testing.TB, handle func(n int, c net.Conn, br *bufio.Reader)) (string, *atomic.Int32) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var (
		accepted atomic.Int32
		wg       sync.WaitGroup
		mu       sync.Mutex
		conns    []net.Conn
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n := int(accepted.Add(1))
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(n, c, bufio.NewReader(c))
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return "http://" + ln.Addr().String(), &accepted
}

// readReq reads one request and its body; false when the connection ended.
func readReq(br *bufio.Reader) (*http.Request, bool) {
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, false
	}
	_, _ = io.Copy(io.Discard, req.Body)
	return req, true
}

const okResponse = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

func newTransport(t testing.TB, o Options) *Transport {
	tr := New(o)
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

func get(t testing.TB, tr http.RoundTripper, u string) (int, string, error) {
	t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	return do(tr, req)
}

func do(tr http.RoundTripper, req *http.Request) (int, string, error) {
	res, err := tr.RoundTrip(req)
	if err != nil {
		return 0, "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, string(b), err
}

func idle(tr *Transport) int {
	n := 0
	tr.hosts.Range(func(_, v any) bool {
		hp := v.(*hostPool)
		hp.mu.Lock()
		n += len(hp.idle)
		hp.mu.Unlock()
		return true
	})
	return n
}

// waitFor polls cond until it holds or a deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestWriteHeadMatchesRequestWrite(t *testing.T) {
	for _, tc := range []struct {
		name, method, url string
		header            http.Header
		close             bool
		host              string
	}{
		{"plain", "GET", "http://up.example/orders/42?x=1", http.Header{"Accept": {"application/json"}, "X-Forwarded-For": {"192.0.2.1"}}, false, ""},
		{"head", "HEAD", "http://up.example/", nil, false, ""},
		{"empty path", "GET", "http://up.example", nil, false, ""},
		{"force query", "GET", "http://up.example/a?", nil, false, ""},
		{"escaped path", "GET", "http://up.example/a%2Fb/c%20d", nil, false, ""},
		{"user agent", "GET", "http://up.example/", http.Header{"User-Agent": {" curl/8 "}}, false, ""},
		{"user agent empty", "GET", "http://up.example/", http.Header{"User-Agent": {""}}, false, ""},
		{"close", "GET", "http://up.example/", nil, true, ""},
		{"close already", "GET", "http://up.example/", http.Header{"Connection": {"close"}}, true, ""},
		{"host", "GET", "http://10.0.0.1:8080/", nil, false, "api.example:8443"},
		{"multi values", "GET", "http://[::1]:80/", http.Header{"A": {"1", "2"}, "B": {"x\ny"}}, false, ""},
		{"excluded", "GET", "http://up.example/", http.Header{"Content-Length": {"5"}, "Transfer-Encoding": {"chunked"}, "Trailer": {"X"}}, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, tc.url, nil)
			require.NoError(t, err)
			if tc.header != nil {
				req.Header = tc.header
			}
			req.Close = tc.close
			req.Host = tc.host
			var want, got bytes.Buffer
			require.NoError(t, req.Write(&want))
			bw := bufio.NewWriter(&got)
			require.NoError(t, writeHead(bw, req))
			require.NoError(t, bw.Flush())
			assert.Equal(t, want.String(), got.String())
		})
	}
	t.Run("others are left to Request.Write", func(t *testing.T) {
		for _, u := range []string{"http://h%25zone/", "http://bücher.example/"} {
			req, _ := http.NewRequest("GET", "http://up.example/", nil)
			req.Host = u[7 : len(u)-1]
			var got bytes.Buffer
			bw := bufio.NewWriter(&got)
			assert.Equal(t, errNotSimple, writeHead(bw, req), u)
			bw.Flush()
			assert.Zero(t, got.Len(), "nothing written")
		}
		req, _ := http.NewRequest("POST", "http://up.example/", nil)
		assert.Equal(t, errNotSimple, writeHead(bufio.NewWriter(io.Discard), req))
	})
}

func TestRefusesWhatTheStandardTransportRefuses(t *testing.T) {
	tr := newTransport(t, Options{})
	for _, h := range []http.Header{{"Bad Name": {"x"}}, {"X": {"a\r\nInjected: 1"}}, {"X\r\nY": {"1"}}} {
		req, _ := http.NewRequest("GET", "http://127.0.0.1:1/", nil)
		req.Header = h
		_, err := tr.RoundTrip(req)
		assert.ErrorContains(t, err, "invalid header field")
	}
	req, _ := http.NewRequest("GET", "ftp://127.0.0.1:1/", nil)
	_, err := tr.RoundTrip(req)
	assert.ErrorIs(t, err, errScheme)
}

func TestReusesConnections(t *testing.T) {
	var conns atomic.Int32
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.URL.RequestURI())
	}))
	up.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	up.Start()
	defer up.Close()
	tr := newTransport(t, Options{})
	for i := range 5 {
		code, body, err := get(t, tr, fmt.Sprintf("%s/n/%d?q=%d", up.URL, i, i))
		require.NoError(t, err)
		assert.Equal(t, 200, code)
		assert.Equal(t, fmt.Sprintf("/n/%d?q=%d", i, i), body)
	}
	assert.EqualValues(t, 1, conns.Load(), "one connection, reused")
	assert.Equal(t, 1, idle(tr))
}

// The upstream closes a kept-alive connection while it is idle: the next
// request does not try it, and goes out on a new connection.
func TestIdleConnectionClosedByUpstream(t *testing.T) {
	served := make(chan struct{}, 2)
	u, accepted := rawServer(t, func(_ int, c net.Conn, br *bufio.Reader) {
		if _, ok := readReq(br); ok {
			io.WriteString(c, okResponse) // keep-alive, then hang up
			served <- struct{}{}
		}
	})
	tr := newTransport(t, Options{})
	for range 3 {
		code, body, err := get(t, tr, u)
		require.NoError(t, err)
		assert.Equal(t, 200, code)
		assert.Equal(t, "ok", body)
		<-served
		// Wait until the close has reached us, as it would on an idle
		// connection between two requests.
		waitFor(t, "the upstream's close", func() bool {
			var c *conn
			tr.hosts.Range(func(_, v any) bool {
				hp := v.(*hostPool)
				hp.mu.Lock()
				if len(hp.idle) > 0 {
					c = hp.idle[0]
				}
				hp.mu.Unlock()
				return false
			})
			return c == nil || c.peek() == peekClosed
		})
	}
	assert.EqualValues(t, 3, accepted.Load())
}

// The upstream closes a reused connection as the request goes out, and
// answers nothing: a GET is sent again on a fresh connection, once.
func TestReusedConnectionRace(t *testing.T) {
	u, accepted := rawServer(t, func(n int, c net.Conn, br *bufio.Reader) {
		if _, ok := readReq(br); !ok {
			return
		}
		io.WriteString(c, okResponse)
		if n == 1 {
			readReq(br) // the second request: read, and hang up unanswered
			return
		}
		for {
			if _, ok := readReq(br); !ok {
				return
			}
			io.WriteString(c, okResponse)
		}
	})
	tr := newTransport(t, Options{})
	_, _, err := get(t, tr, u)
	require.NoError(t, err)
	code, body, err := get(t, tr, u)
	require.NoError(t, err, "retried on a fresh connection")
	assert.Equal(t, 200, code)
	assert.Equal(t, "ok", body)
	assert.EqualValues(t, 2, accepted.Load())
}

// A request written on a reused connection that turns out dead is not sent
// again when it may have been acted on: a POST with a body.
func TestReusedConnectionRaceNotReplayed(t *testing.T) {
	var posts atomic.Int32
	u, _ := rawServer(t, func(n int, c net.Conn, br *bufio.Reader) {
		for i := 0; ; i++ {
			req, ok := readReq(br)
			if !ok {
				return
			}
			if req.Method == "POST" {
				posts.Add(1)
				if n == 1 {
					return // hang up unanswered
				}
			}
			io.WriteString(c, okResponse)
		}
	})
	tr := newTransport(t, Options{})
	_, _, err := get(t, tr, u)
	require.NoError(t, err)
	req, _ := http.NewRequest("POST", u, strings.NewReader("pay"))
	_, _, err = do(tr, req)
	require.Error(t, err)
	assert.EqualValues(t, 1, posts.Load(), "sent once")
}

func TestNothingWrittenIsRetriedWhateverTheMethod(t *testing.T) {
	var posts atomic.Int32
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.Method == "POST" {
			posts.Add(1)
		}
		w.Write(b)
	}))
	defer up.Close()
	tr := newTransport(t, Options{})
	_, _, err := get(t, tr, up.URL)
	require.NoError(t, err)
	// Break the pooled connection on our side, so the next write fails
	// before any byte leaves, and the check before reuse does not see it.
	tr.hosts.Range(func(_, v any) bool {
		hp := v.(*hostPool)
		hp.idle[0].raw = nil
		hp.idle[0].nc.Close()
		return true
	})
	req, _ := http.NewRequest("POST", up.URL, io.NopCloser(strings.NewReader("pay")))
	req.ContentLength = 3
	code, body, err := do(tr, req)
	require.NoError(t, err)
	assert.Equal(t, 200, code)
	assert.Equal(t, "pay", body)
	assert.EqualValues(t, 1, posts.Load())
}

// The upstream answers 413 before reading the body: the answer is
// delivered, the body is no longer sent, the connection is not reused.
func TestEarlyResponseStopsTheBody(t *testing.T) {
	u, accepted := rawServer(t, func(_ int, c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 413 Request Entity Too Large\r\nContent-Length: 3\r\n\r\nbig")
		_, _ = io.Copy(io.Discard, br) // read on until we hang up
	})
	tr := newTransport(t, Options{})
	pr, pw := io.Pipe()
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		chunk := bytes.Repeat([]byte("x"), 32<<10)
		for {
			if _, err := pw.Write(chunk); err != nil {
				return
			}
		}
	}()
	req, _ := http.NewRequest("PUT", u, pr)
	code, body, err := do(tr, req)
	require.NoError(t, err)
	assert.Equal(t, 413, code)
	assert.Equal(t, "big", body)
	pr.CloseWithError(errors.New("test over")) // as the server would after the handler
	<-stopped
	assert.Zero(t, idle(tr), "a connection whose body was cut is not reused")
	_, _, err = get(t, tr, u)
	require.NoError(t, err)
	assert.EqualValues(t, 2, accepted.Load())
}

type countingReader struct {
	r     io.Reader
	reads atomic.Int32
}

func (c *countingReader) Read(p []byte) (int, error) { c.reads.Add(1); return c.r.Read(p) }

func TestExpectContinue(t *testing.T) {
	t.Run("accepted", func(t *testing.T) {
		up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body) // net/http sends the 100 on this read
			w.Write(b)
		}))
		defer up.Close()
		tr := newTransport(t, Options{ExpectContinueTimeout: time.Minute})
		var got100 atomic.Bool
		ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{Got100Continue: func() { got100.Store(true) }})
		req, _ := http.NewRequestWithContext(ctx, "PUT", up.URL, io.NopCloser(strings.NewReader("payload")))
		req.ContentLength = 7
		req.Header.Set("Expect", "100-continue")
		code, body, err := do(tr, req)
		require.NoError(t, err)
		assert.Equal(t, 200, code)
		assert.Equal(t, "payload", body)
		assert.True(t, got100.Load())
		assert.Equal(t, 1, idle(tr))
	})
	t.Run("refused", func(t *testing.T) {
		up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "no", http.StatusUnauthorized) // without reading the body
		}))
		defer up.Close()
		tr := newTransport(t, Options{ExpectContinueTimeout: time.Minute})
		cr := &countingReader{r: strings.NewReader("payload")}
		req, _ := http.NewRequest("PUT", up.URL, io.NopCloser(cr))
		req.ContentLength = 7
		req.Header.Set("Expect", "100-continue")
		code, _, err := do(tr, req)
		require.NoError(t, err)
		assert.Equal(t, 401, code)
		assert.Zero(t, cr.reads.Load(), "the body was never read")
		assert.Zero(t, idle(tr), "a connection that owes a body is not reused")
	})
}

// Cancelling a request while its body streams closes its connection,
// which never returns to the pool.
func TestCancelMidBody(t *testing.T) {
	release := make(chan struct{})
	u, _ := rawServer(t, func(_ int, c net.Conn, br *bufio.Reader) {
		if _, ok := readReq(br); !ok {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhalf")
		<-release
	})
	defer close(release)
	tr := newTransport(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", u, nil)
	res, err := tr.RoundTrip(req)
	require.NoError(t, err)
	buf := make([]byte, 4)
	_, err = io.ReadFull(res.Body, buf)
	require.NoError(t, err)
	cancel()
	_, err = io.ReadAll(res.Body)
	assert.ErrorIs(t, err, context.Canceled)
	res.Body.Close()
	assert.Zero(t, idle(tr))
	tr.hosts.Range(func(_, v any) bool {
		hp := v.(*hostPool)
		hp.mu.Lock()
		assert.Zero(t, hp.total, "the connection is gone")
		hp.mu.Unlock()
		return true
	})
}

func TestCancelBeforeHeaders(t *testing.T) {
	release := make(chan struct{})
	u, _ := rawServer(t, func(_ int, c net.Conn, br *bufio.Reader) {
		readReq(br)
		<-release
	})
	defer close(release)
	tr := newTransport(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	trace := &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) { cancel() }}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), "GET", u, nil)
	_, err := tr.RoundTrip(req)
	assert.ErrorIs(t, err, context.Canceled)
	assert.Zero(t, idle(tr))
}

func TestTimeouts(t *testing.T) {
	release := make(chan struct{})
	u, _ := rawServer(t, func(_ int, c net.Conn, br *bufio.Reader) {
		readReq(br)
		<-release
	})
	defer close(release)
	t.Run("response headers", func(t *testing.T) {
		tr := newTransport(t, Options{ResponseHeaderTimeout: 20 * time.Millisecond})
		_, _, err := get(t, tr, u)
		require.Error(t, err)
		assert.True(t, isTimeout(err), "%v", err)
	})
	t.Run("context deadline", func(t *testing.T) {
		tr := newTransport(t, Options{})
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", u, nil)
		_, err := tr.RoundTrip(req)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
	})
	t.Run("dial", func(t *testing.T) {
		tr := newTransport(t, Options{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			<-ctx.Done()
			return nil, &net.OpError{Op: "dial", Err: ctx.Err()}
		}})
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", u, nil)
		_, err := tr.RoundTrip(req)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
	})
}

func TestConnectionClose(t *testing.T) {
	t.Run("upstream", func(t *testing.T) {
		up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Connection", "close")
			io.WriteString(w, "bye")
		}))
		defer up.Close()
		tr := newTransport(t, Options{})
		for range 2 {
			code, body, err := get(t, tr, up.URL)
			require.NoError(t, err)
			assert.Equal(t, 200, code)
			assert.Equal(t, "bye", body)
			assert.Zero(t, idle(tr))
		}
	})
	t.Run("request", func(t *testing.T) {
		var sawClose atomic.Bool
		up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			sawClose.Store(r.Close)
		}))
		defer up.Close()
		tr := newTransport(t, Options{})
		req, _ := http.NewRequest("GET", up.URL, nil)
		req.Close = true
		_, _, err := do(tr, req)
		require.NoError(t, err)
		assert.True(t, sawClose.Load())
		assert.Zero(t, idle(tr))
	})
	t.Run("HTTP/1.0 upstream", func(t *testing.T) {
		u, _ := rawServer(t, func(_ int, c net.Conn, br *bufio.Reader) {
			readReq(br)
			io.WriteString(c, "HTTP/1.0 200 OK\r\n\r\nuntil close")
		})
		tr := newTransport(t, Options{})
		code, body, err := get(t, tr, u)
		require.NoError(t, err)
		assert.Equal(t, 200, code)
		assert.Equal(t, "until close", body)
		assert.Zero(t, idle(tr))
	})
}

func TestPoolExhaustion(t *testing.T) {
	hold := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			w.WriteHeader(200)
			w.(http.Flusher).Flush()
			<-hold
		}
		io.WriteString(w, "ok")
	}))
	defer up.Close()
	tr := newTransport(t, Options{MaxConnsPerHost: 1, MaxConnWait: 30 * time.Millisecond})
	req, _ := http.NewRequest("GET", up.URL+"/hold", nil)
	held, err := tr.RoundTrip(req)
	require.NoError(t, err)

	began := time.Now()
	_, _, err = get(t, tr, up.URL)
	assert.ErrorIs(t, err, ErrPoolExhausted)
	var oe *net.OpError
	assert.True(t, errors.As(err, &oe) && oe.Op == "dial", "reported as a failed dial: nothing was sent")
	assert.Less(t, time.Since(began), 2*time.Second, "the wait is bounded")

	// A request waiting when the connection is freed gets it.
	tr2 := newTransport(t, Options{MaxConnsPerHost: 1, MaxConnWait: time.Minute})
	req, _ = http.NewRequest("GET", up.URL+"/hold", nil)
	held2, err := tr2.RoundTrip(req)
	require.NoError(t, err)
	result := make(chan error, 1)
	go func() {
		_, _, err := get(t, tr2, up.URL)
		result <- err
	}()
	close(hold)
	_, _ = io.ReadAll(held.Body)
	held.Body.Close()
	_, _ = io.ReadAll(held2.Body)
	held2.Body.Close()
	require.NoError(t, <-result)
}

// An upstream that sends more than its response leaves nothing in the pool
// that the next request could read as its answer.
func TestStaleResponseSafety(t *testing.T) {
	t.Run("bytes after the response", func(t *testing.T) {
		var seq atomic.Int32
		u, _ := rawServer(t, func(_ int, c net.Conn, br *bufio.Reader) {
			for {
				if _, ok := readReq(br); !ok {
					return
				}
				n := seq.Add(1)
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n%d", n)
				if n == 1 {
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale")
				}
			}
		})
		tr := newTransport(t, Options{})
		_, body, err := get(t, tr, u)
		require.NoError(t, err)
		assert.Equal(t, "1", body)
		_, body, err = get(t, tr, u)
		require.NoError(t, err)
		assert.Equal(t, "2", body, "never the stale answer")
	})
	t.Run("answer to an abandoned request", func(t *testing.T) {
		var seq atomic.Int32
		u, _ := rawServer(t, func(_ int, c net.Conn, br *bufio.Reader) {
			for {
				if _, ok := readReq(br); !ok {
					return
				}
				n := seq.Add(1)
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n%d", n)
				c.Write([]byte("xyz"))
			}
		})
		tr := newTransport(t, Options{})
		req, _ := http.NewRequest("GET", u, nil)
		res, err := tr.RoundTrip(req)
		require.NoError(t, err)
		res.Body.Close() // unread: the rest of it must not reach the next request
		_, body, err := get(t, tr, u)
		require.NoError(t, err)
		assert.Equal(t, "2xyz", body)
	})
	t.Run("malformed answer", func(t *testing.T) {
		u, _ := rawServer(t, func(n int, c net.Conn, br *bufio.Reader) {
			for {
				if _, ok := readReq(br); !ok {
					return
				}
				if n == 1 {
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n")
					continue
				}
				io.WriteString(c, okResponse)
			}
		})
		tr := newTransport(t, Options{})
		_, _, err := get(t, tr, u)
		require.Error(t, err)
		_, body, err := get(t, tr, u)
		require.NoError(t, err)
		assert.Equal(t, "ok", body)
	})
}

func TestTrailers(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Trailer", "X-Sum")
		w.Write(b)
		w.Header().Set("X-Sum", r.Trailer.Get("X-Req"))
	}))
	defer up.Close()
	tr := newTransport(t, Options{})
	req, _ := http.NewRequest("POST", up.URL, io.NopCloser(strings.NewReader("body")))
	req.ContentLength = -1
	req.Trailer = http.Header{"X-Req": {"r1"}}
	res, err := tr.RoundTrip(req)
	require.NoError(t, err)
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, "body", string(b))
	assert.Equal(t, "r1", res.Trailer.Get("X-Sum"))
	assert.Equal(t, 1, idle(tr))
}

func TestInformationalResponses(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		io.WriteString(w, "final")
	}))
	defer up.Close()
	tr := newTransport(t, Options{})
	var hints []int
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		Got1xxResponse: func(code int, _ textproto.MIMEHeader) error { hints = append(hints, code); return nil },
	})
	req, _ := http.NewRequestWithContext(ctx, "GET", up.URL, nil)
	code, body, err := do(tr, req)
	require.NoError(t, err)
	assert.Equal(t, 200, code)
	assert.Equal(t, "final", body)
	assert.Equal(t, []int{103}, hints)

	u, _ := rawServer(t, func(_ int, c net.Conn, br *bufio.Reader) {
		readReq(br)
		for range 10 {
			io.WriteString(c, "HTTP/1.1 103 Early Hints\r\n\r\n")
		}
		io.WriteString(c, okResponse)
	})
	_, _, err = get(t, tr, u)
	assert.ErrorIs(t, err, errTooMany1x)
}

func TestUpgradeHandsOverTheConnection(t *testing.T) {
	u, _ := rawServer(t, func(_ int, c net.Conn, br *bufio.Reader) {
		if _, ok := readReq(br); !ok {
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\nhello ")
		_, _ = io.Copy(c, br) // echo
	})
	tr := newTransport(t, Options{})
	req, _ := http.NewRequest("GET", u, nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "echo")
	res, err := tr.RoundTrip(req)
	require.NoError(t, err)
	require.Equal(t, 101, res.StatusCode)
	rwc, ok := res.Body.(io.ReadWriteCloser)
	require.True(t, ok)
	_, err = io.WriteString(rwc, "world")
	require.NoError(t, err)
	buf := make([]byte, len("hello world"))
	_, err = io.ReadFull(rwc, buf)
	require.NoError(t, err)
	assert.Equal(t, "hello world", string(buf))
	require.NoError(t, rwc.Close())
	assert.Zero(t, idle(tr))
}

func TestTLS(t *testing.T) {
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Proto)
	}))
	up.StartTLS() // HTTP/1.1 only
	defer up.Close()
	pool := up.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	tr := newTransport(t, Options{TLSClientConfig: &tls.Config{RootCAs: pool}})
	var resumed []bool
	trace := &httptrace.ClientTrace{TLSHandshakeDone: func(cs tls.ConnectionState, _ error) { resumed = append(resumed, cs.DidResume) }}
	for i := range 2 {
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", up.URL, nil)
		req.Close = true // a new connection, and a new handshake, each time
		code, body, err := do(tr, req)
		require.NoError(t, err, "request %d", i)
		assert.Equal(t, 200, code)
		assert.Equal(t, "HTTP/1.1", body)
	}
	assert.Equal(t, []bool{false, true}, resumed, "the second connection resumes the session")

	t.Run("HTTP/2 targets go to the HTTP2 transport", func(t *testing.T) {
		h2 := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, r.Proto)
		}))
		h2.EnableHTTP2 = true
		h2.StartTLS()
		defer h2.Close()
		std := h2.Client().Transport.(*http.Transport)
		tr := newTransport(t, Options{TLSClientConfig: std.TLSClientConfig, HTTP2: std})
		for range 2 {
			code, body, err := get(t, tr, h2.URL)
			require.NoError(t, err)
			assert.Equal(t, 200, code)
			assert.Equal(t, "HTTP/2.0", body)
		}
		std.CloseIdleConnections()
	})
	t.Run("without HTTP2, an HTTP/2 server is spoken to in HTTP/1.1", func(t *testing.T) {
		h2 := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, r.Proto)
		}))
		h2.EnableHTTP2 = true
		h2.StartTLS()
		defer h2.Close()
		tr := newTransport(t, Options{TLSClientConfig: h2.Client().Transport.(*http.Transport).TLSClientConfig})
		_, body, err := get(t, tr, h2.URL)
		require.NoError(t, err)
		assert.Equal(t, "HTTP/1.1", body)
	})
}

func TestIdleTimeout(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer up.Close()
	tr := newTransport(t, Options{IdleTimeout: 10 * time.Millisecond})
	_, _, err := get(t, tr, up.URL)
	require.NoError(t, err)
	waitFor(t, "the idle connection to expire", func() bool { return idle(tr) == 0 })
}

func TestHeaderSizeLimit(t *testing.T) {
	u, _ := rawServer(t, func(_ int, c net.Conn, br *bufio.Reader) {
		readReq(br)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Big: "+strings.Repeat("a", 8<<10)+"\r\nContent-Length: 0\r\n\r\n")
	})
	tr := newTransport(t, Options{MaxResponseHeaderBytes: 4 << 10})
	_, _, err := get(t, tr, u)
	assert.ErrorIs(t, err, errHeaderTooLarge)
}

// FuzzResponse sends whatever an upstream may answer: RoundTrip must not
// panic, and a connection it pools must deliver the next answer whole.
func FuzzResponse(f *testing.F) {
	for _, s := range []string{
		okResponse,
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X\r\n\r\n2\r\nok\r\n0\r\nX: y\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
		"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 101 Switching Protocols\r\n\r\n",
		"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nab",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale",
		"HTTP/1.1 999\r\n\r\n",
		"garbage\r\n\r\n",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, answer string) {
		watchdog := time.AfterFunc(3*time.Second, func() {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			panic(fmt.Sprintf("input %q hung:\n%s", answer, buf[:n]))
		})
		defer watchdog.Stop()
		var first atomic.Bool
		u, _ := rawServer(t, func(_ int, c net.Conn, br *bufio.Reader) {
			for {
				if _, ok := readReq(br); !ok {
					return
				}
				if first.CompareAndSwap(false, true) {
					io.WriteString(c, answer)
					continue
				}
				io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Good: 1\r\nContent-Length: 4\r\n\r\ngood")
			}
		})
		tr := New(Options{ResponseHeaderTimeout: 200 * time.Millisecond})
		defer tr.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", u, nil)
		if res, err := tr.RoundTrip(req); err == nil {
			if rwc, ok := res.Body.(io.ReadWriteCloser); ok && res.StatusCode == 101 {
				rwc.Close()
			} else {
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
			}
		}
		if idle(tr) == 0 {
			return
		}
		// A connection was pooled: it must carry the next answer, intact.
		req, _ = http.NewRequest("GET", u, nil)
		res, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatalf("pooled connection failed the next request: %v", err)
		}
		b, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil || string(b) != "good" || res.Header.Get("X-Good") != "1" {
			t.Fatalf("pooled connection delivered %q (%v), header %v", b, err, res.Header)
		}
	})
}

// interimRecorder records the interim responses relayed to it, with the
// header each was written with.
type interimRecorder struct {
	h     http.Header
	codes []int
	links []string
}

func (r *interimRecorder) Header() http.Header { return r.h }
func (r *interimRecorder) WriteHeader(code int) {
	r.codes = append(r.codes, code)
	r.links = append(r.links, r.h.Get("Link"))
}

// TestRoundTripInterimRelays: 102 and 103 reach the Interim with their own
// fields, which are then taken off again; 100 Continue is not relayed.
func TestRoundTripInterimRelays(t *testing.T) {
	u, _ := rawServer(t, func(_ int, c net.Conn, br *bufio.Reader) {
		readReq(br)
		io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n")
		io.WriteString(c, "HTTP/1.1 102 Processing\r\n\r\n")
		io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\nX-Own: hint\r\n\r\n")
		io.WriteString(c, okResponse)
	})
	tr := newTransport(t, Options{})
	rec := &interimRecorder{h: http.Header{"X-Own": {"mine"}}}
	req, _ := http.NewRequest("GET", u, nil)
	res, err := tr.RoundTripInterim(req, rec)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	assert.Equal(t, 200, res.StatusCode)
	assert.Equal(t, []int{102, 103}, rec.codes)
	assert.Equal(t, []string{"", "</a.css>; rel=preload"}, rec.links)
	assert.Equal(t, http.Header{"X-Own": {"mine"}}, rec.h, "the interim fields are not left on the final header")
}

// TestWroteRequestHook: a trace with WroteRequest alone still hears of the
// write of a body-less request (which skips Request.Write).
func TestWroteRequestHook(t *testing.T) {
	u, _ := rawServer(t, func(_ int, c net.Conn, br *bufio.Reader) {
		readReq(br)
		io.WriteString(c, okResponse)
	})
	tr := newTransport(t, Options{})
	wrote := 0
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		WroteRequest: func(i httptrace.WroteRequestInfo) { require.NoError(t, i.Err); wrote++ },
	})
	req, _ := http.NewRequestWithContext(ctx, "GET", u, nil)
	code, _, err := do(tr, req)
	require.NoError(t, err)
	assert.Equal(t, 200, code)
	assert.Equal(t, 1, wrote)
}

// TestCloseIdleConnectionsTo: closing one host's idle connections leaves
// another's pooled, and a connection to the retired host that was in use
// is closed when its exchange ends instead of going back to a pool.
func TestCloseIdleConnectionsTo(t *testing.T) {
	ended := make(chan struct{}, 4) // a connection to u1 was closed by the client
	serve := func(signal bool) func(int, net.Conn, *bufio.Reader) {
		return func(_ int, c net.Conn, br *bufio.Reader) {
			for {
				if _, ok := readReq(br); !ok {
					if signal {
						ended <- struct{}{}
					}
					return
				}
				io.WriteString(c, okResponse)
			}
		}
	}
	u1, accepted := rawServer(t, serve(true))
	u2, _ := rawServer(t, serve(false))
	tr := newTransport(t, Options{})
	for _, u := range []string{u1, u2} {
		_, _, err := get(t, tr, u)
		require.NoError(t, err)
	}
	require.Equal(t, 2, idle(tr))

	req, _ := http.NewRequest("GET", u1, nil)
	res, err := tr.RoundTrip(req) // in use while its host is retired
	require.NoError(t, err)
	assert.True(t, tr.CloseIdleConnectionsTo("http", req.URL.Host))
	assert.Equal(t, 1, idle(tr), "the other host's connection stays pooled")
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the retired host's connection in use was kept open after its exchange")
	}

	_, _, err = get(t, tr, u1) // the host is served again, by a new pool
	require.NoError(t, err)
	assert.Equal(t, int32(2), accepted.Load())
	assert.Equal(t, 2, idle(tr))
}
