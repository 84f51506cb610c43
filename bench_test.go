package pylon

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
)

// discardWriter is a minimal ResponseWriter, so the benchmarks measure the
// proxy, not a recorder.
type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardWriter) WriteHeader(int)             {}

func benchUpstream(b *testing.B) *httptest.Server {
	body := []byte(strings.Repeat("x", 1024))
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	}))
	b.Cleanup(s.Close)
	return s
}

func benchProxy(b *testing.B, h http.Handler) {
	req := httptest.NewRequest("GET", "http://gw.example/orders/42?x=1", nil)
	req.RemoteAddr = "192.0.2.1:1234"
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "bench")
	w := &discardWriter{h: make(http.Header)}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		clear(w.h)
		h.ServeHTTP(w, req)
	}
}

// BenchmarkProxy compares, in one run, a bare httputil.ReverseProxy (on the
// standard transport with Pylon's settings) with Pylon's Backend alone and
// behind a Gateway route (on Pylon's default transport), with the same
// loopback upstream, a net/http server whose own allocations are counted.
func BenchmarkProxy(b *testing.B) {
	up := benchUpstream(b)
	target, _ := url.Parse(up.URL)
	opts := BackendOptions{Targets: []string{up.URL}}
	b.Run("httputil", func(b *testing.B) {
		tr := stdTransport(opts)
		defer tr.CloseIdleConnections()
		rp := &httputil.ReverseProxy{Transport: tr, Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.SetXForwarded()
		}}
		benchProxy(b, rp)
	})
	b.Run("backend", func(b *testing.B) {
		be := MustNewBackend("bench", opts)
		defer be.Close()
		benchProxy(b, be)
	})
	b.Run("gateway", func(b *testing.B) {
		be := MustNewBackend("bench", opts)
		defer be.Close()
		g := New(Options{})
		g.Route("GET /orders/{id}").To(be)
		benchProxy(b, g)
	})
}

// rawUpstream answers every request with one canned 1 KiB response, without
// net/http and without allocating, so that a benchmark's allocations are the
// proxy's own.
func rawUpstream(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	res := []byte("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1024\r\n\r\n" + strings.Repeat("x", 1024))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadSlice('\n')
					if err != nil {
						return
					}
					if len(line) <= 2 { // the blank line that ends a request's head
						if _, err := c.Write(res); err != nil {
							return
						}
					}
				}
			}()
		}
	}()
	b.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return "http://" + ln.Addr().String()
}

// BenchmarkProxyRawUpstream is BenchmarkProxy against an upstream that
// allocates nothing, so that allocs/op are the proxy's alone; "backend-std"
// is the Backend on the standard transport, as it was before internal/h1.
func BenchmarkProxyRawUpstream(b *testing.B) {
	up := rawUpstream(b)
	target, _ := url.Parse(up)
	opts := BackendOptions{Targets: []string{up}}
	b.Run("httputil", func(b *testing.B) {
		tr := stdTransport(opts)
		defer tr.CloseIdleConnections()
		rp := &httputil.ReverseProxy{Transport: tr, Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.SetXForwarded()
		}}
		benchProxy(b, rp)
	})
	b.Run("backend-std", func(b *testing.B) {
		tr := stdTransport(opts)
		defer tr.CloseIdleConnections()
		be := MustNewBackend("bench", BackendOptions{Targets: opts.Targets, Transport: tr})
		defer be.Close()
		benchProxy(b, be)
	})
	b.Run("backend", func(b *testing.B) {
		be := MustNewBackend("bench", opts)
		defer be.Close()
		benchProxy(b, be)
	})
	b.Run("gateway", func(b *testing.B) {
		be := MustNewBackend("bench", opts)
		defer be.Close()
		g := New(Options{})
		g.Route("GET /orders/{id}").To(be)
		benchProxy(b, g)
	})
}

// BenchmarkRouting measures matching alone, on a table of 50 routes.
func BenchmarkRouting(b *testing.B) {
	g := New(Options{})
	ok := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	for i := range 50 {
		g.Route("GET /svc" + string(rune('a'+i%26)) + string(rune('a'+i/26)) + "/{id}").Handler(ok)
	}
	if err := g.Err(); err != nil {
		b.Fatal(err)
	}
	req := httptest.NewRequest("GET", "/svcxa/42", nil)
	w := &discardWriter{h: make(http.Header)}
	b.ReportAllocs()
	for b.Loop() {
		g.ServeHTTP(w, req)
	}
}

// BenchmarkServer compares the two server loops RunWithOptions can run,
// net/http's and the lean one (RunOptions.LeanHTTP1), serving a handler
// that writes a 1 KiB body to a keep-alive client that allocates nothing,
// so that allocs/op are the server's alone.
func BenchmarkServer(b *testing.B) {
	body := []byte(strings.Repeat("x", 1024))
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	})
	for _, lean := range []bool{false, true} {
		name := "net-http"
		if lean {
			name = "lean"
		}
		b.Run(name, func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- RunWithOptions(ctx, NewServer("", h), RunOptions{Listener: ln, LeanHTTP1: lean}) }()
			defer func() {
				cancel()
				if err := <-done; err != nil {
					b.Error(err)
				}
			}()
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			req := []byte("GET /x HTTP/1.1\r\nHost: bench\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
			// The response's length is the same every time (Date has a
			// fixed width): learn it from the first one.
			if _, err := c.Write(req); err != nil {
				b.Fatal(err)
			}
			br := bufio.NewReader(c)
			res, err := http.ReadResponse(br, nil)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.Copy(io.Discard, res.Body); err != nil || res.ContentLength != 1024 {
				b.Fatal(err, res.ContentLength)
			}
			var head strings.Builder
			for k, vv := range res.Header {
				for _, v := range vv {
					head.WriteString(k + ": " + v + "\r\n")
				}
			}
			size := len("HTTP/1.1 200 OK\r\n") + head.Len() + 2 + 1024
			buf := make([]byte, size)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := c.Write(req); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
