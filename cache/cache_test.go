package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pylon-gateway/pylon"
)

func TestStorability(t *testing.T) {
	tests := []struct {
		name   string
		opts   Options
		fields []string // response fields
		status int
		req    []string // request fields
		stored bool
	}{
		{name: "max-age", fields: []string{"Cache-Control: max-age=60"}, stored: true},
		{name: "s-maxage", fields: []string{"Cache-Control: s-maxage=60"}, stored: true},
		{name: "expires", fields: []string{"Expires: Fri, 02 Jan 2026 04:00:00 GMT", "Date: Fri, 02 Jan 2026 03:04:05 GMT"}, stored: true},
		{name: "expires in the past", fields: []string{"Expires: Thu, 01 Jan 2026 00:00:00 GMT", "Date: Fri, 02 Jan 2026 03:04:05 GMT"}},
		{name: "invalid expires", fields: []string{"Expires: 0"}},
		{name: "no-store", fields: []string{"Cache-Control: max-age=60, no-store"}},
		{name: "private", fields: []string{"Cache-Control: private, max-age=60"}},
		{name: "no cache headers", fields: nil},
		{name: "no cache headers, default TTL", opts: Options{DefaultTTL: time.Minute}, stored: true},
		{name: "default TTL, uncacheable status", opts: Options{DefaultTTL: time.Minute}, status: 500},
		{name: "vary star", fields: []string{"Cache-Control: max-age=60", "Vary: *"}},
		{name: "set-cookie", fields: []string{"Cache-Control: max-age=60", "Set-Cookie: s=1"}},
		{name: "set-cookie allowed", opts: Options{AllowSetCookie: true}, fields: []string{"Cache-Control: max-age=60", "Set-Cookie: s=1"}, stored: true},
		// RFC 9111 §3: any final status the cache understands is storable
		// with explicit freshness.
		{name: "§3 500 with max-age", status: 500, fields: []string{"Cache-Control: max-age=60"}, stored: true},
		{name: "404 with max-age", status: 404, fields: []string{"Cache-Control: max-age=60"}, stored: true},
		{name: "authorization", req: []string{"Authorization: Bearer a"}, fields: []string{"Cache-Control: max-age=60"}},
		{name: "authorization, public", req: []string{"Authorization: Bearer a"}, fields: []string{"Cache-Control: public, max-age=60"}, stored: true},
		{name: "authorization, s-maxage", req: []string{"Authorization: Bearer a"}, fields: []string{"Cache-Control: s-maxage=60"}, stored: true},
		{name: "authorization, must-revalidate", req: []string{"Authorization: Bearer a"}, fields: []string{"Cache-Control: max-age=60, must-revalidate"}, stored: true},
		{name: "request no-store", req: []string{"Cache-Control: no-store"}, fields: []string{"Cache-Control: max-age=60"}},
		{name: "trailer", fields: []string{"Cache-Control: max-age=60", "Trailer: X-Sum"}},
	}
	// RFC 9110 §15.1: heuristically cacheable statuses are stored without
	// explicit freshness; other final statuses only with it (RFC 9111 §3).
	for _, code := range []int{203, 300, 301, 308, 404, 405, 410, 414, 501} {
		tests = append(tests, struct {
			name   string
			opts   Options
			fields []string
			status int
			req    []string
			stored bool
		}{name: "§15.1 heuristically cacheable " + itoa(int64(code)), opts: Options{DefaultTTL: time.Minute}, status: code, stored: true})
	}
	for _, code := range []int{302, 303, 307, 400, 403, 418, 451, 500, 502, 503, 504} {
		tests = append(tests, struct {
			name   string
			opts   Options
			fields []string
			status int
			req    []string
			stored bool
		}{name: "§3 explicit freshness " + itoa(int64(code)), status: code, fields: []string{"Cache-Control: max-age=60"}, stored: true},
			struct {
				name   string
				opts   Options
				fields []string
				status int
				req    []string
				stored bool
			}{name: "§3 no explicit freshness " + itoa(int64(code)), opts: Options{DefaultTTL: time.Minute}, status: code})
	}
	tests = append(tests, []struct {
		name   string
		opts   Options
		fields []string
		status int
		req    []string
		stored bool
	}{
		{name: "§3 404 with Expires", status: 404, fields: []string{"Expires: Fri, 02 Jan 2026 04:00:00 GMT", "Date: Fri, 02 Jan 2026 03:04:05 GMT"}, stored: true},
		{name: "§3 public makes 418 storable", status: 418, fields: []string{"Cache-Control: public", "Expires: Fri, 02 Jan 2026 04:00:00 GMT"}, stored: true},
		{name: "§3 206 is not stored", status: 206, fields: []string{"Cache-Control: max-age=60", "Content-Range: bytes 0-3/10"}},
		{name: "§5.2.2.3 must-understand, understood status, no-store ignored", fields: []string{"Cache-Control: max-age=60, must-understand, no-store"}, stored: true},
		{name: "§5.2.2.3 must-understand, unknown status", status: 299, fields: []string{"Cache-Control: max-age=60, must-understand, no-store"}},
		{name: "§5.2.2.3 must-understand, unknown status, no no-store", status: 418, fields: []string{"Cache-Control: max-age=60, must-understand"}},
	}...)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			tt.opts.Now = clk.Now
			c := newTestCache(t, tt.opts)
			o := &origin{}
			st := tt.status
			if st == 0 {
				st = 200
			}
			o.set(static(st, "body", tt.fields...))
			h := c.Middleware(o)
			get(h, "GET", "/a", tt.req...)
			w := get(h, "GET", "/a", tt.req...)
			hit := o.calls.Load() == 1
			if hit != tt.stored {
				t.Fatalf("stored = %v, want %v (Cache-Status %q)", hit, tt.stored, status(w))
			}
			if hit {
				if !strings.Contains(status(w), "; hit") {
					t.Errorf("Cache-Status = %q, want a hit", status(w))
				}
				if w.Header().Get("Age") == "" {
					t.Error("hit without Age")
				}
				if w.Header().Get("Set-Cookie") != "" {
					t.Error("a stored Set-Cookie was served to another client")
				}
				if w.Body.String() != "body" || w.Code != st {
					t.Errorf("hit = %d %q", w.Code, w.Body)
				}
			}
		})
	}
}

func TestFreshnessAndAge(t *testing.T) {
	tests := []struct {
		name     string
		fields   []string
		freshFor time.Duration // still a hit after this long
		age      string        // Age right after storing
	}{
		{"max-age", []string{"Cache-Control: max-age=60"}, 59 * time.Second, "0"},
		{"s-maxage wins over max-age", []string{"Cache-Control: max-age=5, s-maxage=60"}, 59 * time.Second, "0"},
		{"upstream Age counts", []string{"Cache-Control: max-age=60", "Age: 50"}, 9 * time.Second, "50"},
		{"old Date counts", []string{"Cache-Control: max-age=60", "Date: Fri, 02 Jan 2026 03:03:35 GMT"}, 29 * time.Second, "30"},
		{"expires minus date", []string{"Expires: Fri, 02 Jan 2026 03:05:05 GMT", "Date: Fri, 02 Jan 2026 03:04:05 GMT"}, 59 * time.Second, "0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			c := newTestCache(t, Options{Now: clk.Now})
			o := &origin{}
			o.set(static(200, "v1", tt.fields...))
			h := c.Middleware(o)
			if w := get(h, "GET", "/a"); !strings.HasPrefix(status(w), "pylon; fwd=uri-miss") {
				t.Fatalf("first Cache-Status = %q", status(w))
			}
			w := get(h, "GET", "/a")
			if got := w.Header().Get("Age"); got != tt.age {
				t.Errorf("Age = %q, want %q", got, tt.age)
			}
			clk.Advance(tt.freshFor)
			if w := get(h, "GET", "/a"); !strings.Contains(status(w), "hit") || o.calls.Load() != 1 {
				t.Fatalf("after %v: Cache-Status %q, calls %d", tt.freshFor, status(w), o.calls.Load())
			}
			clk.Advance(2 * time.Second)
			w = get(h, "GET", "/a")
			// Without a validator the expired entry is dropped: a plain miss.
			if o.calls.Load() != 2 || !strings.Contains(status(w), "fwd=") {
				t.Fatalf("stale entry: Cache-Status %q, calls %d", status(w), o.calls.Load())
			}
		})
	}
}

// RFC 9111 §4.2.1 (§5.2): when max-age or s-maxage appears more than once,
// a cache uses the first or considers the response stale. This cache
// considers it stale when the values differ, in Cache-Control (one line or
// several) and in a targeted field (RFC 9213, whose Dictionary parsing
// keeps the last value): the origin's own lifetime cannot be told from one
// appended by someone else. Repeats of one value are that value.
func TestRepeatedFreshnessDirectives(t *testing.T) {
	tests := []struct {
		name   string
		fields []string
		fresh  time.Duration // still a hit after this long; -1: stale at once
	}{
		{"max-age twice", []string{"Cache-Control: max-age=1, max-age=3600"}, -1},
		{"max-age twice, shorter last", []string{"Cache-Control: max-age=3600, max-age=1"}, -1},
		{"max-age on two lines", []string{"Cache-Control: max-age=3600", "Cache-Control: max-age=1"}, -1},
		{"s-maxage twice", []string{"Cache-Control: s-maxage=1, max-age=60, s-maxage=3600"}, -1},
		{"max-age twice beside s-maxage", []string{"Cache-Control: s-maxage=3600, max-age=1, max-age=2"}, -1},
		{"invalid then valid max-age", []string{"Cache-Control: max-age=x, max-age=3600"}, -1},
		{"max-age repeated with one value", []string{"Cache-Control: max-age=60, max-age=60"}, 59 * time.Second},
		{"max-age repeated on two lines with one value", []string{"Cache-Control: max-age=60", "Cache-Control: max-age=60"}, 59 * time.Second},
		{"targeted max-age twice", []string{"CDN-Cache-Control: max-age=1, max-age=3600"}, -1},
		{"targeted s-maxage on two lines", []string{"CDN-Cache-Control: s-maxage=3600", "CDN-Cache-Control: s-maxage=1"}, -1},
		{"targeted max-age repeated with one value", []string{"CDN-Cache-Control: max-age=60, max-age=60"}, 59 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			c := newTestCache(t, Options{Now: clk.Now})
			o := &origin{}
			o.set(static(200, "v", append([]string{`Etag: "1"`}, tt.fields...)...))
			h := c.Middleware(o)
			get(h, "GET", "/a")
			if tt.fresh < 0 {
				if w := get(h, "GET", "/a"); o.calls.Load() != 2 || strings.Contains(status(w), "hit") {
					t.Fatalf("served as fresh: Cache-Status %q, backend calls %d", status(w), o.calls.Load())
				}
				return
			}
			clk.Advance(tt.fresh)
			if w := get(h, "GET", "/a"); o.calls.Load() != 1 || !strings.Contains(status(w), "hit") {
				t.Fatalf("not fresh after %v: Cache-Status %q, backend calls %d", tt.fresh, status(w), o.calls.Load())
			}
		})
	}
}

func TestRevalidation(t *testing.T) {
	clk := newClock()
	c := newTestCache(t, Options{Now: clk.Now})
	o := &origin{}
	o.set(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("If-None-Match") == `"v1"` {
			w.Header().Set("Cache-Control", "max-age=20")
			w.Header().Set("X-Refreshed", "yes")
			w.WriteHeader(http.StatusNotModified)
			return
		}
		static(200, "body-v1", "Cache-Control: max-age=10", `Etag: "v1"`, "Last-Modified: Thu, 01 Jan 2026 00:00:00 GMT")(w, r)
	})
	h := c.Middleware(o)
	get(h, "GET", "/a")
	clk.Advance(11 * time.Second)
	w := get(h, "GET", "/a")
	if w.Code != 200 || w.Body.String() != "body-v1" {
		t.Fatalf("revalidated response = %d %q", w.Code, w.Body)
	}
	if got := status(w); got != "pylon; fwd=stale; fwd-status=304; ttl=20" {
		t.Errorf("Cache-Status = %q", got)
	}
	if r := o.lastReq(); r.Header.Get("If-Modified-Since") != "Thu, 01 Jan 2026 00:00:00 GMT" {
		t.Errorf("If-Modified-Since sent = %q", r.Header.Get("If-Modified-Since"))
	}
	// The 304's fields refreshed the entry: fresh for 20s more, new header.
	clk.Advance(19 * time.Second)
	w = get(h, "GET", "/a")
	if o.calls.Load() != 2 || !strings.Contains(status(w), "hit") || w.Header().Get("X-Refreshed") != "yes" {
		t.Fatalf("after refresh: calls %d, Cache-Status %q, X-Refreshed %q", o.calls.Load(), status(w), w.Header().Get("X-Refreshed"))
	}
}

func TestClientConditional(t *testing.T) {
	fields := []string{"Cache-Control: max-age=60", `Etag: W/"e1"`, "Last-Modified: Thu, 01 Jan 2026 00:00:00 GMT"}
	tests := []struct {
		name string
		req  []string
		want int
	}{
		{"if-none-match", []string{`If-None-Match: "e1"`}, 304},
		{"if-none-match list", []string{`If-None-Match: "x", W/"e1"`}, 304},
		{"if-none-match star", []string{`If-None-Match: *`}, 304},
		{"if-none-match other", []string{`If-None-Match: "x"`}, 200},
		{"if-modified-since later", []string{"If-Modified-Since: Fri, 02 Jan 2026 00:00:00 GMT"}, 304},
		{"if-modified-since earlier", []string{"If-Modified-Since: Wed, 31 Dec 2025 00:00:00 GMT"}, 200},
		{"if-none-match wins", []string{`If-None-Match: "x"`, "If-Modified-Since: Fri, 02 Jan 2026 00:00:00 GMT"}, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestCache(t, Options{Now: newClock().Now})
			o := &origin{}
			o.set(static(200, "body", fields...))
			h := c.Middleware(o)
			// On a miss the client's conditionals are not forwarded; the
			// cache stores the full response and answers them itself.
			w := get(h, "GET", "/a", tt.req...)
			if w.Code != tt.want {
				t.Errorf("miss: status %d, want %d", w.Code, tt.want)
			}
			if o.lastReq().Header.Get("If-None-Match") != "" || o.lastReq().Header.Get("If-Modified-Since") != "" {
				t.Error("client conditionals were forwarded on a fill")
			}
			w = get(h, "GET", "/a", tt.req...)
			if w.Code != tt.want || o.calls.Load() != 1 {
				t.Errorf("hit: status %d, want %d (calls %d)", w.Code, tt.want, o.calls.Load())
			}
			if w.Code == 304 && w.Body.Len() != 0 {
				t.Error("304 with a body")
			}
		})
	}
}

func TestHeadFromGet(t *testing.T) {
	c := newTestCache(t, Options{Now: newClock().Now})
	o := &origin{}
	o.set(static(200, "body", "Cache-Control: max-age=60"))
	h := c.Middleware(o)
	if get(h, "HEAD", "/a"); o.calls.Load() != 1 || o.lastReq().Method != "HEAD" {
		t.Fatalf("HEAD miss: calls %d", o.calls.Load())
	}
	get(h, "GET", "/a")
	w := get(h, "HEAD", "/a")
	if o.calls.Load() != 2 || w.Body.Len() != 0 || w.Header().Get("Content-Length") != "4" || !strings.Contains(status(w), "hit") {
		t.Fatalf("HEAD hit: calls %d, body %q, Content-Length %q, Cache-Status %q",
			o.calls.Load(), w.Body, w.Header().Get("Content-Length"), status(w))
	}
}

func TestHeadNeverStored(t *testing.T) {
	// A HEAD request on a URL marked uncacheable is forwarded, and its
	// empty body is not stored for a later GET.
	c := newTestCache(t, Options{Now: newClock().Now})
	o := &origin{}
	o.set(static(200, "body", "Cache-Control: no-store"))
	h := c.Middleware(o)
	get(h, "GET", "/a") // leaves a pass marker
	o.set(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		if r.Method == "GET" {
			_, _ = w.Write([]byte("body"))
		}
	})
	get(h, "HEAD", "/a")
	if w := get(h, "GET", "/a"); w.Body.String() != "body" {
		t.Fatalf("GET after HEAD served %q", w.Body)
	}
}

func TestStaleWhileRevalidate(t *testing.T) {
	clk := newClock()
	c := newTestCache(t, Options{Now: clk.Now})
	o := &origin{}
	o.set(static(200, "v1", "Cache-Control: max-age=10, stale-while-revalidate=30"))
	h := c.Middleware(o)
	get(h, "GET", "/a")

	release := make(chan struct{})
	started := make(chan struct{}, 10)
	o.set(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-release
		static(200, "v2", "Cache-Control: max-age=10, stale-while-revalidate=30")(w, r)
	})
	clk.Advance(15 * time.Second)
	for i := range 3 {
		w := get(h, "GET", "/a")
		if w.Body.String() != "v1" || status(w) != "pylon; hit; ttl=-5; detail=stale-while-revalidate" {
			t.Fatalf("request %d: %q, Cache-Status %q", i, w.Body, status(w))
		}
	}
	<-started
	close(release)
	waitFor(t, "background refresh", func() bool { return get(h, "GET", "/a").Body.String() == "v2" })
	if n := o.calls.Load(); n != 2 {
		t.Errorf("backend calls = %d, want 2 (one background refresh)", n)
	}
	// Beyond the window: revalidated synchronously.
	clk.Advance(41 * time.Second)
	o.set(static(200, "v3", "Cache-Control: max-age=10"))
	if w := get(h, "GET", "/a"); w.Body.String() != "v3" {
		t.Fatalf("beyond stale-while-revalidate: %q", w.Body)
	}
}

func TestCloseStopsBackgroundRefresh(t *testing.T) {
	clk := newClock()
	c, err := New(Options{Now: clk.Now, StaleWhileRevalidate: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	o := &origin{}
	o.set(static(200, "v1", "Cache-Control: max-age=1"))
	h := c.Middleware(o)
	get(h, "GET", "/a")
	started := make(chan struct{})
	o.set(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-r.Context().Done() // a hung backend
	})
	clk.Advance(5 * time.Second)
	get(h, "GET", "/a")
	<-started
	_ = c.Close() // cancels the refresh and waits for it; goleak checks the rest
}

func TestStaleIfError(t *testing.T) {
	tests := []struct {
		name    string
		opts    Options
		fields  string
		advance time.Duration
		stale   bool
	}{
		{"directive", Options{}, "max-age=10, stale-if-error=60", 30 * time.Second, true},
		{"beyond directive", Options{}, "max-age=10, stale-if-error=60", 71 * time.Second, false},
		{"option", Options{StaleIfError: time.Minute}, "max-age=10", 30 * time.Second, true},
		{"no window", Options{}, "max-age=10", 30 * time.Second, false},
		{"must-revalidate", Options{StaleIfError: time.Minute}, "max-age=10, must-revalidate", 30 * time.Second, false},
	}
	for _, tt := range tests {
		for _, code := range []int{500, 502, 503, 504} {
			t.Run(tt.name+"/"+http.StatusText(code), func(t *testing.T) {
				clk := newClock()
				tt.opts.Now = clk.Now
				c := newTestCache(t, tt.opts)
				o := &origin{}
				o.set(static(200, "good", "Cache-Control: "+tt.fields))
				h := c.Middleware(o)
				get(h, "GET", "/a")
				clk.Advance(tt.advance)
				o.set(func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Retry-After", "5")
					pylon.Error(w, r, code, "down") // as a Backend or a breaker answers
				})
				w := get(h, "GET", "/a")
				if tt.stale {
					if w.Code != 200 || w.Body.String() != "good" || !strings.Contains(status(w), "detail=stale-if-error") ||
						!strings.Contains(status(w), "fwd-status="+http.StatusText(code)[:0]) {
						t.Fatalf("got %d %q, Cache-Status %q", w.Code, w.Body, status(w))
					}
					if w.Header().Get("Retry-After") != "" {
						t.Error("the error's fields leaked into the stale response")
					}
				} else if w.Code != code {
					t.Fatalf("got %d, want the backend's %d", w.Code, code)
				}
			})
		}
	}
}

// RFC 9111 §5.2.2.10: s-maxage implies proxy-revalidate (§5.2.2.8), which
// binds a shared cache as must-revalidate does: once stale, the response is
// served only after a successful validation, so not for a client's
// max-stale, not within stale-while-revalidate and not for stale-if-error,
// whether the window comes from the response or from Options. The same
// responses with max-age instead are served stale (the controls).
func TestSMaxAgeNeverServedStale(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		cc   string // the stored response's Cache-Control; %s is the freshness directive
		req  []string
		down bool // the backend answers 503 once the response is stale
	}{
		{"max-stale", Options{}, "%s=10", []string{"Cache-Control: max-stale=3600"}, false},
		{"stale-while-revalidate", Options{}, "%s=10, stale-while-revalidate=3600", nil, false},
		{"Options.StaleWhileRevalidate", Options{StaleWhileRevalidate: time.Hour}, "%s=10", nil, false},
		{"stale-if-error", Options{}, "%s=10, stale-if-error=3600", nil, true},
		{"Options.StaleIfError", Options{StaleIfError: time.Hour}, "%s=10", nil, true},
	}
	for _, tt := range tests {
		for _, dir := range []string{"max-age", "s-maxage"} {
			t.Run(tt.name+"/"+dir, func(t *testing.T) {
				clk := newClock()
				opts := tt.opts
				opts.Now = clk.Now
				c := newTestCache(t, opts)
				o := &origin{}
				// The ETag keeps the stale response stored (KeepStale).
				o.set(static(200, "old", "Cache-Control: "+fmt.Sprintf(tt.cc, dir), `Etag: "1"`))
				h := c.Middleware(o)
				get(h, "GET", "/a")
				clk.Advance(30 * time.Second)
				if tt.down {
					o.set(static(503, "down"))
				} else {
					o.set(static(200, "new", "Cache-Control: max-age=10"))
				}
				w := get(h, "GET", "/a", tt.req...)
				if dir == "max-age" {
					if w.Body.String() != "old" {
						t.Fatalf("control: max-age response not served stale: %d %q, Cache-Status %q", w.Code, w.Body, status(w))
					}
					return
				}
				want, code := "new", 200
				if tt.down {
					want, code = "down", 503
				}
				if w.Code != code || w.Body.String() != want || o.calls.Load() != 2 {
					t.Fatalf("stale s-maxage response: got %d %q (Cache-Status %q, backend calls %d), want the backend's %d %q",
						w.Code, w.Body, status(w), o.calls.Load(), code, want)
				}
			})
		}
	}
}

func TestNoStoreAfterMaxAge(t *testing.T) {
	clk := newClock()
	c := newTestCache(t, Options{Now: clk.Now})
	o := &origin{}
	o.set(static(200, "old", "Cache-Control: max-age=10"))
	h := c.Middleware(o)
	get(h, "GET", "/a")
	clk.Advance(11 * time.Second)
	o.set(static(200, "secret", "Cache-Control: no-store"))
	if w := get(h, "GET", "/a"); w.Body.String() != "secret" || !strings.Contains(status(w), "detail=no-store") {
		t.Fatalf("got %q, Cache-Status %q", w.Body, status(w))
	}
	o.set(static(200, "new", "Cache-Control: no-store"))
	if w := get(h, "GET", "/a"); w.Body.String() != "new" {
		t.Fatalf("after a no-store answer the cache served %q", w.Body)
	}
	if o.calls.Load() != 3 {
		t.Fatalf("calls = %d", o.calls.Load())
	}
}

func TestVary(t *testing.T) {
	c := newTestCache(t, Options{Now: newClock().Now})
	o := &origin{}
	o.set(func(w http.ResponseWriter, r *http.Request) {
		static(200, "lang="+r.Header.Get("Accept-Language"), "Cache-Control: max-age=60", "Vary: accept-language")(w, r)
	})
	h := c.Middleware(o)
	for _, tc := range []struct {
		lang, body, status string
		calls              int64
	}{
		{"en", "lang=en", "pylon; fwd=uri-miss; stored", 1},
		{"en", "lang=en", "pylon; hit; ttl=60", 1},
		{"fr", "lang=fr", "pylon; fwd=vary-miss; stored", 2},
		{"fr", "lang=fr", "pylon; hit; ttl=60", 2},
		{"en", "lang=en", "pylon; hit; ttl=60", 2},
		{"", "lang=", "pylon; fwd=vary-miss; stored", 3},
	} {
		var w *httptest.ResponseRecorder
		if tc.lang == "" {
			w = get(h, "GET", "/a")
		} else {
			w = get(h, "GET", "/a", "Accept-Language: "+tc.lang)
		}
		if w.Body.String() != tc.body || status(w) != tc.status || o.calls.Load() != tc.calls {
			t.Fatalf("%s: got %q, %q, calls %d; want %q, %q, %d", tc.lang, w.Body, status(w), o.calls.Load(), tc.body, tc.status, tc.calls)
		}
	}
}

// One variant whose response cannot be stored (here it sets a cookie)
// leaves the URL's other variants stored and served: the pass marker that
// makes later requests for that variant skip coalescing is kept apart from
// the Vary marker, instead of replacing it.
func TestUncacheableVariantKeepsOtherVariants(t *testing.T) {
	c := newTestCache(t, Options{Now: newClock().Now})
	o := &origin{}
	o.set(func(w http.ResponseWriter, r *http.Request) {
		lang := r.Header.Get("Accept-Language")
		fields := []string{"Cache-Control: max-age=600", "Vary: Accept-Language"}
		if lang == "xx" {
			fields = append(fields, "Set-Cookie: s=1")
		}
		static(200, "lang="+lang, fields...)(w, r)
	})
	h := c.Middleware(o)
	for i, tc := range []struct {
		lang, status string
		calls        int64
	}{
		{"en", "pylon; fwd=uri-miss", 1},
		{"en", "pylon; hit", 1},
		{"xx", "pylon; fwd=vary-miss; detail=set-cookie", 2},
		{"en", "pylon; hit", 2},
		{"xx", "pylon; fwd=miss; detail=set-cookie", 3}, // the pass marker: forwarded at once
		{"fr", "pylon; fwd=vary-miss", 4},
		{"fr", "pylon; hit", 4},
		{"en", "pylon; hit", 4},
	} {
		w := get(h, "GET", "/a", "Accept-Language: "+tc.lang)
		if w.Body.String() != "lang="+tc.lang || !strings.HasPrefix(status(w), tc.status) || o.calls.Load() != tc.calls {
			t.Fatalf("request %d (%s): %q, Cache-Status %q, backend calls %d; want %q, %d",
				i, tc.lang, w.Body, status(w), o.calls.Load(), tc.status, tc.calls)
		}
	}
}

// RFC 9111 §4.1: a header named in Vary that is absent from the stored
// request matches only a request where it is absent too, not one that sends
// it with an empty value (and the reverse). For Accept-Encoding the two
// mean different things (RFC 9110 §12.5.3): empty asks for no coding at
// all, absent accepts any.
func TestVaryAbsentHeaderDoesNotMatchEmpty(t *testing.T) {
	for _, name := range []string{"Accept-Language", "Accept-Encoding"} {
		t.Run(name, func(t *testing.T) {
			c := newTestCache(t, Options{Now: newClock().Now})
			o := &origin{}
			o.set(func(w http.ResponseWriter, r *http.Request) {
				v, sent := r.Header[name]
				static(200, fmt.Sprintf("sent=%v %q", sent, v), "Cache-Control: max-age=60", "Vary: "+name)(w, r)
			})
			h := c.Middleware(o)
			for _, tc := range []struct {
				fields []string
				body   string
				status string
				calls  int64
			}{
				{[]string{name + ":"}, `sent=true [""]`, "pylon; fwd=uri-miss", 1},
				{nil, "sent=false []", "pylon; fwd=vary-miss", 2},
				{nil, "sent=false []", "pylon; hit", 2},
				{[]string{name + ":"}, `sent=true [""]`, "pylon; hit", 2},
			} {
				w := get(h, "GET", "/a", tc.fields...)
				if w.Body.String() != tc.body || !strings.HasPrefix(status(w), tc.status) || o.calls.Load() != tc.calls {
					t.Fatalf("request with %q: got %q, %q, calls %d; want %q, %q, %d",
						tc.fields, w.Body, status(w), o.calls.Load(), tc.body, tc.status, tc.calls)
				}
			}
		})
	}
}

// RFC 9110 §12.5.3: Accept-Encoding values that differ only in order,
// case, spacing or "x-gzip" mean the same, and share one stored variant;
// different qvalues do not.
func TestVaryAcceptEncodingNormalized(t *testing.T) {
	c := newTestCache(t, Options{Now: newClock().Now})
	o := &origin{}
	o.set(func(w http.ResponseWriter, r *http.Request) {
		static(200, "ae="+r.Header.Get("Accept-Encoding"), "Cache-Control: max-age=60", "Vary: Accept-Encoding")(w, r)
	})
	h := c.Middleware(o)
	for i, tc := range []struct {
		ae    string
		calls int64
	}{
		{"gzip, deflate, br, zstd", 1},
		{"zstd,br , GZIP,deflate", 1},
		{"x-gzip, deflate, br, zstd", 1},
		{"gzip;q=1.0, deflate, br, zstd;q=1", 1},
		{"gzip;q=0, deflate, br, zstd", 2},
		{"gzip", 3},
		{"gzip;q=0.5", 4},
		{"gzip;q=0.500", 4},
	} {
		get(h, "GET", "/a", "Accept-Encoding: "+tc.ae)
		if o.calls.Load() != tc.calls {
			t.Fatalf("request %d (%q): %d origin calls, want %d", i, tc.ae, o.calls.Load(), tc.calls)
		}
	}
}

func TestAuthorizationTwoUsers(t *testing.T) {
	o := &origin{}
	o.set(func(w http.ResponseWriter, r *http.Request) {
		static(200, "account of "+r.Header.Get("Authorization"), "Cache-Control: private, max-age=60")(w, r)
	})
	withSubject := func(h http.Handler, token, subject string) *httptest.ResponseRecorder {
		r := httptest.NewRequest("GET", "/me", nil)
		r.Header.Set("Authorization", token)
		r = r.WithContext(pylon.NewContext(r.Context(), &pylon.RequestInfo{Subject: subject}))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	t.Run("shared", func(t *testing.T) {
		o.calls.Store(0)
		h := newTestCache(t, Options{Now: newClock().Now}).Middleware(o)
		for range 2 {
			if w := withSubject(h, "alice", "alice"); w.Body.String() != "account of alice" {
				t.Fatalf("alice got %q", w.Body)
			}
			if w := withSubject(h, "bob", "bob"); w.Body.String() != "account of bob" {
				t.Fatalf("bob got %q", w.Body)
			}
		}
		if o.calls.Load() != 4 {
			t.Fatalf("calls = %d: a private response was stored", o.calls.Load())
		}
	})
	t.Run("per subject", func(t *testing.T) {
		o.calls.Store(0)
		h := newTestCache(t, Options{Now: newClock().Now, PerSubject: true}).Middleware(o)
		for range 2 {
			if w := withSubject(h, "alice", "alice"); w.Body.String() != "account of alice" {
				t.Fatalf("alice got %q", w.Body)
			}
			if w := withSubject(h, "bob", "bob"); w.Body.String() != "account of bob" {
				t.Fatalf("bob got %q", w.Body)
			}
		}
		if o.calls.Load() != 2 {
			t.Fatalf("calls = %d, want one per subject", o.calls.Load())
		}
		// A request without a subject is never served a subject's entry.
		if w := get(h, "GET", "/me", "Authorization: mallory"); w.Body.String() != "account of mallory" {
			t.Fatalf("no subject got %q", w.Body)
		}
	})
}

func TestUnkeyedInputPoisoning(t *testing.T) {
	o := &origin{}
	o.set(func(w http.ResponseWriter, r *http.Request) {
		body := "host=" + r.Header.Get("X-Forwarded-Host") + " url=" + r.Header.Get("X-Original-Url") +
			" q=" + r.URL.RawQuery + " tenant=" + r.Header.Get("X-Tenant")
		static(200, body, "Cache-Control: max-age=60")(w, r)
	})
	t.Run("stripped headers and params", func(t *testing.T) {
		o.calls.Store(0)
		h := newTestCache(t, Options{Now: newClock().Now, IgnoreQueryParams: []string{"utm_source"}}).Middleware(o)
		attacker := get(h, "GET", "/page?b=2&utm_source=evil&a=1",
			"X-Forwarded-Host: evil.example", "X-Original-URL: /admin")
		victim := get(h, "GET", "/page?a=1&b=2")
		want := "host= url= q=a=1&b=2 tenant="
		if attacker.Body.String() != want || victim.Body.String() != want {
			t.Fatalf("attacker got %q, victim got %q; want both %q", attacker.Body, victim.Body, want)
		}
		if o.calls.Load() != 1 {
			t.Fatalf("calls = %d, want 1 (same key)", o.calls.Load())
		}
	})
	t.Run("key headers", func(t *testing.T) {
		o.calls.Store(0)
		h := newTestCache(t, Options{Now: newClock().Now, KeyHeaders: []string{"x-tenant"}}).Middleware(o)
		a := get(h, "GET", "/page", "X-Tenant: a")
		b := get(h, "GET", "/page", "X-Tenant: b")
		if !strings.HasSuffix(a.Body.String(), "tenant=a") || !strings.HasSuffix(b.Body.String(), "tenant=b") || o.calls.Load() != 2 {
			t.Fatalf("a=%q b=%q calls=%d", a.Body, b.Body, o.calls.Load())
		}
	})
	t.Run("scheme", func(t *testing.T) {
		// The scheme is the gateway's decision in RequestInfo, not a
		// header: two decisions, two entries; a client's header, none.
		o.calls.Store(0)
		h := newTestCache(t, Options{Now: newClock().Now}).Middleware(o)
		for _, scheme := range []string{"http", "https", "https"} {
			r := httptest.NewRequest("GET", "/page", nil)
			r.Header.Set("X-Forwarded-Proto", "http") // ignored: the decision is https or http
			info := &pylon.RequestInfo{Scheme: scheme, Host: r.Host}
			h.ServeHTTP(httptest.NewRecorder(), r.WithContext(pylon.NewContext(r.Context(), info)))
		}
		if o.calls.Load() != 2 {
			t.Fatalf("calls = %d, want 2: one entry per decided scheme", o.calls.Load())
		}
	})
}

func TestLargeResponseStreamsUncached(t *testing.T) {
	const size = 20 << 20
	for _, withLength := range []bool{true, false} {
		t.Run(map[bool]string{true: "content-length", false: "chunked"}[withLength], func(t *testing.T) {
			c := newTestCache(t, Options{Now: newClock().Now, MaxObjectSize: 1 << 20})
			o := &origin{}
			chunk := []byte(strings.Repeat("x", 32<<10))
			o.set(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Cache-Control", "max-age=60")
				if withLength {
					w.Header().Set("Content-Length", itoa(size))
				}
				for n := 0; n < size; n += len(chunk) {
					_, _ = w.Write(chunk)
				}
			})
			w := &countingWriter{h: make(http.Header)}
			r := httptest.NewRequest("GET", "/big", nil)
			c.Middleware(o).ServeHTTP(w, r)
			if w.n != size || w.code != 200 {
				t.Fatalf("served %d bytes, status %d", w.n, w.code)
			}
			if st := w.h.Values("Cache-Status"); len(st) != 1 || !strings.Contains(st[0], "detail=too-large") && withLength {
				t.Errorf("Cache-Status = %q", st)
			}
			if ms := c.store.(*MemoryStore); ms.Bytes() > 4096 {
				t.Errorf("store holds %d bytes", ms.Bytes())
			}
			c.Middleware(o).ServeHTTP(&countingWriter{h: make(http.Header)}, r)
			if o.calls.Load() != 2 {
				t.Errorf("calls = %d: the large response was stored", o.calls.Load())
			}
		})
	}
}

// countingWriter counts body bytes without keeping them, and records the
// most bytes a capture buffer held.
type countingWriter struct {
	h    http.Header
	code int
	n    int
}

func (w *countingWriter) Header() http.Header { return w.h }
func (w *countingWriter) WriteHeader(c int) {
	if w.code == 0 {
		w.code = c
	}
}
func (w *countingWriter) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.code = 200
	}
	w.n += len(p)
	return len(p), nil
}

func TestCaptureBufferBounded(t *testing.T) {
	c := newTestCache(t, Options{Now: newClock().Now, MaxObjectSize: 64 << 10})
	f := &fill{c: c, r: httptest.NewRequest("GET", "/", nil), fwd: "fwd=miss"}
	cw := &captureWriter{w: &countingWriter{h: make(http.Header)}, header: http.Header{"Cache-Control": {"max-age=60"}}, f: f}
	chunk := make([]byte, 10<<10)
	maxCap := 0
	for range 100 {
		_, _ = cw.Write(chunk)
		maxCap = max(maxCap, cap(cw.buf))
	}
	if maxCap > 64<<10 {
		t.Fatalf("capture buffer grew to %d bytes, limit %d", maxCap, 64<<10)
	}
	if cw.buffering || cw.buf != nil || f.reason != "too-large" {
		t.Fatalf("buffer not abandoned: buffering %v, reason %q", cw.buffering, f.reason)
	}
}

func TestBypass(t *testing.T) {
	tests := []struct {
		name   string
		method string
		req    []string
		opts   Options
		status string
	}{
		{"if-unmodified-since", "GET", []string{"If-Unmodified-Since: Fri, 02 Jan 2026 03:04:05 GMT"}, Options{}, "pylon; fwd=bypass; detail=precondition"},
		{"if-match", "GET", []string{`If-Match: "x"`}, Options{}, "pylon; fwd=bypass; detail=precondition"},
		{"upgrade", "GET", []string{"Upgrade: websocket", "Connection: Upgrade"}, Options{}, "pylon; fwd=bypass; detail=upgrade"},
		{"rule", "GET", nil, Options{Bypass: func(r *http.Request) bool { return true }}, "pylon; fwd=bypass; detail=rule"},
		{"key hook", "GET", nil, Options{Key: func(*http.Request, string) string { return "" }}, "pylon; fwd=bypass; detail=key"},
		{"options", "OPTIONS", nil, Options{}, "pylon; fwd=method"},
		{"no-cache request", "GET", []string{"Cache-Control: no-cache"}, Options{}, "pylon; fwd=request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.Now = newClock().Now
			c := newTestCache(t, tt.opts)
			o := &origin{}
			o.set(func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get("Range") != "" {
					static(206, "bo", "Cache-Control: max-age=60", "Content-Range: bytes 0-1/4")(w, r)
					return
				}
				static(200, "body", "Cache-Control: max-age=60")(w, r)
			})
			h := c.Middleware(o)
			get(h, "GET", "/a") // a stored response the bypassed request must not see
			w := get(h, tt.method, "/a", tt.req...)
			if !strings.HasPrefix(status(w), tt.status) {
				t.Fatalf("Cache-Status = %q, want %q", status(w), tt.status)
			}
			if o.calls.Load() != 2 {
				t.Fatalf("calls = %d: the request was not forwarded", o.calls.Load())
			}
		})
	}
	t.Run("range response not stored", func(t *testing.T) {
		c := newTestCache(t, Options{Now: newClock().Now})
		o := &origin{}
		o.set(static(206, "bo", "Cache-Control: max-age=60", "Content-Range: bytes 0-1/4"))
		h := c.Middleware(o)
		get(h, "GET", "/a", "Range: bytes=0-1")
		o.set(static(200, "body", "Cache-Control: max-age=60"))
		if w := get(h, "GET", "/a"); w.Code != 200 || w.Body.String() != "body" {
			t.Fatalf("after a Range request: %d %q", w.Code, w.Body)
		}
	})
}

// only-if-cached never reaches the origin, also for a URL the cache knows it
// cannot store (a pass marker): RFC 9111 §5.2.1.7.
func TestOnlyIfCachedUnderPassMarker(t *testing.T) {
	c := newTestCache(t, Options{})
	o := &origin{}
	o.set(static(200, "body", "Cache-Control: max-age=60", "Set-Cookie: s=1"))
	h := c.Middleware(o)
	if w := get(h, "GET", "/p"); w.Code != 200 || !strings.Contains(w.Header().Get("Cache-Status"), "set-cookie") {
		t.Fatalf("first: %d %q", w.Code, w.Header().Get("Cache-Status"))
	}
	w := get(h, "GET", "/p", "Cache-Control: only-if-cached")
	if w.Code != http.StatusGatewayTimeout || o.calls.Load() != 1 {
		t.Fatalf("only-if-cached under a pass marker: %d, %d origin calls; want 504 and 1", w.Code, o.calls.Load())
	}
}

func TestRequestDirectives(t *testing.T) {
	clk := newClock()
	c := newTestCache(t, Options{Now: clk.Now})
	o := &origin{}
	o.set(static(200, "body", "Cache-Control: max-age=60"))
	h := c.Middleware(o)

	w := get(h, "GET", "/a", "Cache-Control: only-if-cached")
	if w.Code != http.StatusGatewayTimeout || w.Header().Get("Content-Type") != pylon.ProblemContentType || o.calls.Load() != 0 {
		t.Fatalf("only-if-cached miss: %d %q calls %d", w.Code, w.Header().Get("Content-Type"), o.calls.Load())
	}
	get(h, "GET", "/a")
	clk.Advance(30 * time.Second)
	for _, tc := range []struct {
		req   string
		calls int64
	}{
		{"Cache-Control: only-if-cached", 1},
		{"Cache-Control: max-age=40", 1},
		{"Cache-Control: max-age=10", 2},
		{"Cache-Control: min-fresh=61", 3},
		{"Pragma: no-cache", 4},
		{"Cache-Control: no-cache", 5},
	} {
		get(h, "GET", "/a", tc.req)
		if o.calls.Load() != tc.calls {
			t.Fatalf("%s: calls %d, want %d", tc.req, o.calls.Load(), tc.calls)
		}
	}
	t.Run("ignored", func(t *testing.T) {
		c := newTestCache(t, Options{Now: newClock().Now, IgnoreRequestDirectives: true})
		o := &origin{}
		o.set(static(200, "body", "Cache-Control: max-age=60"))
		h := c.Middleware(o)
		get(h, "GET", "/a")
		get(h, "GET", "/a", "Cache-Control: no-cache")
		if o.calls.Load() != 1 {
			t.Fatalf("calls = %d", o.calls.Load())
		}
	})
	t.Run("max-stale", func(t *testing.T) {
		clk := newClock()
		c := newTestCache(t, Options{Now: clk.Now})
		o := &origin{}
		o.set(static(200, "body", "Cache-Control: max-age=10", `Etag: "1"`))
		h := c.Middleware(o)
		get(h, "GET", "/a")
		clk.Advance(15 * time.Second)
		w := get(h, "GET", "/a", "Cache-Control: max-stale=10")
		if o.calls.Load() != 1 || !strings.Contains(status(w), "detail=max-stale") {
			t.Fatalf("calls %d, Cache-Status %q", o.calls.Load(), status(w))
		}
	})
}

func TestInvalidationByUnsafeMethod(t *testing.T) {
	for _, tc := range []struct {
		method     string
		code       int
		invalidate bool
	}{
		{"POST", 200, true}, {"PUT", 204, true}, {"DELETE", 200, true}, {"PATCH", 303, true},
		{"POST", 500, false}, {"DELETE", 404, false},
	} {
		t.Run(tc.method+" "+itoa(int64(tc.code)), func(t *testing.T) {
			c := newTestCache(t, Options{Now: newClock().Now})
			o := &origin{}
			o.set(func(w http.ResponseWriter, r *http.Request) {
				if r.Method != "GET" {
					w.WriteHeader(tc.code)
					return
				}
				static(200, "body", "Cache-Control: max-age=60", "Vary: Accept")(w, r)
			})
			h := c.Middleware(o)
			get(h, "GET", "/a?x=1")
			w := get(h, tc.method, "/a?x=1")
			if status(w) != "pylon; fwd=method" {
				t.Errorf("Cache-Status = %q", status(w))
			}
			get(h, "GET", "/a?x=1")
			if got := o.calls.Load() == 3; got != tc.invalidate {
				t.Fatalf("invalidated = %v, want %v", got, tc.invalidate)
			}
		})
	}
}

func TestPurge(t *testing.T) {
	c := newTestCache(t, Options{Now: newClock().Now})
	o := &origin{}
	o.set(static(200, "body", "Cache-Control: max-age=60", "Vary: Accept"))
	h := c.Middleware(o)
	for _, p := range []string{"/orders/1", "/orders/2", "/users/1"} {
		get(h, "GET", "http://api.example.com"+p, "Accept: a")
		get(h, "GET", "http://api.example.com"+p, "Accept: b")
	}
	key := c.Key(httptest.NewRequest("GET", "http://API.example.com/orders/1", nil))
	if key != "GET http://api.example.com/orders/1" {
		t.Fatalf("Key = %q", key)
	}
	ctx := context.Background()
	if err := c.Purge(ctx, key); err != nil {
		t.Fatal(err)
	}
	n, err := c.PurgePrefix(ctx, "GET http://api.example.com/orders/")
	if err != nil || n != 3 { // /orders/2: marker and two variants
		t.Fatalf("PurgePrefix = %d, %v", n, err)
	}
	before := o.calls.Load()
	get(h, "GET", "http://api.example.com/users/1", "Accept: a")
	get(h, "GET", "http://api.example.com/orders/1", "Accept: a")
	get(h, "GET", "http://api.example.com/orders/2", "Accept: b")
	if got := o.calls.Load() - before; got != 2 {
		t.Fatalf("backend calls after purge = %d, want 2", got)
	}
}

// failingStore fails every operation, like an unreachable Redis.
type failingStore struct{}

var errDown = errors.New("store down")

func (failingStore) Get(context.Context, string) (*Entry, error)              { return nil, errDown }
func (failingStore) Set(context.Context, string, *Entry, time.Duration) error { return errDown }
func (failingStore) Delete(context.Context, string) error                     { return errDown }
func (failingStore) DeletePrefix(context.Context, string) (int, error)        { return 0, errDown }

func TestStoreFailureBypasses(t *testing.T) {
	c := newTestCache(t, Options{Now: newClock().Now, Store: failingStore{}})
	o := &origin{}
	o.set(static(200, "body", "Cache-Control: max-age=60"))
	h := c.Middleware(o)
	for range 2 {
		r := httptest.NewRequest("GET", "/a", nil)
		info := &pylon.RequestInfo{}
		r = r.WithContext(pylon.NewContext(r.Context(), info))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != 200 || w.Body.String() != "body" || status(w) != "pylon; fwd=bypass; detail=store-unavailable" || info.Cache != StatusBypass {
			t.Fatalf("got %d %q %q %q", w.Code, w.Body, status(w), info.Cache)
		}
	}
	get(h, "POST", "/a") // invalidation against a failing store does not fail the request
}

// setFailingStore reads like an empty store and fails every write, like a
// Redis that answers reads from a replica while its primary is gone.
type setFailingStore struct{ *MemoryStore }

func (setFailingStore) Set(context.Context, string, *Entry, time.Duration) error { return errDown }

// While the store fails, every request still bypasses (or is not stored)
// as before, but "cache: store unavailable" is logged at most once per 10
// seconds, with the number of failures not logged since.
func TestStoreFailuresLoggedOncePerInterval(t *testing.T) {
	for _, tc := range []struct {
		name   string
		store  Store
		status string
	}{
		{"reads fail", failingStore{}, "pylon; fwd=bypass; detail=store-unavailable"},
		{"writes fail", setFailingStore{NewMemoryStore(MemoryOptions{})}, "pylon; fwd=uri-miss"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := newClock()
			logs := &logRecorder{}
			c := newTestCache(t, Options{Now: clk.Now, Store: tc.store, Logger: slog.New(logs)})
			o := &origin{}
			o.set(static(200, "body", "Cache-Control: max-age=60"))
			h := c.Middleware(o)
			send := func() {
				t.Helper()
				if w := get(h, "GET", "/a"); w.Code != 200 || w.Body.String() != "body" || !strings.HasPrefix(status(w), tc.status) {
					t.Fatalf("got %d %q, Cache-Status %q", w.Code, w.Body, status(w))
				}
			}
			want := []string{"cache: store unavailable error=store down suppressed=0"}
			for range 5 {
				send()
			}
			clk.Advance(storeLogInterval - time.Millisecond)
			send()
			if got := logs.records(); !slices.Equal(got, want) {
				t.Fatalf("after 6 failures within the interval, logged %q, want %q", got, want)
			}
			clk.Advance(time.Millisecond)
			send()
			want = append(want, "cache: store unavailable error=store down suppressed=5")
			if got := logs.records(); !slices.Equal(got, want) {
				t.Fatalf("after the interval, logged %q, want %q", got, want)
			}
			if o.calls.Load() != 7 {
				t.Fatalf("backend calls = %d, want 7", o.calls.Load())
			}
		})
	}
}

func TestInfoCache(t *testing.T) {
	clk := newClock()
	c := newTestCache(t, Options{Now: clk.Now})
	o := &origin{}
	o.set(static(200, "body", "Cache-Control: max-age=10", `Etag: "1"`))
	h := c.Middleware(o)
	do := func(method string, fields ...string) string {
		r := httptest.NewRequest(method, "/a", nil)
		for _, f := range fields {
			k, v, _ := strings.Cut(f, ":")
			r.Header.Set(k, strings.TrimSpace(v))
		}
		info := &pylon.RequestInfo{}
		h.ServeHTTP(httptest.NewRecorder(), r.WithContext(pylon.NewContext(r.Context(), info)))
		return info.Cache
	}
	if got := do("GET"); got != StatusMiss {
		t.Errorf("miss: %q", got)
	}
	if got := do("GET"); got != StatusHit {
		t.Errorf("hit: %q", got)
	}
	clk.Advance(11 * time.Second)
	o.set(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(304) })
	if got := do("GET"); got != StatusRevalidated {
		t.Errorf("revalidated: %q", got)
	}
	if got := do("GET", "Range: bytes=0-1"); got != StatusHit {
		t.Errorf("range: %q", got)
	}
	if got := do("POST"); got != StatusBypass {
		t.Errorf("post: %q", got)
	}
	if got := do("GET", `If-Match: "x"`); got != StatusBypass {
		t.Errorf("if-match: %q", got)
	}
}

func TestNewValidates(t *testing.T) {
	for _, opts := range []Options{
		{MaxBytes: -1},
		{MaxObjectSize: -1},
		{DefaultTTL: -time.Second},
		{MaxBackgroundRefreshes: -1},
		{QueryParams: []string{"a"}, IgnoreQueryParams: []string{"b"}},
		{Name: "bad name"},
		{MaxBytes: 1 << 20, MaxObjectSize: 2 << 20},
	} {
		if _, err := New(opts); err == nil || !strings.HasPrefix(err.Error(), "cache: ") {
			t.Errorf("New(%+v) = %v", opts, err)
		}
	}
}

func TestBadInputNoPanic(t *testing.T) {
	c := newTestCache(t, Options{Now: newClock().Now})
	o := &origin{}
	o.set(static(200, "body", `Cache-Control: max-age="60", s-maxage=abc, stale-if-error=-1, ,,=, "unterminated`,
		"Expires: nonsense", "Date: nonsense", "Age: -5", "Vary: ,,", "Content-Length: 4"))
	h := c.Middleware(o)
	for _, target := range []string{"/a?%zz=1", "/a?a;b", "/a?=&&=", "/a?" + strings.Repeat("x", 9000)} {
		if w := get(h, "GET", target); w.Code != 200 {
			t.Errorf("%q: %d", target, w.Code)
		}
	}
	if w := get(h, "GET", "/b"); w.Code != 200 {
		t.Fatal(w.Code)
	}
}

// A body of unknown length is grown by doubling while it is captured; what
// is stored holds no more memory than the store counts.
func TestStoredBodyNotOverAllocated(t *testing.T) {
	st := &setRecorder{Store: NewMemoryStore(MemoryOptions{})}
	c := newTestCache(t, Options{Store: st})
	chunk := strings.Repeat("z", 33<<10)
	h := c.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		for i := 0; i < len(chunk); i += 1 << 10 { // 33 writes: the buffer doubles to 64 KiB
			io.WriteString(w, chunk[i:i+1<<10])
		}
	}))
	if w := get(h, "GET", "/u"); w.Body.Len() != len(chunk) {
		t.Fatalf("%d bytes", w.Body.Len())
	}
	e := st.biggest()
	if e == nil || len(e.body) != len(chunk) {
		t.Fatalf("not stored whole: %v", e)
	}
	if cap(e.body) > len(e.body)+len(e.body)/8 {
		t.Errorf("stored body len %d cap %d", len(e.body), cap(e.body))
	}
}

// setRecorder is a Store that remembers the entries set in it.
type setRecorder struct {
	Store
	mu  sync.Mutex
	set []*Entry
}

func (s *setRecorder) Set(ctx context.Context, key string, e *Entry, ttl time.Duration) error {
	s.mu.Lock()
	s.set = append(s.set, e)
	s.mu.Unlock()
	return s.Store.Set(ctx, key, e, ttl)
}

func (s *setRecorder) biggest() *Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b *Entry
	for _, e := range s.set {
		if b == nil || len(e.body) > len(b.body) {
			b = e
		}
	}
	return b
}
