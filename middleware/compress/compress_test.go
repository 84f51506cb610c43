package compress_test

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"go.uber.org/goleak"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/cache"
	"github.com/pylon-gateway/pylon/middleware/compress"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var big = strings.Repeat(`{"sku":"p1","name":"A product with a long name","price":1999},`, 100)

func mw(t testing.TB, o compress.Options) func(http.Handler) http.Handler {
	t.Helper()
	m, err := compress.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func serve(h http.Handler, hdr ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest("GET", "/", nil)
	for _, f := range hdr {
		k, v, _ := strings.Cut(f, ":")
		r.Header.Add(k, strings.TrimSpace(v))
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func decode(t *testing.T, coding string, b []byte) string {
	t.Helper()
	var r io.Reader
	switch coding {
	case "gzip":
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		r = zr
	case "br":
		r = brotli.NewReader(bytes.NewReader(b))
	case "zstd":
		zr, err := zstd.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		defer zr.Close()
		r = zr
	case "":
		return string(b)
	default:
		t.Fatalf("unknown coding %q", coding)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("%s: %v", coding, err)
	}
	return string(out)
}

func jsonHandler(body string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.Header().Set("ETag", `"v1"`)
		w.Header().Set("Accept-Ranges", "bytes")
		io.WriteString(w, body)
	})
}

// RFC 9110 §12.5.3: qvalues, "*", identity, x-gzip and the server's order.
func TestNegotiate(t *testing.T) {
	ours := []string{"zstd", "br", "gzip"}
	for _, tc := range []struct {
		accept []string
		want   string
	}{
		{nil, ""},
		{[]string{""}, ""},
		{[]string{"gzip"}, "gzip"},
		{[]string{"gzip, deflate, br, zstd"}, "zstd"},
		{[]string{"gzip, br"}, "br"},
		{[]string{"br;q=0.5, gzip;q=0.8"}, "gzip"},
		{[]string{"GZIP"}, "gzip"},
		{[]string{"x-gzip"}, "gzip"},
		{[]string{"*"}, "zstd"},
		{[]string{"*;q=0.5, zstd;q=0"}, "br"},
		{[]string{"gzip;q=0"}, ""},
		{[]string{"identity"}, ""},
		{[]string{"gzip;q=0.5, identity;q=1"}, ""},
		{[]string{"gzip;q=0.5"}, "gzip"},
		{[]string{"gzip;q=1.0, br;q=1.000"}, "br"},
		{[]string{"gzip;q=2"}, ""},
		{[]string{"gzip;q=0.1234"}, ""},
		{[]string{"gzip;q=abc"}, ""},
		{[]string{"deflate", "gzip"}, "gzip"},
		{[]string{"compress, deflate"}, ""},
		{[]string{",,;,"}, ""},
	} {
		if got := compress.Negotiate(tc.accept, ours); got != tc.want {
			t.Errorf("Accept-Encoding %q: %q, want %q", tc.accept, got, tc.want)
		}
	}
}

func TestCompressesEachCoding(t *testing.T) {
	h := mw(t, compress.Options{})(jsonHandler(big))
	for _, coding := range []string{"gzip", "br", "zstd"} {
		t.Run(coding, func(t *testing.T) {
			w := serve(h, "Accept-Encoding: "+coding)
			if got := w.Header().Get("Content-Encoding"); got != coding {
				t.Fatalf("Content-Encoding %q, want %q", got, coding)
			}
			if w.Body.Len() >= len(big) {
				t.Errorf("body %d bytes, not smaller than %d", w.Body.Len(), len(big))
			}
			if got := decode(t, coding, w.Body.Bytes()); got != big {
				t.Fatalf("decoded body differs")
			}
			h := w.Header()
			if h.Get("Content-Length") != "" || h.Get("Accept-Ranges") != "" {
				t.Errorf("Content-Length %q, Accept-Ranges %q kept on an encoded body", h.Get("Content-Length"), h.Get("Accept-Ranges"))
			}
			if h.Get("Etag") != `W/"v1"` {
				t.Errorf("ETag %q, want the weak W/\"v1\" (RFC 9110 §8.8.3: another representation)", h.Get("Etag"))
			}
			if h.Get("Vary") != "Accept-Encoding" {
				t.Errorf("Vary %q", h.Get("Vary"))
			}
		})
	}
}

func TestLeavesAlone(t *testing.T) {
	m := mw(t, compress.Options{})
	for _, tc := range []struct {
		name    string
		h       http.Handler
		hdr     []string
		vary    bool
		wantLen bool
	}{
		// Not compressed, and Vary all the same: a cache after the
		// middleware must not give this answer to a client that asks for
		// gzip, nor a gzip one to this client.
		{"no Accept-Encoding", jsonHandler(big), nil, true, false},
		{"identity only", jsonHandler(big), []string{"Accept-Encoding: identity"}, true, false},
		{"small body", jsonHandler(`{"a":1}`), []string{"Accept-Encoding: gzip"}, true, true},
		{"image", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "image/png")
			io.WriteString(w, big)
		}), []string{"Accept-Encoding: gzip"}, false, false},
		{"already encoded", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Encoding", "br")
			io.WriteString(w, big)
		}), []string{"Accept-Encoding: gzip"}, false, false},
		{"no-transform (RFC 9110 §7.7)", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Cache-Control", "public, no-transform")
			io.WriteString(w, big)
		}), []string{"Accept-Encoding: gzip"}, false, false},
		{"range request answered 200", jsonHandler(big), []string{"Accept-Encoding: gzip", "Range: bytes=0-10"}, true, false},
		{"no Accept-Encoding, small", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Length", "7")
			io.WriteString(w, `{"a":1}`)
		}), nil, false, true},
		{"no Accept-Encoding, image", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "image/png")
			io.WriteString(w, big)
		}), nil, false, false},
		{"no Accept-Encoding, sniffed JSON-less text", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, big) // sniffed as text/plain, a compressible type
		}), nil, true, false},
		{"upgrade request", jsonHandler(big), []string{"Accept-Encoding: gzip", "Connection: Upgrade", "Upgrade: websocket"}, false, false},
		{"206", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.WriteHeader(http.StatusPartialContent)
			io.WriteString(w, big)
		}), []string{"Accept-Encoding: gzip"}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := serve(m(tc.h), tc.hdr...)
			body := w.Body.String()
			if w.Header().Get("Content-Encoding") == "gzip" {
				t.Fatalf("compressed")
			}
			if !strings.HasPrefix(body, "{") && !strings.HasPrefix(body, `{"sku"`) && body != big {
				t.Fatalf("body changed: %.40q", body)
			}
			if got := w.Header().Get("Vary") == "Accept-Encoding"; got != tc.vary {
				t.Errorf("Vary: Accept-Encoding %v, want %v", got, tc.vary)
			}
			if tc.wantLen && w.Header().Get("Content-Length") == "" {
				t.Errorf("an uncompressed body held back should get its Content-Length")
			}
		})
	}
	// HEAD is answered as the handler answers it.
	r := httptest.NewRequest("HEAD", "/", nil)
	r.Header.Set("Accept-Encoding", "gzip")
	w := httptest.NewRecorder()
	m(jsonHandler(big)).ServeHTTP(w, r)
	if w.Header().Get("Content-Encoding") != "" {
		t.Errorf("HEAD encoded")
	}
	if w.Header().Get("Vary") != "Accept-Encoding" {
		t.Errorf("HEAD: Vary %q, want the GET's Accept-Encoding", w.Header().Get("Vary"))
	}
}

func TestContentTypePatternsAndSniffing(t *testing.T) {
	m := mw(t, compress.Options{ContentTypes: []string{"application/*+json", "text/*"}, ExcludeContentTypes: []string{"text/csv"}})
	for ct, want := range map[string]bool{
		"application/problem+json": true, "application/json": false, "text/html; charset=utf-8": true,
		"text/csv": false, "TEXT/PLAIN": true, "bogus": false,
	} {
		w := serve(m(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", ct)
			io.WriteString(w, big)
		})), "Accept-Encoding: gzip")
		if got := w.Header().Get("Content-Encoding") == "gzip"; got != want {
			t.Errorf("%s: compressed %v, want %v", ct, got, want)
		}
	}
	// No Content-Type: sniffed from the identity bytes, as net/http would.
	w := serve(m(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "<!DOCTYPE html><html>"+big)
	})), "Accept-Encoding: gzip")
	if !strings.HasPrefix(w.Header().Get("Content-Type"), "text/html") || w.Header().Get("Content-Encoding") != "gzip" {
		t.Errorf("sniffed %q, encoding %q", w.Header().Get("Content-Type"), w.Header().Get("Content-Encoding"))
	}
	for _, bad := range []compress.Options{
		{ContentTypes: []string{"json"}}, {ContentTypes: []string{"text/x*y"}},
		{Encodings: []string{"deflate"}}, {Encodings: []string{"gzip", "gzip"}}, {Encodings: []string{}},
		{BrotliLevel: 12}, {GzipLevel: 42},
	} {
		if _, err := compress.New(bad); err == nil {
			t.Errorf("New(%+v) accepted", bad)
		}
	}
}

// Server-sent events keep arriving one by one: each Flush flushes the
// encoder, over a real connection.
func TestStreamingFlushes(t *testing.T) {
	events := make(chan string)
	done := make(chan struct{})
	srv := httptest.NewServer(mw(t, compress.Options{})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		http.NewResponseController(w).Flush() // the header goes out before the first event
		for {
			select {
			case e, ok := <-events:
				if !ok {
					return
				}
				io.WriteString(w, "data: "+e+"\n\n")
				http.NewResponseController(w).Flush()
			case <-done:
				return
			}
		}
	})))
	defer srv.Close()
	defer close(done)
	req, _ := http.NewRequest("GET", srv.URL, nil)
	req.Header.Set("Accept-Encoding", "gzip")
	res, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("Content-Encoding %q", res.Header.Get("Content-Encoding"))
	}
	events <- "one"
	zr, err := gzip.NewReader(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(zr)
	for _, want := range []string{"one", "two", "three"} {
		if want != "one" {
			events <- want
		}
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if line != "data: "+want+"\n" {
			t.Fatalf("event %q, want %q", line, want)
		}
		if _, err := br.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
	}
	close(events)
}

// 103 Early Hints pass through before the compressed final response.
func TestInformationalPassesThrough(t *testing.T) {
	srv := httptest.NewServer(mw(t, compress.Options{})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</app.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, big)
	})))
	defer srv.Close()
	var hints int
	req, _ := http.NewRequest("GET", srv.URL, nil)
	req.Header.Set("Accept-Encoding", "br")
	req = req.WithContext(withGot1xx(req, func(code int) { hints++ }))
	res, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if hints != 1 || res.Header.Get("Content-Encoding") != "br" || decode(t, "br", body) != big {
		t.Fatalf("hints %d, encoding %q", hints, res.Header.Get("Content-Encoding"))
	}
}

// A handler that writes nothing, or only a status, is answered as it would
// be without the middleware.
func TestEmptyResponses(t *testing.T) {
	m := mw(t, compress.Options{})
	w := serve(m(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})), "Accept-Encoding: gzip")
	if w.Code != 200 || w.Body.Len() != 0 || w.Header().Get("Content-Encoding") != "" {
		t.Errorf("empty: %d %q", w.Code, w.Header().Get("Content-Encoding"))
	}
	w = serve(m(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})), "Accept-Encoding: gzip")
	if w.Code != 204 || w.Header().Get("Content-Encoding") != "" {
		t.Errorf("204: %d %q", w.Code, w.Header().Get("Content-Encoding"))
	}
	w = serve(m(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, big)
	})), "Accept-Encoding: gzip")
	if w.Code != 404 || decode(t, w.Header().Get("Content-Encoding"), w.Body.Bytes()) != big {
		t.Errorf("404 body lost")
	}
}

func withGot1xx(r *http.Request, f func(code int)) context.Context {
	return httptrace.WithClientTrace(r.Context(), &httptrace.ClientTrace{
		Got1xxResponse: func(code int, _ textproto.MIMEHeader) error { f(code); return nil },
	})
}

// A cache before the middleware stores what it sends: one variant per
// encoding, the identity one included, so that a client without
// Accept-Encoding never takes the place of the compressed answers (nor is
// given one).
func TestCacheKeepsTheIdentityVariantApart(t *testing.T) {
	var calls atomic.Int32
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "public, max-age=60")
		io.WriteString(w, big)
	}))
	t.Cleanup(up.Close)
	b := pylon.MustNewBackend("up", pylon.BackendOptions{Targets: []string{up.URL}})
	t.Cleanup(func() { b.Close() })
	c := cache.MustNew(cache.Options{})
	t.Cleanup(func() { c.Close() })
	gw := pylon.New(pylon.Options{})
	gw.Route("GET /x").Use(c.Middleware, mw(t, compress.Options{})).To(b)
	if err := gw.Err(); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw)
	t.Cleanup(srv.Close)
	tr := &http.Transport{DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	for i, ae := range []string{"gzip", "", "gzip", "", "br", "gzip"} {
		req, _ := http.NewRequest("GET", srv.URL+"/x", nil)
		if ae != "" {
			req.Header.Set("Accept-Encoding", ae)
		}
		res, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if got := res.Header.Get("Content-Encoding"); got != ae {
			t.Fatalf("request %d (Accept-Encoding %q): Content-Encoding %q, Cache-Status %q", i, ae, got, res.Header.Get("Cache-Status"))
		}
		if decode(t, ae, body) != big {
			t.Fatalf("request %d: body changed", i)
		}
	}
	if n := calls.Load(); n != 3 {
		t.Errorf("%d upstream calls, want 3 (gzip, identity, br: one fill per variant)", n)
	}
}

func TestMustNew(t *testing.T) {
	h := compress.MustNew(compress.Options{})(jsonHandler(big))
	if w := serve(h, "Accept-Encoding: gzip"); w.Header().Get("Content-Encoding") != "gzip" {
		t.Errorf("Content-Encoding %q, want gzip", w.Header().Get("Content-Encoding"))
	}
	defer func() {
		if recover() == nil {
			t.Error("MustNew accepted an invalid setting")
		}
	}()
	compress.MustNew(compress.Options{ContentTypes: []string{"not a type"}})
}
