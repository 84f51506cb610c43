package cache

import (
	"io"
	"mime"
	"mime/multipart"
	"strings"
	"testing"
)

const rangeBody = "0123456789abcdefghij" // 20 bytes

// TestRangeFromStored checks Range requests answered from a stored
// complete 200 (RFC 9110 §14): 206 for one range (§14.4, §15.3.7.1),
// multipart/byteranges for several (§15.3.7.2), 416 when none is
// satisfiable (§15.5.17), the whole 200 when the field is to be ignored
// (§14.2), and If-Range (§13.1.5).
func TestRangeFromStored(t *testing.T) {
	const lm = "Thu, 01 Jan 2026 00:00:00 GMT" // a day before Date: strong (§8.8.2.2)
	tests := []struct {
		name    string
		req     []string
		code    int
		body    string
		crange  string
		parts   []string // multipart bodies
		pranges []string
	}{
		{"§14.1.2 first-last", []string{"Range: bytes=0-4"}, 206, "01234", "bytes 0-4/20", nil, nil},
		{"§14.1.2 open-ended", []string{"Range: bytes=15-"}, 206, "fghij", "bytes 15-19/20", nil, nil},
		{"§14.1.2 suffix", []string{"Range: bytes=-3"}, 206, "hij", "bytes 17-19/20", nil, nil},
		{"§14.1.2 last-pos beyond the end", []string{"Range: bytes=18-100"}, 206, "ij", "bytes 18-19/20", nil, nil},
		{"§14.1.2 suffix longer than the body", []string{"Range: bytes=-50"}, 206, rangeBody, "bytes 0-19/20", nil, nil},
		{"§14.1 unit is case-insensitive", []string{"Range: Bytes=1-1"}, 206, "1", "bytes 1-1/20", nil, nil},
		{"§14.2 unsatisfiable ranges dropped", []string{"Range: bytes=50-60, 2-3"}, 206, "23", "bytes 2-3/20", nil, nil},
		{"§15.3.7.2 several ranges", []string{"Range: bytes=0-1, 5-6"}, 206, "", "", []string{"01", "56"}, []string{"bytes 0-1/20", "bytes 5-6/20"}},
		{"§15.5.17 unsatisfiable", []string{"Range: bytes=20-"}, 416, "", "bytes */20", nil, nil},
		{"§15.5.17 zero suffix", []string{"Range: bytes=-0"}, 416, "", "bytes */20", nil, nil},
		{"§14.2 other unit ignored", []string{"Range: items=0-1"}, 200, rangeBody, "", nil, nil},
		{"§14.2 invalid range ignored", []string{"Range: bytes=5-1"}, 200, rangeBody, "", nil, nil},
		{"§14.2 garbage ignored", []string{"Range: bytes=a-b"}, 200, rangeBody, "", nil, nil},
		{"§14.2 more than the body ignored", []string{"Range: bytes=0-19, 0-19"}, 200, rangeBody, "", nil, nil},
		{"§14.2 too many ranges ignored", []string{"Range: bytes=" + strings.Repeat("0-0,", maxRanges) + "1-1"}, 200, rangeBody, "", nil, nil},
		{"§14.2 HEAD ignores Range", nil, 0, "", "", nil, nil},
		{"§13.1.5 If-Range strong ETag matches", []string{"Range: bytes=0-1", `If-Range: "v1"`}, 206, "01", "bytes 0-1/20", nil, nil},
		{"§13.1.5 If-Range other ETag", []string{"Range: bytes=0-1", `If-Range: "v0"`}, 200, rangeBody, "", nil, nil},
		{"§13.1.5 If-Range weak ETag never matches", []string{"Range: bytes=0-1", `If-Range: W/"v1"`}, 200, rangeBody, "", nil, nil},
		{"§13.1.5 If-Range date equal to a strong Last-Modified", []string{"Range: bytes=0-1", "If-Range: " + lm}, 206, "01", "bytes 0-1/20", nil, nil},
		{"§13.1.5 If-Range other date", []string{"Range: bytes=0-1", "If-Range: Thu, 01 Jan 2026 00:00:01 GMT"}, 200, rangeBody, "", nil, nil},
		{"§13.1.5 If-Range invalid date", []string{"Range: bytes=0-1", "If-Range: Thu, 01 Jan 2026 0:00:00 GMT"}, 200, rangeBody, "", nil, nil},
		{"§13.1.5 If-Range without Range is ignored", []string{`If-Range: "v0"`}, 200, rangeBody, "", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestCache(t, Options{Now: newClock().Now})
			o := &origin{}
			o.set(static(200, rangeBody, "Cache-Control: max-age=60", "Content-Type: text/plain", `Etag: "v1"`,
				"Last-Modified: "+lm, "Date: Fri, 02 Jan 2026 03:04:05 GMT"))
			h := c.Middleware(o)
			get(h, "GET", "/a")
			if tt.code == 0 {
				w := get(h, "HEAD", "/a", "Range: bytes=0-1")
				if w.Code != 200 || w.Header().Get("Content-Range") != "" || o.calls.Load() != 1 {
					t.Fatalf("HEAD with Range: %d %q", w.Code, w.Header().Get("Content-Range"))
				}
				return
			}
			w := get(h, "GET", "/a", tt.req...)
			if o.calls.Load() != 1 {
				t.Fatalf("forwarded to the origin: %q", status(w))
			}
			if w.Code != tt.code {
				t.Fatalf("status %d, want %d; body %q", w.Code, tt.code, w.Body)
			}
			if got := w.Header().Get("Content-Range"); got != tt.crange {
				t.Errorf("Content-Range %q, want %q", got, tt.crange)
			}
			if w.Header().Get("Age") == "" || !strings.Contains(status(w), "hit") {
				t.Errorf("not served as a hit: Age %q, Cache-Status %q", w.Header().Get("Age"), status(w))
			}
			if tt.code == 416 {
				return
			}
			if cl := w.Header().Get("Content-Length"); cl != itoa(int64(w.Body.Len())) {
				t.Errorf("Content-Length %s, body %d bytes", cl, w.Body.Len())
			}
			if tt.parts == nil {
				if w.Body.String() != tt.body {
					t.Errorf("body %q, want %q", w.Body, tt.body)
				}
				return
			}
			mt, params, err := mime.ParseMediaType(w.Header().Get("Content-Type"))
			if err != nil || mt != "multipart/byteranges" {
				t.Fatalf("Content-Type %q", w.Header().Get("Content-Type"))
			}
			mr := multipart.NewReader(w.Body, params["boundary"])
			for i := range tt.parts {
				p, err := mr.NextPart()
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(p)
				if string(b) != tt.parts[i] || p.Header.Get("Content-Range") != tt.pranges[i] || p.Header.Get("Content-Type") != "text/plain" {
					t.Errorf("part %d: %q %q %q", i, b, p.Header.Get("Content-Range"), p.Header.Get("Content-Type"))
				}
			}
			if _, err := mr.NextPart(); err != io.EOF {
				t.Errorf("more parts: %v", err)
			}
		})
	}
	t.Run("§13.1.5 weak Last-Modified: If-Range date does not hold", func(t *testing.T) {
		c := newTestCache(t, Options{Now: newClock().Now})
		o := &origin{}
		// Last-Modified equal to Date is weak (RFC 9110 §8.8.2.2).
		o.set(static(200, rangeBody, "Cache-Control: max-age=60", "Last-Modified: Fri, 02 Jan 2026 03:04:05 GMT", "Date: Fri, 02 Jan 2026 03:04:05 GMT"))
		h := c.Middleware(o)
		get(h, "GET", "/a")
		if w := get(h, "GET", "/a", "Range: bytes=0-1", "If-Range: Fri, 02 Jan 2026 03:04:05 GMT"); w.Code != 200 || w.Body.String() != rangeBody {
			t.Fatalf("%d %q", w.Code, w.Body)
		}
	})
	t.Run("nothing stored: forwarded, the 206 not stored", func(t *testing.T) {
		c := newTestCache(t, Options{Now: newClock().Now})
		o := &origin{}
		o.set(static(206, "01", "Cache-Control: max-age=60", "Content-Range: bytes 0-1/20"))
		h := c.Middleware(o)
		if w := get(h, "GET", "/a", "Range: bytes=0-1"); w.Code != 206 || !strings.Contains(status(w), "detail=range") {
			t.Fatalf("%d %q", w.Code, status(w))
		}
		o.set(static(200, rangeBody, "Cache-Control: max-age=60"))
		if w := get(h, "GET", "/a"); w.Code != 200 || w.Body.String() != rangeBody {
			t.Fatalf("after a forwarded Range request: %d %q", w.Code, w.Body)
		}
	})
	t.Run("§14.2 non-200 stored response: Range ignored", func(t *testing.T) {
		c := newTestCache(t, Options{Now: newClock().Now})
		o := &origin{}
		o.set(static(404, "missing", "Cache-Control: max-age=60"))
		h := c.Middleware(o)
		get(h, "GET", "/a")
		if w := get(h, "GET", "/a", "Range: bytes=0-1"); w.Code != 404 || w.Body.String() != "missing" {
			t.Fatalf("%d %q", w.Code, w.Body)
		}
	})
}

func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"bytes=0-1", "bytes=-5", "bytes=3-, 0-0", "bytes=,,1-2"} {
		f.Add(s, int64(20))
	}
	f.Fuzz(func(t *testing.T, s string, n int64) {
		if n < 0 || n > 1<<40 {
			return
		}
		ranges, ok := parseRange([]string{s}, n)
		if !ok {
			return
		}
		var total int64
		for _, r := range ranges {
			if r.start < 0 || r.end > n || r.start >= r.end {
				t.Fatalf("%q over %d: bad range %+v", s, n, r)
			}
			total += r.end - r.start
		}
		if total > n || len(ranges) > maxRanges {
			t.Fatalf("%q over %d: %d bytes in %d ranges", s, n, total, len(ranges))
		}
	})
}
