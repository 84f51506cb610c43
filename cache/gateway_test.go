package cache_test

import (
	"bufio"
	"crypto/sha256"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/cache"
)

// gateway serves upstream through a Gateway whose route uses the cache,
// and records each request's RequestInfo.Cache.
func gateway(t *testing.T, c *cache.Cache, upstream http.Handler) (url string, last *atomic.Value) {
	t.Helper()
	up := httptest.NewServer(upstream)
	t.Cleanup(up.Close)
	b := pylon.MustNewBackend("up", pylon.BackendOptions{Targets: []string{up.URL}})
	t.Cleanup(func() { _ = b.Close() })
	last = &atomic.Value{}
	record := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			next.ServeHTTP(w, r)
			last.Store(pylon.Info(r.Context()).Cache)
		})
	}
	gw := pylon.New(pylon.Options{})
	gw.Use(record)
	gw.Route("/").Use(c.Middleware).To(b)
	if err := gw.Err(); err != nil {
		t.Fatal(err)
	}
	front := httptest.NewServer(gw)
	t.Cleanup(front.Close)
	return front.URL, last
}

func TestGatewayHitAndInfo(t *testing.T) {
	c := cache.MustNew(cache.Options{})
	defer c.Close()
	var calls atomic.Int64
	url, last := gateway(t, c, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Cache-Control", "max-age=60")
		io.WriteString(w, "hello")
	}))
	for i, want := range []string{cache.StatusMiss, cache.StatusHit} {
		res, err := http.Get(url + "/x")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if string(body) != "hello" || last.Load() != want {
			t.Fatalf("request %d: %q, info %q, want %q", i, body, last.Load(), want)
		}
		if i == 1 && (res.Header.Get("Age") == "" || !strings.HasPrefix(res.Header.Get("Cache-Status"), "pylon; hit")) {
			t.Fatalf("hit headers: Age %q Cache-Status %q", res.Header.Get("Age"), res.Header.Get("Cache-Status"))
		}
	}
	if calls.Load() != 1 {
		t.Fatalf("upstream calls = %d", calls.Load())
	}
}

func TestGatewayStreamsFlushes(t *testing.T) {
	// An event stream of unknown length passes through a cached route
	// chunk by chunk: the client reads the first event while the upstream
	// is still holding the response open.
	c := cache.MustNew(cache.Options{DefaultTTL: 60e9})
	defer c.Close()
	release := make(chan struct{})
	url, _ := gateway(t, c, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: one\n\n")
		http.NewResponseController(w).Flush()
		<-release
		io.WriteString(w, "data: two\n\n")
	}))
	res, err := http.Get(url + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	br := bufio.NewReader(res.Body)
	line, err := br.ReadString('\n')
	if err != nil || line != "data: one\n" {
		t.Fatalf("first event: %q, %v", line, err)
	}
	close(release)
	rest, _ := io.ReadAll(br)
	if string(rest) != "\ndata: two\n\n" {
		t.Fatalf("rest = %q", rest)
	}
}

func TestGatewayLargeResponse(t *testing.T) {
	// A 20 MiB response is served whole, not stored, and never buffered
	// whole on the way.
	const size = 20 << 20
	c := cache.MustNew(cache.Options{MaxObjectSize: 1 << 20})
	defer c.Close()
	chunk := []byte(strings.Repeat("0123456789abcdef", 4096))
	want := sha256.New()
	for n := 0; n < size; n += len(chunk) {
		want.Write(chunk)
	}
	var calls atomic.Int64
	url, last := gateway(t, c, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Cache-Control", "max-age=60")
		for n := 0; n < size; n += len(chunk) {
			w.Write(chunk)
		}
	}))
	for i := range 2 {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		res, err := http.Get(url + "/big")
		if err != nil {
			t.Fatal(err)
		}
		got := sha256.New()
		n, _ := io.Copy(got, res.Body)
		res.Body.Close()
		runtime.ReadMemStats(&after)
		if n != size || string(got.Sum(nil)) != string(want.Sum(nil)) {
			t.Fatalf("request %d: %d bytes, body differs", i, n)
		}
		if last.Load() != cache.StatusMiss {
			t.Fatalf("request %d: info %q", i, last.Load())
		}
		// Upstream server, proxy and client all in this process: well under
		// the body's size is allocated in total.
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 10<<20 {
			t.Errorf("request %d allocated %d MiB for a %d MiB body", i, alloc>>20, size>>20)
		}
	}
	if calls.Load() != 2 {
		t.Fatalf("upstream calls = %d: the response was stored", calls.Load())
	}
}

// TestGatewayGetWithContentBypasses is the "fat GET" cache poisoning: an
// origin that reflects a GET's body must not have that response stored
// under the body-less key. RFC 9110 §9.3.1: content in a GET has no
// defined semantics. A GET with content (a Content-Length or a chunked
// body) is forwarded as it is, is not answered from the cache, and its
// response is not stored; a plain GET is cached as usual.
func TestGatewayGetWithContentBypasses(t *testing.T) {
	for _, tc := range []struct {
		name string
		body func() io.Reader
	}{
		{"Content-Length", func() io.Reader { return strings.NewReader("<script>evil</script>") }},
		// A reader of unknown length: net/http sends it chunked.
		{"chunked", func() io.Reader { return io.MultiReader(strings.NewReader("<script>evil</script>")) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := cache.MustNew(cache.Options{})
			defer c.Close()
			var calls atomic.Int64
			url, last := gateway(t, c, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				calls.Add(1)
				q, _ := io.ReadAll(r.Body)
				w.Header().Set("Cache-Control", "max-age=60")
				io.WriteString(w, "results for "+string(q))
			}))
			send := func(body io.Reader) (string, string) {
				t.Helper()
				req, _ := http.NewRequest("GET", url+"/search", body)
				res, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				return string(b), res.Header.Get("Cache-Status")
			}
			// The attacker's GET reaches the origin with its body, is
			// answered with the reflection, and is marked as bypassed.
			body, cs := send(tc.body())
			if body != "results for <script>evil</script>" || cs != "pylon; fwd=bypass; detail=request-content" || last.Load() != cache.StatusBypass {
				t.Fatalf("GET with content: %q, Cache-Status %q, info %q", body, cs, last.Load())
			}
			// The victim's plain GET is not served the reflection; its own
			// response is stored and served to the next plain GET.
			for i, want := range []string{"pylon; fwd=uri-miss", "pylon; hit"} {
				body, cs = send(nil)
				if body != "results for " || !strings.HasPrefix(cs, want) {
					t.Fatalf("plain GET %d: %q, Cache-Status %q, want %q", i, body, cs, want)
				}
			}
			// A GET with content is not answered from the stored response
			// either: the origin gets it.
			if body, cs = send(tc.body()); body != "results for <script>evil</script>" || !strings.Contains(cs, "fwd=bypass") {
				t.Fatalf("GET with content after a stored response: %q, Cache-Status %q", body, cs)
			}
			if calls.Load() != 3 {
				t.Fatalf("upstream calls = %d, want 3", calls.Load())
			}
		})
	}
}

// TestGatewayCacheStatusStored checks the stored parameter of Cache-Status
// (RFC 9211 §2.7): it is sent, with the header, when the cache is storing
// the response, whether or not the response has a Content-Length (a
// streamed body is stored as well), and not when the cache will not keep
// it (a lifetime of 0 without a validator to revalidate it with).
func TestGatewayCacheStatusStored(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cc      []string // response fields
		chunked bool     // streamed: no Content-Length
		stored  bool
		next    string // the next request's Cache-Status prefix
	}{
		{"Content-Length", []string{"Cache-Control: max-age=60"}, false, true, "pylon; hit"},
		{"chunked", []string{"Cache-Control: max-age=60"}, true, true, "pylon; hit"},
		{"max-age=0 with a validator", []string{"Cache-Control: max-age=0", `ETag: "1"`}, true, true, "pylon; fwd=stale"},
		{"max-age=0 without a validator", []string{"Cache-Control: max-age=0"}, false, false, "pylon; fwd=uri-miss"},
		{"max-age=0 without a validator, chunked", []string{"Cache-Control: max-age=0"}, true, false, "pylon; fwd=uri-miss"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := cache.MustNew(cache.Options{})
			defer c.Close()
			url, _ := gateway(t, c, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				for _, f := range tc.cc {
					k, v, _ := strings.Cut(f, ":")
					w.Header().Set(k, strings.TrimSpace(v))
				}
				io.WriteString(w, "part one, ")
				if tc.chunked {
					http.NewResponseController(w).Flush()
				}
				io.WriteString(w, "part two")
			}))
			res, err := http.Get(url + "/s")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if string(body) != "part one, part two" || (res.ContentLength < 0) != tc.chunked {
				t.Fatalf("first response: %q, Content-Length %d", body, res.ContentLength)
			}
			cs := res.Header.Get("Cache-Status")
			if strings.HasSuffix(cs, "; stored") != tc.stored {
				t.Fatalf("first Cache-Status %q, want stored %v", cs, tc.stored)
			}
			res, err = http.Get(url + "/s")
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if cs := res.Header.Get("Cache-Status"); !strings.HasPrefix(cs, tc.next) {
				t.Fatalf("next Cache-Status %q, want %q...", cs, tc.next)
			}
		})
	}
}
