package cache

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestUpdateFrom304 checks RFC 9111 §3.2 and §4.3.4: a 304 that selects the
// stored response replaces its header fields, except those never stored
// (§3.1), Content-Length and Content-Range; one that does not select it
// makes the cache ask again without conditions.
func TestUpdateFrom304(t *testing.T) {
	stored := []string{"Cache-Control: max-age=10", `Etag: "v1"`, "Last-Modified: Thu, 01 Jan 2026 00:00:00 GMT",
		"Content-Type: text/plain", "Test-Header: A", "X-Kept: k"}
	t.Run("§3.2 fields replaced and kept", func(t *testing.T) {
		clk := newClock()
		c := newTestCache(t, Options{Now: clk.Now})
		o := &origin{}
		o.set(static(200, "body", stored...))
		h := c.Middleware(o)
		get(h, "GET", "/a")
		clk.Advance(20 * time.Second)
		o.set(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("If-None-Match") != `"v1"` {
				t.Errorf("not a conditional request: %v", r.Header)
			}
			hh := w.Header()
			hh["Cache-Control"] = []string{"max-age=3600"}
			hh["Etag"] = []string{`"v1"`}
			hh["Test-Header"] = []string{"B"}
			hh["Content-Type"] = []string{"text/x-new"}
			hh["Content-Length"] = []string{"99"}
			hh["Content-Range"] = []string{"bytes 0-1/2"}
			hh["Connection"] = []string{"X-Hop"}
			hh["X-Hop"] = []string{"hop"}
			hh["Set-Cookie"] = []string{"s=1"}
			hh["Proxy-Authenticate"] = []string{"Basic"}
			w.WriteHeader(304)
		})
		for i, want := range []string{"revalidated", "hit"} {
			w := get(h, "GET", "/a")
			if !strings.Contains(status(w), want) && !(want == "revalidated" && strings.Contains(status(w), "fwd-status=304")) {
				t.Fatalf("%d: Cache-Status %q, want %s", i, status(w), want)
			}
			hh := w.Header()
			if w.Code != 200 || w.Body.String() != "body" || hh.Get("Content-Length") != "4" {
				t.Fatalf("%d: %d %q Content-Length %q", i, w.Code, w.Body, hh.Get("Content-Length"))
			}
			if hh.Get("Test-Header") != "B" || hh.Get("Content-Type") != "text/x-new" || hh.Get("X-Kept") != "k" ||
				hh.Get("Last-Modified") == "" {
				t.Errorf("%d: fields not updated as §3.2 says: %v", i, hh)
			}
			for _, k := range []string{"Content-Range", "X-Hop", "Set-Cookie", "Proxy-Authenticate"} {
				if hh.Get(k) != "" {
					t.Errorf("%d: %s from the 304 was stored", i, k)
				}
			}
		}
		clk.Advance(time.Hour - time.Minute)
		get(h, "GET", "/a")
		if o.calls.Load() != 2 {
			t.Fatalf("the 304's max-age=3600 did not refresh the entry: %d calls", o.calls.Load())
		}
	})
	tests := []struct {
		name    string
		fields  []string // the 304's validators
		selects bool
	}{
		{"§4.3.4 same strong ETag", []string{`Etag: "v1"`}, true},
		{"§4.3.4 other strong ETag", []string{`Etag: "v2"`}, false},
		{"§4.3.4 weak ETag, weak match", []string{`Etag: W/"v1"`}, true},
		{"§4.3.4 weak ETag, no match", []string{`Etag: W/"v2"`}, false},
		{"§4.3.4 same Last-Modified", []string{"Last-Modified: Thu, 01 Jan 2026 00:00:00 GMT"}, true},
		{"§4.3.4 other Last-Modified", []string{"Last-Modified: Thu, 01 Jan 2026 00:00:01 GMT"}, false},
		{"§4.3.4 no validator", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			c := newTestCache(t, Options{Now: clk.Now})
			o := &origin{}
			o.set(static(200, "body", stored...))
			h := c.Middleware(o)
			get(h, "GET", "/a")
			clk.Advance(20 * time.Second)
			o.set(func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get("If-None-Match") == "" {
					static(200, "new", "Cache-Control: max-age=60", `Etag: "v2"`)(w, r)
					return
				}
				static(304, "", append([]string{"Cache-Control: max-age=60"}, tt.fields...)...)(w, r)
			})
			w := get(h, "GET", "/a")
			want, calls := "body", int64(2)
			if !tt.selects {
				want, calls = "new", 3
			}
			if w.Code != 200 || w.Body.String() != want || o.calls.Load() != calls {
				t.Fatalf("%d %q after %d calls, want %q after %d (Cache-Status %q)", w.Code, w.Body, o.calls.Load(), want, calls, status(w))
			}
			if w := get(h, "GET", "/a"); w.Body.String() != want || o.calls.Load() != calls {
				t.Fatalf("then: %q after %d calls", w.Body, o.calls.Load())
			}
		})
	}
}
