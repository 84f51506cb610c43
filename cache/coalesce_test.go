package cache

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pylon-gateway/pylon"
)

// stampede sends n concurrent requests through h while the origin is held,
// releases it once n-1 of them wait for the first, and returns the bodies.
func stampede(t *testing.T, c *Cache, h http.Handler, o *origin, n int, release chan struct{}) []*httptest.ResponseRecorder {
	t.Helper()
	out := make([]*httptest.ResponseRecorder, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			out[i] = get(h, "GET", "/cold")
		})
	}
	waitFor(t, "requests to queue behind the first", func() bool { return c.waiting.Load() == int64(n-1) })
	close(release)
	wg.Wait()
	return out
}

func TestCoalescingStampede(t *testing.T) {
	const n = 1000
	c := newTestCache(t, Options{Now: newClock().Now})
	o := &origin{}
	release := make(chan struct{})
	o.set(func(w http.ResponseWriter, r *http.Request) {
		<-release
		static(200, "body", "Cache-Control: max-age=60")(w, r)
	})
	res := stampede(t, c, c.Middleware(o), o, n, release)
	if got := o.calls.Load(); got != 1 {
		t.Fatalf("backend calls = %d, want 1", got)
	}
	collapsed := 0
	for i, w := range res {
		if w.Code != 200 || w.Body.String() != "body" {
			t.Fatalf("response %d: %d %q", i, w.Code, w.Body)
		}
		if strings.Contains(status(w), "collapsed") {
			collapsed++
		}
	}
	if collapsed != n-1 {
		t.Fatalf("collapsed = %d, want %d", collapsed, n-1)
	}
}

func TestCoalescingUnshareable(t *testing.T) {
	// A private response cannot be shared: every waiter fetches its own,
	// and later requests skip coalescing (pass marker).
	const n = 20
	c := newTestCache(t, Options{Now: newClock().Now})
	o := &origin{}
	release := make(chan struct{})
	o.set(func(w http.ResponseWriter, r *http.Request) {
		<-release
		static(200, "mine", "Cache-Control: private, max-age=60")(w, r)
	})
	res := stampede(t, c, c.Middleware(o), o, n, release)
	if got := o.calls.Load(); got != n {
		t.Fatalf("backend calls = %d, want %d", got, n)
	}
	for _, w := range res {
		if w.Body.String() != "mine" || strings.Contains(status(w), "collapsed") {
			t.Fatalf("got %q %q", w.Body, status(w))
		}
	}
	if e, _ := c.store.Get(context.Background(), "GET http://example.com/cold"); e == nil || e.kind != kindPass {
		t.Fatalf("no pass marker: %+v", e)
	}
}

func TestCoalescingVary(t *testing.T) {
	// Waiters whose Vary'd headers differ from the leader's are not served
	// its response.
	c := newTestCache(t, Options{Now: newClock().Now})
	o := &origin{}
	release := make(chan struct{})
	o.set(func(w http.ResponseWriter, r *http.Request) {
		<-release
		static(200, r.Header.Get("Accept-Language"), "Cache-Control: max-age=60", "Vary: Accept-Language")(w, r)
	})
	h := c.Middleware(o)
	langs := []string{"en", "fr", "en", "fr", "de", "en"}
	res := make([]*httptest.ResponseRecorder, len(langs))
	var wg sync.WaitGroup
	for i, l := range langs {
		wg.Go(func() { res[i] = get(h, "GET", "/cold", "Accept-Language: "+l) })
	}
	waitFor(t, "waiters", func() bool { return c.waiting.Load() == int64(len(langs)-1) })
	close(release)
	wg.Wait()
	for i, w := range res {
		if w.Body.String() != langs[i] {
			t.Fatalf("request for %s got %q", langs[i], w.Body)
		}
	}
	if got := o.calls.Load(); got != 3 {
		t.Fatalf("backend calls = %d, want 3 (one per language)", got)
	}
}

func TestCoalescingBackendError(t *testing.T) {
	// When the first fetch fails with 5xx, waiters retry; they are not
	// served the error as if it were cached, and not all of them hit the
	// backend at once.
	const n = 10
	c := newTestCache(t, Options{Now: newClock().Now})
	o := &origin{}
	release := make(chan struct{})
	var mu sync.Mutex
	first := true
	o.set(func(w http.ResponseWriter, r *http.Request) {
		<-release
		mu.Lock()
		f := first
		first = false
		mu.Unlock()
		if f {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		static(200, "body", "Cache-Control: max-age=60")(w, r)
	})
	res := stampede(t, c, c.Middleware(o), o, n, release)
	errs := 0
	for _, w := range res {
		if w.Code == 503 {
			errs++
		}
	}
	if errs != 1 || o.calls.Load() != 2 {
		t.Fatalf("errors = %d (want 1), calls = %d (want 2)", errs, o.calls.Load())
	}
}

func TestCoalescingWaiterCancels(t *testing.T) {
	c := newTestCache(t, Options{Now: newClock().Now})
	o := &origin{}
	release := make(chan struct{})
	o.set(func(w http.ResponseWriter, r *http.Request) {
		<-release
		static(200, "body", "Cache-Control: max-age=60")(w, r)
	})
	h := c.Middleware(o)
	done := make(chan struct{})
	go func() { get(h, "GET", "/cold"); close(done) }()
	waitFor(t, "leader", func() bool { return o.calls.Load() == 1 })
	ctx, cancel := context.WithCancel(context.Background())
	waiterDone := make(chan struct{})
	go func() {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/cold", nil).WithContext(ctx))
		close(waiterDone)
	}()
	waitFor(t, "waiter", func() bool { return c.waiting.Load() == 1 })
	cancel()
	<-waiterDone // a waiter whose client leaves returns at once
	close(release)
	<-done
}

// throughGateway serves h behind a Backend, through a Gateway whose route
// uses c, and returns the gateway's URL.
func throughGateway(t *testing.T, c *Cache, h http.Handler) string {
	t.Helper()
	up := httptest.NewServer(h)
	t.Cleanup(up.Close)
	b := pylon.MustNewBackend("up", pylon.BackendOptions{Targets: []string{up.URL}})
	t.Cleanup(func() { _ = b.Close() })
	gw := pylon.New(pylon.Options{})
	gw.Route("/").Use(c.Middleware).To(b)
	if err := gw.Err(); err != nil {
		t.Fatal(err)
	}
	front := httptest.NewServer(gw)
	t.Cleanup(front.Close)
	return front.URL
}

// TestCoalescingSlowClientHoldsNobody: the client of the request that
// fetches for the others reads nothing at all. The others are not held
// until it does: a response being stored is read from the backend at the
// backend's pace, and they are served once it is stored (or, for a stale
// response, once the backend has revalidated it); a response that turns
// out not to be shareable (too large, or private) releases them as soon as
// that is known, and they fetch on their own.
func TestCoalescingSlowClientHoldsNobody(t *testing.T) {
	const size = 16 << 20 // far beyond what socket buffers hold
	body := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	big := Options{MaxObjectSize: size, MaxBytes: 2 * size}
	for _, tc := range []struct {
		name       string
		opts       Options
		fields     []string
		chunked    bool  // no Content-Length: too large is found out mid-body
		revalidate bool  // the first client's request revalidates a stale stored response (304)
		waits      bool  // the second request waits for the first's fetch
		shared     bool  // and is served its outcome
		calls      int64 // backend calls for the two
	}{
		{"stored", big, []string{"Cache-Control: max-age=60"}, false, false, true, true, 1},
		{"stored, chunked", big, []string{"Cache-Control: max-age=60"}, true, false, true, true, 1},
		{"revalidated", big, []string{"Cache-Control: max-age=60", `Etag: "1"`}, false, true, true, true, 2},
		{"too large", Options{MaxObjectSize: 1 << 20}, []string{"Cache-Control: max-age=60"}, true, false, true, false, 2},
		{"not storable", Options{}, []string{"Cache-Control: private, max-age=60"}, false, false, false, false, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := newClock()
			tc.opts.Now = clk.Now
			tc.opts.Logger = slog.New(slog.DiscardHandler)
			c := newTestCache(t, tc.opts)
			o := &origin{}
			release := make(chan struct{})
			pauseAt := int64(1) // the backend call that waits for the second request
			if tc.revalidate {
				pauseAt = 2
			}
			o.set(func(w http.ResponseWriter, r *http.Request) {
				for _, f := range tc.fields {
					k, v, _ := strings.Cut(f, ":")
					w.Header().Set(k, strings.TrimSpace(v))
				}
				pause := func() bool {
					select {
					case <-release:
						return true
					case <-r.Context().Done():
						return false
					}
				}
				if r.Header.Get("If-None-Match") != "" {
					if o.calls.Load() == pauseAt && !pause() {
						return
					}
					w.WriteHeader(http.StatusNotModified)
					return
				}
				if !tc.chunked {
					w.Header().Set("Content-Length", strconv.Itoa(size))
				}
				rest := body
				if o.calls.Load() == pauseAt {
					w.Write(body[:64<<10])
					http.NewResponseController(w).Flush()
					if !pause() {
						return
					}
					rest = body[64<<10:]
				}
				w.Write(rest)
			})
			url := throughGateway(t, c, o)
			get := func() (b []byte, cacheStatus string, err error) {
				res, err := http.Get(url + "/big")
				if err != nil {
					return nil, "", err
				}
				defer res.Body.Close()
				b, err = io.ReadAll(res.Body)
				return b, res.Header.Get("Cache-Status"), err
			}
			if tc.revalidate {
				if _, _, err := get(); err != nil {
					t.Fatal(err)
				}
				clk.Advance(time.Minute + time.Second)
			}

			// The first client asks and never reads.
			host := strings.TrimPrefix(url, "http://")
			conn, err := net.Dial("tcp", host)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.(*net.TCPConn).SetReadBuffer(4 << 10)
			if _, err := io.WriteString(conn, "GET /big HTTP/1.1\r\nHost: "+host+"\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the first client's request at the backend", func() bool { return o.calls.Load() == pauseAt })

			type result struct {
				body   []byte
				status string
				err    error
			}
			second := make(chan result, 1)
			go func() {
				b, cs, err := get()
				second <- result{b, cs, err}
			}()
			if tc.waits {
				waitFor(t, "the second request to wait for the first", func() bool { return c.waiting.Load() == 1 })
			}
			close(release)
			select {
			case r := <-second:
				if r.err != nil || !bytes.Equal(r.body, body) {
					t.Fatalf("second client: %d bytes, %v", len(r.body), r.err)
				}
				if strings.Contains(r.status, "collapsed") != tc.shared {
					t.Fatalf("second client's Cache-Status %q, want shared %v", r.status, tc.shared)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("the second client is held by the first one, which does not read")
			}
			if got := o.calls.Load(); got != tc.calls {
				t.Fatalf("backend calls = %d, want %d", got, tc.calls)
			}
			if tc.shared {
				// Stored while the first client still has not read it.
				b, cs, err := get()
				if err != nil || len(b) != size || !strings.HasPrefix(cs, "pylon; hit") || o.calls.Load() != tc.calls {
					t.Fatalf("third request: %d bytes, %v, Cache-Status %q, backend calls %d", len(b), err, cs, o.calls.Load())
				}
			}
		})
	}
}

// panicWriter is a client's ResponseWriter whose Write panics.
type panicWriter struct{ *httptest.ResponseRecorder }

func (panicWriter) Write([]byte) (int, error) { panic("client writer broke") }

// A stored response is sent to its client from another goroutine; a panic
// of the client's writer there still reaches the request's own goroutine,
// where net/http recovers it, instead of crashing the process.
func TestClientWriterPanicReachesHandler(t *testing.T) {
	c := newTestCache(t, Options{Now: newClock().Now})
	o := &origin{}
	o.set(static(200, "body", "Cache-Control: max-age=60"))
	h := c.Middleware(o)
	got := func() (p any) {
		defer func() { p = recover() }()
		h.ServeHTTP(panicWriter{httptest.NewRecorder()}, httptest.NewRequest("GET", "/a", nil))
		return nil
	}()
	if got != "client writer broke" {
		t.Fatalf("recovered %v", got)
	}
}

// A waiter whose own route deadline passes while the fill runs is still
// there: it gets 504 with a Cache-Status, not an empty 200.
func TestWaiterDeadlineAnswers504(t *testing.T) {
	c := newTestCache(t, Options{})
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
		w.Header().Set("Cache-Control", "max-age=60")
		io.WriteString(w, "payload")
	}))
	t.Cleanup(up.Close)
	t.Cleanup(func() { close(release) }) // before up.Close, which waits for it
	b := pylon.MustNewBackend("up", pylon.BackendOptions{Targets: []string{up.URL}})
	t.Cleanup(func() { b.Close() })
	gw := pylon.New(pylon.Options{})
	gw.Route("/x").Header("X-Fast", "1").Timeout(50 * time.Millisecond).Use(c.Middleware).To(b)
	gw.Route("/x").Use(c.Middleware).To(b)
	if err := gw.Err(); err != nil {
		t.Fatal(err)
	}
	leader := make(chan *httptest.ResponseRecorder, 1)
	go func() { leader <- get(gw, "GET", "/x") }()
	waitFor(t, "the leader's fill", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.calls) == 1
	})
	r := httptest.NewRequest("GET", "/x", nil)
	r.Header.Set("X-Fast", "1")
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, r)
	if w.Code != http.StatusGatewayTimeout || !strings.Contains(w.Header().Get("Cache-Status"), "collapsed") {
		t.Fatalf("waiter past its deadline: %d %q, Cache-Status %q; want 504", w.Code, w.Body, w.Header().Get("Cache-Status"))
	}
	release <- struct{}{}
	if res := <-leader; res.Code != 200 || res.Body.String() != "payload" {
		t.Errorf("leader: %d %q", res.Code, res.Body)
	}
}

// An HTTP/2 GET whose HEADERS frame does not end the stream (a client with a
// body reader that turns out empty) has ContentLength -1 but no content: it
// is cached as any GET. One with content still bypasses.
func TestHTTP2GetOfUnknownLength(t *testing.T) {
	c := newTestCache(t, Options{})
	o := &origin{}
	o.set(static(200, "hello", "Cache-Control: max-age=60"))
	up := httptest.NewServer(o)
	t.Cleanup(up.Close)
	b := pylon.MustNewBackend("up", pylon.BackendOptions{Targets: []string{up.URL}})
	t.Cleanup(func() { b.Close() })
	gw := pylon.New(pylon.Options{})
	gw.Route("/").Use(c.Middleware).To(b)
	front := httptest.NewUnstartedServer(gw)
	front.EnableHTTP2 = true
	front.StartTLS()
	t.Cleanup(front.Close)
	cl := front.Client()
	send := func(body io.Reader) (string, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", front.URL+"/h2", body)
		res, err := cl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.ProtoMajor != 2 {
			t.Fatalf("served over %s", res.Proto)
		}
		return string(got), res.Header.Get("Cache-Status")
	}
	for i := range 3 {
		if body, cs := send(io.NopCloser(strings.NewReader(""))); body != "hello" || (i > 0) != strings.Contains(cs, "hit") {
			t.Fatalf("empty-bodied GET %d: %q, Cache-Status %q", i, body, cs)
		}
	}
	if n := o.calls.Load(); n != 1 {
		t.Errorf("origin calls = %d, want 1", n)
	}
	if _, cs := send(io.NopCloser(strings.NewReader("q=1"))); !strings.Contains(cs, "request-content") {
		t.Errorf("GET with content over HTTP/2: Cache-Status %q, want a bypass", cs)
	}
}

// A response with trailers is not stored, but the client it streams to gets
// their values (they were announced, then lost on the fill path).
func TestFillPassesTrailers(t *testing.T) {
	c := newTestCache(t, Options{})
	url := throughGateway(t, c, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Trailer", "X-Sum")
		io.WriteString(w, "body")
		w.Header().Set("X-Sum", "42")
	}))
	for i := range 2 {
		res, err := http.Get(url + "/t")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if string(body) != "body" || res.Trailer.Get("X-Sum") != "42" {
			t.Fatalf("request %d: %q, trailer %v, Cache-Status %q", i, body, res.Trailer, res.Header.Get("Cache-Status"))
		}
	}
}
