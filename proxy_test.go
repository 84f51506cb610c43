package pylon

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// upstream starts a loopback backend server closed at the test's end.
func upstream(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s
}

// backend builds a Backend closed at the test's end.
func backend(t *testing.T, opts BackendOptions) *Backend {
	t.Helper()
	b, err := NewBackend("test", opts)
	require.NoError(t, err)
	t.Cleanup(func() { b.Close() })
	return b
}

// front serves a gateway with one catch-all route to b over loopback.
func front(t *testing.T, opts Options, b *Backend) *httptest.Server {
	t.Helper()
	g := New(opts)
	g.Route("/").To(b)
	require.NoError(t, g.Err())
	s := httptest.NewServer(g)
	t.Cleanup(s.Close)
	return s
}

func problemOf(t *testing.T, res *http.Response) Problem {
	t.Helper()
	assert.Equal(t, ProblemContentType, res.Header.Get("Content-Type"))
	var p Problem
	require.NoError(t, json.NewDecoder(res.Body).Decode(&p))
	return p
}

func TestProxyHopByHopHeaders(t *testing.T) {
	var got http.Header
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Clone()
		w.Header().Set("Connection", "X-Up-Secret")
		w.Header().Set("X-Up-Secret", "internal")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("X-Kept", "yes")
	})
	gw := front(t, Options{}, backend(t, BackendOptions{Targets: []string{up.URL}}))

	req, _ := http.NewRequest("GET", gw.URL+"/x", nil)
	req.Header.Set("Connection", "X-Secret, X-Forwarded-For")
	req.Header.Set("X-Secret", "drop me")
	req.Header.Set("Keep-Alive", "300")
	req.Header.Set("Proxy-Authorization", "Basic abc")
	req.Header.Set("Te", "trailers, deflate")
	req.Header.Set("X-Kept", "yes")
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	require.Equal(t, 200, res.StatusCode)

	for _, h := range []string{"X-Secret", "Keep-Alive", "Proxy-Authorization", "Upgrade"} {
		assert.Empty(t, got.Get(h), h)
	}
	assert.Equal(t, "trailers", got.Get("Te"))
	assert.Equal(t, "yes", got.Get("X-Kept"))
	// Naming X-Forwarded-For in Connection must not remove the gateway's own.
	assert.Equal(t, "127.0.0.1", got.Get("X-Forwarded-For"))

	assert.Empty(t, res.Header.Get("X-Up-Secret"))
	assert.Empty(t, res.Header.Get("Keep-Alive"))
	assert.Equal(t, "yes", res.Header.Get("X-Kept"))
}

func TestProxyForwardedHeaders(t *testing.T) {
	var got http.Header
	var gotHost string
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		got, gotHost = r.Header.Clone(), r.Host
	})
	spoofed := func(req *http.Request) {
		req.Host = "shop.example"
		req.Header.Set("X-Forwarded-For", "6.6.6.6")
		req.Header.Set("X-Forwarded-Host", "evil.example")
		req.Header.Set("X-Forwarded-Proto", "https")
		req.Header.Set("Forwarded", "for=6.6.6.6")
	}
	tests := []struct {
		name                   string
		trusted                []netip.Prefix
		preserveHost           bool
		xff, xfh, xfp, fwd, up string
	}{
		{
			name: "untrusted client is replaced",
			xff:  "127.0.0.1", xfh: "shop.example", xfp: "http",
			fwd: "for=127.0.0.1;host=shop.example;proto=http",
		},
		{
			name:    "trusted proxy is extended",
			trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
			xff:     "6.6.6.6, 127.0.0.1", xfh: "evil.example", xfp: "https", // what the trusted proxy said
			// Forwarded is not the family the Trust reads: rebuilt from the decision.
			fwd: "for=6.6.6.6;host=evil.example;proto=https",
		},
		{
			name: "preserve host", preserveHost: true,
			xff: "127.0.0.1", xfh: "shop.example", xfp: "http",
			fwd: "for=127.0.0.1;host=shop.example;proto=http", up: "shop.example",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := backend(t, BackendOptions{Targets: []string{up.URL}, PreserveHost: tc.preserveHost})
			gw := front(t, Options{Trust: Trust{Proxies: tc.trusted}}, b)
			req, _ := http.NewRequest("GET", gw.URL+"/", nil)
			spoofed(req)
			res, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			res.Body.Close()
			assert.Equal(t, tc.xff, got.Get("X-Forwarded-For"))
			assert.Equal(t, tc.xfh, got.Get("X-Forwarded-Host"))
			assert.Equal(t, tc.xfp, got.Get("X-Forwarded-Proto"))
			assert.Equal(t, tc.fwd, got.Get("Forwarded"))
			wantHost := tc.up
			if wantHost == "" {
				wantHost = strings.TrimPrefix(up.URL, "http://")
			}
			assert.Equal(t, wantHost, gotHost)
		})
	}
}

// TestProxyForwardedTrustedOtherFamily: behind a trusted proxy, only the
// forwarding-header family the Trust reads is extended. The other family,
// which that proxy passes as the client forged it, reaches the upstream
// rebuilt from the client decision, and client-IP headers no Trust reads
// (X-Real-IP and kin) never reach it at all.
func TestProxyForwardedTrustedOtherFamily(t *testing.T) {
	var got http.Header
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) { got = r.Header.Clone() })
	trust := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	for _, tc := range []struct {
		name     string
		header   ForwardedHeader
		set      map[string]string // what the trusted proxy passes on
		xff, fwd string
	}{
		{
			name:   "X-Forwarded-For read, Forwarded forged",
			header: XForwardedFor,
			set: map[string]string{
				"X-Forwarded-For": "203.0.113.5", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "shop.example",
				"Forwarded": "for=6.6.6.6;host=evil.example;proto=http",
			},
			xff: "203.0.113.5, 127.0.0.1",
			fwd: "for=203.0.113.5;host=shop.example;proto=https",
		},
		{
			name:   "Forwarded read, X-Forwarded-For forged",
			header: Forwarded,
			set: map[string]string{
				"Forwarded":       "for=203.0.113.5;host=shop.example;proto=https",
				"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "http", "X-Forwarded-Host": "evil.example",
			},
			xff: "203.0.113.5",
			fwd: "for=203.0.113.5;host=shop.example;proto=https, for=127.0.0.1;host=gw.internal;proto=http",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gw := front(t, Options{Trust: Trust{Proxies: trust, Header: tc.header}}, backend(t, BackendOptions{Targets: []string{up.URL}}))
			req, _ := http.NewRequest("GET", gw.URL+"/", nil)
			req.Host = "gw.internal"
			for k, v := range tc.set {
				req.Header.Set(k, v)
			}
			for _, k := range []string{"X-Real-Ip", "True-Client-Ip", "Cf-Connecting-Ip", "X-Client-Ip", "X-Forwarded-Prefix"} {
				req.Header.Set(k, "6.6.6.6")
			}
			res, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			res.Body.Close()
			require.Equal(t, 200, res.StatusCode)
			assert.Equal(t, tc.xff, got.Get("X-Forwarded-For"))
			assert.Equal(t, tc.fwd, got.Get("Forwarded"))
			assert.Equal(t, "https", got.Get("X-Forwarded-Proto"))
			assert.Equal(t, "shop.example", got.Get("X-Forwarded-Host"))
			for _, k := range []string{"X-Real-Ip", "True-Client-Ip", "Cf-Connecting-Ip", "X-Client-Ip", "X-Forwarded-Prefix"} {
				assert.Empty(t, got.Values(k), k)
			}
		})
	}
}

func TestForwardedIPv6AndQuoting(t *testing.T) {
	h := http.Header{}
	r := httptest.NewRequest("GET", "/", nil)
	r.RemoteAddr = "[2001:db8::1%eth0]:1234"
	r.Host = "[2001:db8::2]:8080"
	info := &RequestInfo{}
	Trust{}.Identify(info, r)
	setForwarded(h, r, info)
	assert.Equal(t, "2001:db8::1", h.Get("X-Forwarded-For"))
	assert.Equal(t, `for="[2001:db8::1]";host="[2001:db8::2]:8080";proto=http`, h.Get("Forwarded"))
}

func TestProxyPathQueryAndBasePath(t *testing.T) {
	var gotURI string
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) { gotURI = r.RequestURI })
	tests := []struct {
		name, target, path, passRaw, want string
	}{
		{"plain", up.URL, "/a/b?x=1&y=2", "", "/a/b?x=1&y=2"},
		{"base path", up.URL + "/svc/", "/a?x=1", "", "/svc/a?x=1"},
		{"escaped segment kept", up.URL, "/a%20b/c", "", "/a%20b/c"},
		{"semicolon query cleaned", up.URL, "/q?a=1;b=2&c=3", "", "/q?c=3"},
		{"bad escape dropped", up.URL, "/q?a=%zz&c=3", "", "/q?c=3"},
		{"raw query opt-in", up.URL, "/q?a=1;b=2&c=3", "yes", "/q?a=1;b=2&c=3"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			gw := front(t, Options{}, backend(t, BackendOptions{Targets: []string{tc.target}, PassRawQuery: tc.passRaw != ""}))
			res, err := http.Get(gw.URL + tc.path)
			require.NoError(t, err)
			res.Body.Close()
			assert.Equal(t, 200, res.StatusCode)
			assert.Equal(t, tc.want, gotURI)
		})
	}
}

func TestProxyStreamsEventStream(t *testing.T) {
	release := make(chan struct{})
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: one\n\n")
		w.(http.Flusher).Flush()
		<-release // the second event only comes after the first was seen
		io.WriteString(w, "data: two\n\n")
	})
	gw := front(t, Options{}, backend(t, BackendOptions{Targets: []string{up.URL}}))
	res, err := http.Get(gw.URL + "/events")
	require.NoError(t, err)
	defer res.Body.Close()
	br := bufio.NewReader(res.Body)
	line, err := br.ReadString('\n')
	require.NoError(t, err, "first event must arrive before the stream ends")
	assert.Equal(t, "data: one\n", line)
	close(release)
	rest, err := io.ReadAll(br)
	require.NoError(t, err)
	assert.Equal(t, "\ndata: two\n\n", string(rest))
}

func TestProxyLargeBodyStreams(t *testing.T) {
	const size = 8 << 20
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		w.Header().Set("X-Got", itoa(n))
		chunk := make([]byte, 64<<10)
		for i := 0; i < size/len(chunk); i++ {
			w.Write(chunk)
		}
	})
	gw := front(t, Options{}, backend(t, BackendOptions{Targets: []string{up.URL}}))
	res, err := http.Post(gw.URL+"/up", "application/octet-stream", io.LimitReader(zeros{}, size))
	require.NoError(t, err)
	defer res.Body.Close()
	n, err := io.Copy(io.Discard, res.Body)
	require.NoError(t, err)
	assert.Equal(t, int64(size), n)
	assert.Equal(t, itoa(size), res.Header.Get("X-Got"))
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func TestProxyTrailers(t *testing.T) {
	var reqTrailer http.Header
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		reqTrailer = r.Trailer
		w.Header().Set("Trailer", "Grpc-Status")
		w.Write([]byte("body"))
		w.Header().Set("Grpc-Status", "0")
		w.Header().Set(http.TrailerPrefix+"X-Late", "late")
	})
	gw := front(t, Options{}, backend(t, BackendOptions{Targets: []string{up.URL}}))
	req, _ := http.NewRequest("POST", gw.URL+"/", io.NopCloser(strings.NewReader("hi")))
	req.ContentLength = -1
	req.Trailer = http.Header{"X-Req-Trailer": {"sneaky"}}
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	assert.Equal(t, "body", string(body))
	assert.Equal(t, "0", res.Trailer.Get("Grpc-Status"))
	assert.Equal(t, "late", res.Trailer.Get("X-Late"))
	assert.Empty(t, reqTrailer.Get("X-Req-Trailer"), "request trailers are dropped")

	g := New(Options{})
	g.Route("/").RequestTrailers().To(backend(t, BackendOptions{Targets: []string{up.URL}}))
	opted := httptest.NewServer(g)
	defer opted.Close()
	req, _ = http.NewRequest("POST", opted.URL+"/", io.NopCloser(strings.NewReader("hi")))
	req.ContentLength = -1
	req.Trailer = http.Header{"X-Req-Trailer": {"wanted"}}
	res, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	assert.Equal(t, "wanted", reqTrailer.Get("X-Req-Trailer"), "a route that opts in forwards them")
}

// wsUpstream starts an upstream that accepts WebSocket upgrades and then
// hands the tunnel to tunnel.
func wsUpstream(t *testing.T, tunnel func(*bufio.ReadWriter)) *httptest.Server {
	return upstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" || !headerHasToken(r.Header["Connection"], "upgrade") {
			http.Error(w, "no upgrade", 400)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		tunnel(brw)
	})
}

func TestProxyWebSocketUpgrade(t *testing.T) {
	up := wsUpstream(t, func(brw *bufio.ReadWriter) {
		line, _ := brw.ReadString('\n')
		brw.WriteString("echo:" + line)
		brw.Flush()
	})
	gw := front(t, Options{}, backend(t, BackendOptions{Targets: []string{up.URL}}))

	t.Run("websocket passes", func(t *testing.T) {
		conn, err := net.Dial("tcp", strings.TrimPrefix(gw.URL, "http://"))
		require.NoError(t, err)
		defer conn.Close()
		io.WriteString(conn, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		br := bufio.NewReader(conn)
		res, err := http.ReadResponse(br, nil)
		require.NoError(t, err)
		require.Equal(t, 101, res.StatusCode)
		assert.Equal(t, "websocket", res.Header.Get("Upgrade"))
		io.WriteString(conn, "hello\n")
		line, err := br.ReadString('\n')
		require.NoError(t, err)
		assert.Equal(t, "echo:hello\n", line)
	})
	t.Run("h2c is never forwarded", func(t *testing.T) {
		req, _ := http.NewRequest("GET", gw.URL+"/ws", nil)
		req.Header.Set("Upgrade", "h2c")
		req.Header.Set("Connection", "Upgrade, HTTP2-Settings")
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		res.Body.Close()
		assert.Equal(t, 400, res.StatusCode, "the upstream saw no upgrade request")
	})
}

func TestProxyExpectContinue(t *testing.T) {
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	})
	gw := front(t, Options{}, backend(t, BackendOptions{Targets: []string{up.URL}}))
	tr := &http.Transport{ExpectContinueTimeout: 10 * time.Second}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest("PUT", gw.URL+"/", strings.NewReader("payload"))
	req.Header.Set("Expect", "100-continue")
	res, err := (&http.Client{Transport: tr}).Do(req)
	require.NoError(t, err)
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	assert.Equal(t, "payload", string(b))
}

func TestProxyLocationRewrite(t *testing.T) {
	var upURL string
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/svc/self":
			w.Header().Set("Location", upURL+"/svc/next?a=1")
		case "/svc/other":
			w.Header().Set("Location", "https://elsewhere.example/x")
		}
		w.WriteHeader(302)
	})
	upURL = up.URL
	g := New(Options{})
	b := backend(t, BackendOptions{Targets: []string{up.URL + "/svc"}})
	g.Route("/shop/").StripPrefix("/shop").To(b)
	require.NoError(t, g.Err())
	gw := httptest.NewServer(g)
	defer gw.Close()
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	res, err := client.Get(gw.URL + "/shop/self")
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, gw.URL+"/shop/next?a=1", res.Header.Get("Location"))

	res, err = client.Get(gw.URL + "/shop/other")
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, "https://elsewhere.example/x", res.Header.Get("Location"))
}

func TestProxyUpstreamErrors(t *testing.T) {
	refused := closedAddr(t)
	slow := make(chan struct{})
	t.Cleanup(func() { close(slow) })
	slowUp := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-slow:
		case <-r.Context().Done():
		}
	})
	tests := []struct {
		name    string
		opts    BackendOptions
		timeout time.Duration
		status  int
	}{
		{"refused is 502", BackendOptions{Targets: []string{refused}}, 0, 502},
		{"route deadline is 504", BackendOptions{Targets: []string{slowUp.URL}}, 50 * time.Millisecond, 504},
		{"header timeout is 504", BackendOptions{Targets: []string{slowUp.URL}, ResponseHeaderTimeout: 50 * time.Millisecond}, 0, 504},
		{"try timeout is 504", BackendOptions{Targets: []string{slowUp.URL}, TryTimeout: 50 * time.Millisecond}, 0, 504},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := New(Options{})
			r := g.Route("/")
			if tc.timeout > 0 {
				r.Timeout(tc.timeout)
			}
			r.To(backend(t, tc.opts))
			gw := httptest.NewServer(g)
			defer gw.Close()
			res, err := http.Get(gw.URL + "/x")
			require.NoError(t, err)
			defer res.Body.Close()
			assert.Equal(t, tc.status, res.StatusCode)
			raw, _ := io.ReadAll(res.Body)
			var p Problem
			require.NoError(t, json.Unmarshal(raw, &p))
			assert.Equal(t, tc.status, p.Status)
			assert.NotContains(t, string(raw), "127.0.0.1", "no upstream address in the body")
		})
	}
}

// closedAddr returns the URL of a loopback port nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}

func TestProxyClientCancelReachesBackend(t *testing.T) {
	arrived := make(chan struct{})
	canceled := make(chan struct{})
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		<-r.Context().Done()
		close(canceled)
	})
	b := backend(t, BackendOptions{Targets: []string{up.URL}})
	infoc := make(chan *RequestInfo, 1)
	g := New(Options{})
	g.Use(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			next.ServeHTTP(w, r)
			infoc <- Info(r.Context())
		})
	})
	g.Route("/").To(b)
	gw := httptest.NewServer(g)
	defer gw.Close()

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", gw.URL+"/", nil)
	errc := make(chan error, 1)
	go func() {
		res, err := http.DefaultClient.Do(req)
		if err == nil {
			res.Body.Close()
		}
		errc <- err
	}()
	<-arrived
	cancel()
	<-canceled // the upstream saw the cancellation
	assert.Error(t, <-errc)
	info := <-infoc
	assert.True(t, info.ClientCanceled)
	assert.Equal(t, 0, b.Targets()[0].InFlight())
}

func TestProxyRetries(t *testing.T) {
	refused := closedAddr(t)
	var hits atomic.Int32
	good := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	})
	var flakyHits atomic.Int32
	flaky := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		flakyHits.Add(1)
		w.WriteHeader(503)
	})
	tests := []struct {
		name        string
		opts        BackendOptions
		method      string
		body        string
		header      string
		wantStatus  int
		wantAttempt int
	}{
		{"GET retried after refusal", BackendOptions{Targets: []string{refused, good.URL}, Retries: 1}, "GET", "", "", 200, 2},
		{"no retries configured", BackendOptions{Targets: []string{refused, good.URL}}, "GET", "", "", 502, 1},
		{"POST retried after a failed dial", BackendOptions{Targets: []string{refused, good.URL}, Retries: 1}, "POST", "abc", "", 200, 2},
		{"503 not retried by default", BackendOptions{Targets: []string{flaky.URL, good.URL}, Retries: 1}, "GET", "", "", 503, 1},
		{"503 retried with RetryOnStatus", BackendOptions{Targets: []string{flaky.URL, good.URL}, Retries: 1, RetryOnStatus: true}, "GET", "", "", 200, 2},
		{"POST 503 not retried", BackendOptions{Targets: []string{flaky.URL, good.URL}, Retries: 1, RetryOnStatus: true}, "POST", "abc", "", 503, 1},
		{"POST with Idempotency-Key retried", BackendOptions{Targets: []string{flaky.URL, good.URL}, Retries: 1, RetryOnStatus: true, RetryBufferBytes: 1024}, "POST", "abc", "k1", 200, 2},
		{"buffered POST retried when allowed", BackendOptions{Targets: []string{flaky.URL, good.URL}, Retries: 1, RetryOnStatus: true, RetryBufferBytes: 1024, RetryNonIdempotent: true}, "POST", "abc", "", 200, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.RetryBackoff = -1
			tc.opts.Balancer = firstFirst{}
			b := backend(t, tc.opts)
			var info *RequestInfo
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				info = &RequestInfo{}
				b.ServeHTTP(w, r.WithContext(NewContext(r.Context(), info)))
			})
			var body io.Reader
			if tc.body != "" {
				body = strings.NewReader(tc.body)
			}
			req := httptest.NewRequest(tc.method, "/", body)
			if tc.header != "" {
				req.Header.Set("Idempotency-Key", tc.header)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			assert.Equal(t, tc.wantStatus, rec.Code)
			assert.Equal(t, tc.wantAttempt, info.Attempts)
			if tc.wantStatus == 200 {
				assert.Equal(t, tc.body, rec.Body.String(), "the retried body arrived whole")
			}
		})
	}
}

// firstFirst picks the first target not yet tried, so retry tests are exact.
type firstFirst struct{}

func (firstFirst) Pick(r *http.Request, ts []*Target) *Target { return ts[0] }

func TestRetryNeverReplaysAConsumedBody(t *testing.T) {
	// The first target reads the body, then drops the connection: the body
	// is gone, so the POST must not be retried (it was not buffered).
	var secondHits atomic.Int32
	second := upstream(t, func(w http.ResponseWriter, r *http.Request) { secondHits.Add(1) })
	first := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body)
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	})
	b := backend(t, BackendOptions{Targets: []string{first.URL, second.URL}, Retries: 2, RetryBackoff: -1, Balancer: firstFirst{}})
	rec := httptest.NewRecorder()
	b.ServeHTTP(rec, httptest.NewRequest("POST", "/", strings.NewReader("once")))
	assert.Equal(t, 502, rec.Code)
	assert.Equal(t, int32(0), secondHits.Load())
}

func TestRetryBudget(t *testing.T) {
	b := backend(t, BackendOptions{Targets: []string{"http://127.0.0.1:1"}, RetryBudget: 0.2, MinRetryConcurrency: 2})
	b.active.Store(20)
	var held [10]bool
	taken := 0
	for i := range held {
		if b.takeRetry(&held[i]) {
			taken++
		}
	}
	assert.Equal(t, 4, taken, "20%% of 20 active requests")
	b.active.Store(1)
	b.retriesInUse.Store(1)
	var h bool
	assert.True(t, b.takeRetry(&h), "the minimum concurrency is always allowed")
	assert.False(t, b.takeRetry(new(bool)))
}

func TestRetryBudgetUnderLoad(t *testing.T) {
	// 40 concurrent requests hit a refusing first target; with a budget of
	// 10% and a minimum of 1, far fewer than 40 may retry at once.
	refused := closedAddr(t)
	var inRetry, maxInRetry atomic.Int32
	release := make(chan struct{})
	good := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		n := inRetry.Add(1)
		for {
			m := maxInRetry.Load()
			if n <= m || maxInRetry.CompareAndSwap(m, n) {
				break
			}
		}
		<-release
		inRetry.Add(-1)
	})
	b := backend(t, BackendOptions{Targets: []string{refused, good.URL}, Retries: 1, RetryBackoff: -1,
		RetryBudget: 0.1, MinRetryConcurrency: 1, Balancer: firstFirst{},
		Outlier: OutlierDetection{ConsecutiveFailures: -1}}) // every first attempt hits the refusing target
	var wg sync.WaitGroup
	codes := make(chan int, 40)
	for range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec := httptest.NewRecorder()
			b.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
			codes <- rec.Code
		}()
	}
	// Wait until every request has either been refused or reached a retry.
	deadline := time.Now().Add(10 * time.Second)
	for len(codes)+int(inRetry.Load()) < 40 {
		if time.Now().After(deadline) {
			t.Fatal("requests neither failed nor retried")
		}
		runtime.Gosched()
	}
	close(release)
	wg.Wait()
	close(codes)
	var ok, failed int
	for c := range codes {
		if c == 200 {
			ok++
		} else {
			failed++
		}
	}
	assert.LessOrEqual(t, int(maxInRetry.Load()), 4, "retries in flight stay within the budget")
	assert.Greater(t, failed, 0, "requests over the budget fail instead of retrying")
	assert.Greater(t, ok, 0)
}

func TestBodyLimit(t *testing.T) {
	var hits atomic.Int32
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.Copy(io.Discard, r.Body)
	})
	g := New(Options{})
	g.Route("POST /up").MaxBodyBytes(10).To(backend(t, BackendOptions{Targets: []string{up.URL}}))
	gw := httptest.NewServer(g)
	defer gw.Close()

	res, err := http.Post(gw.URL+"/up", "text/plain", strings.NewReader(strings.Repeat("x", 11)))
	require.NoError(t, err)
	assert.Equal(t, 413, res.StatusCode)
	assert.Equal(t, 413, problemOf(t, res).Status)
	res.Body.Close()
	assert.Equal(t, int32(0), hits.Load(), "a declared oversize body is refused before forwarding")

	// Chunked, no length: refused once the limit is crossed.
	res, err = http.Post(gw.URL+"/up", "text/plain", io.MultiReader(strings.NewReader(strings.Repeat("y", 64<<10))))
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, 413, res.StatusCode)

	res, err = http.Post(gw.URL+"/up", "text/plain", strings.NewReader("small"))
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, 200, res.StatusCode)
}

func TestUpstreamBodyErrorAbortsResponse(t *testing.T) {
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		w.Write([]byte("partial"))
		w.(http.Flusher).Flush()
		conn, _, _ := http.NewResponseController(w).Hijack()
		conn.Close()
	})
	gw := front(t, Options{}, backend(t, BackendOptions{Targets: []string{up.URL}}))
	res, err := http.Get(gw.URL + "/")
	if err == nil {
		_, err = io.ReadAll(res.Body)
		res.Body.Close()
		assert.True(t, errors.Is(err, io.ErrUnexpectedEOF), "the client sees a truncated body, got %v", err)
	}
	assert.Error(t, err, "the client never sees a complete response")
}

func TestNewBackendErrors(t *testing.T) {
	tests := []struct {
		name string
		opts BackendOptions
	}{
		{"negative retries", BackendOptions{Targets: []string{"http://a"}, Retries: -1}},
		{"budget over 1", BackendOptions{Targets: []string{"http://a"}, RetryBudget: 2}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewBackend("orders", tc.opts)
			require.Error(t, err)
			assert.Contains(t, err.Error(), `"orders"`)
		})
	}
	assert.Panics(t, func() { MustNewBackend("", BackendOptions{}) })
}

func TestPassiveEjectionThroughTheProxy(t *testing.T) {
	refused := closedAddr(t)
	var goodHits atomic.Int32
	good := upstream(t, func(w http.ResponseWriter, r *http.Request) { goodHits.Add(1) })
	b := backend(t, BackendOptions{
		Targets: []string{refused, good.URL},
		Outlier: OutlierDetection{ConsecutiveFailures: 2, BaseEjectionTime: time.Minute},
	})
	now := time.Now()
	var mu sync.Mutex
	b.pool.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	codes := map[int]int{}
	for range 10 {
		rec := httptest.NewRecorder()
		b.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
		codes[rec.Code]++
	}
	assert.Equal(t, 2, codes[502], "the dead target fails twice, then is ejected")
	assert.Equal(t, 8, codes[200])
	assert.False(t, b.Targets()[0].Healthy())

	mu.Lock()
	now = now.Add(time.Minute)
	mu.Unlock()
	assert.True(t, b.Targets()[0].Healthy(), "back after the ejection time")
}

func TestBalancerThroughTheProxy(t *testing.T) {
	hits := make([]atomic.Int32, 3)
	var targets []string
	for i := range hits {
		up := upstream(t, func(w http.ResponseWriter, r *http.Request) { hits[i].Add(1) })
		targets = append(targets, up.URL)
	}
	b := backend(t, BackendOptions{Targets: targets, Weights: []int{3, 1, 1}, Balancer: WeightedRoundRobin()})
	for range 50 {
		rec := httptest.NewRecorder()
		b.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
		require.Equal(t, 200, rec.Code)
	}
	assert.Equal(t, []int32{30, 10, 10}, []int32{hits[0].Load(), hits[1].Load(), hits[2].Load()})
}

// refuseGuard refuses the targets in refuse and records every outcome.
type refuseGuard struct {
	mu       sync.Mutex
	refuse   map[string]bool
	outcomes []int
}

type openErr struct{}

func (openErr) Error() string             { return "open" }
func (openErr) RetryAfter() time.Duration { return 1500 * time.Millisecond }

func (g *refuseGuard) Allow(r *http.Request, t *Target) (func(int, error), error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.refuse[t.String()] {
		return nil, openErr{}
	}
	return func(status int, err error) {
		g.mu.Lock()
		defer g.mu.Unlock()
		g.outcomes = append(g.outcomes, status)
	}, nil
}

func TestGuardSkipsRefusedTargets(t *testing.T) {
	var hits [2]atomic.Int32
	a := upstream(t, func(w http.ResponseWriter, r *http.Request) { hits[0].Add(1) })
	bUp := upstream(t, func(w http.ResponseWriter, r *http.Request) { hits[1].Add(1); w.WriteHeader(201) })
	g := &refuseGuard{refuse: map[string]bool{a.URL: true}}
	b := backend(t, BackendOptions{Targets: []string{a.URL, bUp.URL}, Guard: g})
	for range 4 {
		rec := httptest.NewRecorder()
		b.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
		assert.Equal(t, 201, rec.Code)
	}
	assert.Equal(t, int32(0), hits[0].Load(), "a refused target is never called")
	assert.Equal(t, []int{201, 201, 201, 201}, g.outcomes, "one outcome per attempt")

	g.refuse[bUp.URL] = true
	rec := httptest.NewRecorder()
	b.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	assert.Equal(t, 503, rec.Code)
	assert.Equal(t, "2", rec.Header().Get("Retry-After"))
	assert.Equal(t, ProblemContentType, rec.Header().Get("Content-Type"))
}

// A client's malformed Forwarded element hides only what is to its left:
// the element a trusted proxy appended after it on the same line still
// names the client (and its proto), so no client can pass for the proxy.
func TestForwardedMalformedClientElement(t *testing.T) {
	tr := Trust{Proxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, Header: Forwarded}
	for _, prefix := range []string{
		`for="[`,                  // unterminated quote
		`for=1.1.1.1;x="a\"b"`,    // quoted-pair
		`for=1.1.1.1 x`,           // stray token
		`garbage`,                 // no pair at all
		`for="203.0.113.7, evil"`, // a quoted comma
	} {
		r := httptest.NewRequest("GET", "http://x/", nil)
		r.RemoteAddr = "10.0.0.1:5555"
		r.Header["Forwarded"] = []string{prefix + `, for=203.0.113.9;proto=https`}
		var info RequestInfo
		tr.Identify(&info, r)
		if info.ClientIP.String() != "203.0.113.9" || info.Scheme != "https" {
			t.Errorf("%q before the proxy's element: client %s, scheme %q; want 203.0.113.9, https", prefix, info.ClientIP, info.Scheme)
		}
	}
	// Quoted commas still belong to their element.
	r := httptest.NewRequest("GET", "http://x/", nil)
	r.RemoteAddr = "10.0.0.1:5555"
	r.Header["Forwarded"] = []string{`for=203.0.113.9;host="a,b.example";proto=https`}
	var info RequestInfo
	tr.Identify(&info, r)
	if info.ClientIP.String() != "203.0.113.9" || info.Scheme != "https" {
		t.Errorf("quoted comma: client %s scheme %q", info.ClientIP, info.Scheme)
	}
}
