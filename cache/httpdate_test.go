package cache

import (
	"net/http"
	"testing"
	"time"
)

// TestParseHTTPDate checks the HTTP-date grammar of RFC 9110 §5.6.7: the
// IMF-fixdate, and the obsolete rfc850-date and asctime-date forms a
// recipient MUST accept; anything else is invalid.
func TestParseHTTPDate(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	want := time.Date(1994, 11, 6, 8, 49, 37, 0, time.UTC)
	tests := []struct {
		in   string
		ok   bool
		want time.Time
	}{
		{"Sun, 06 Nov 1994 08:49:37 GMT", true, want},                                        // IMF-fixdate
		{"Sunday, 06-Nov-94 08:49:37 GMT", true, want},                                       // rfc850-date
		{"Sun Nov  6 08:49:37 1994", true, want},                                             // asctime-date, SP DIGIT day
		{"Sun Nov 06 08:49:37 1994", true, want},                                             // asctime-date, 2DIGIT day
		{"Thu, 31 Dec 2026 23:59:60 GMT", true, time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)}, // leap second
		// rfc850: a year more than 50 years ahead is in the past century.
		{"Wednesday, 01-Jan-76 00:00:00 GMT", true, time.Date(2076, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"Saturday, 01-Jan-77 00:00:00 GMT", true, time.Date(1977, 1, 1, 0, 0, 0, 0, time.UTC)},

		{"Thu, 18  Aug  2050 02:01:18 GMT", false, time.Time{}}, // runs of spaces
		{"Thu, 18 Aug 2050 2:01:18 GMT", false, time.Time{}},    // 1-digit hour
		{"Thu, 18 Aug 2050 02:1:18 GMT", false, time.Time{}},
		{"Thu, 8 Aug 2050 02:01:18 GMT", false, time.Time{}},  // 1-digit day
		{"thu, 18 Aug 2050 02:01:18 GMT", false, time.Time{}}, // day-name is case-sensitive
		{"Thu, 18 aug 2050 02:01:18 GMT", false, time.Time{}},
		{"Thu, 18 Aug 2050 02:01:18 gmt", false, time.Time{}},
		{"Thu, 18 Aug 2050 02:01:18 UTC", false, time.Time{}},
		{"Thu, 18 Aug 2050 02:01:18 +0000", false, time.Time{}},
		{"Thu, 18 Aug 2050 24:00:00 GMT", false, time.Time{}},
		{"Thu, 18 Aug 2050 23:60:00 GMT", false, time.Time{}},
		{"Thu, 31 Feb 2050 02:01:18 GMT", false, time.Time{}},
		{"Thu, 00 Feb 2050 02:01:18 GMT", false, time.Time{}},
		{"Thu,18 Aug 2050 02:01:18 GMT ", false, time.Time{}},
		{" Thu, 18 Aug 2050 02:01:18 GMT", false, time.Time{}},
		{"Thu, 18 Aug 2050 02:01:18 GMT, Fri, 19 Aug 2050 02:01:18 GMT", false, time.Time{}},
		{"Sunday, 06-Nov-1994 08:49:37 GMT", false, time.Time{}},
		{"Sun, 06-Nov-94 08:49:37 GMT", false, time.Time{}},
		{"Sun Nov  6 08:49:37 94", false, time.Time{}},
		{"Sun Nov 6 08:49:37 1994", false, time.Time{}},
		{"0", false, time.Time{}},
		{"", false, time.Time{}},
	}
	for _, tt := range tests {
		got, ok := parseHTTPDate(tt.in, now)
		if ok != tt.ok || (ok && !got.Equal(tt.want)) {
			t.Errorf("parseHTTPDate(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
	if _, ok := headerDate([]string{"Sun, 06 Nov 1994 08:49:37 GMT", "Sun, 06 Nov 1994 08:49:37 GMT"}, now); ok {
		t.Error("several lines of a singleton date field are valid")
	}
}

// TestAgeValue checks RFC 9111 §5.1: a list-based Age uses its first
// member; an invalid one is ignored.
func TestAgeValue(t *testing.T) {
	tests := []struct {
		in   []string
		want time.Duration
	}{
		{[]string{"7200, 0"}, 7200 * time.Second},
		{[]string{"7200", "0"}, 7200 * time.Second},
		{[]string{" 30 "}, 30 * time.Second},
		{[]string{"-1"}, 0},
		{[]string{"1.5"}, 0},
		{nil, 0},
	}
	for _, tt := range tests {
		if got := ageValue(tt.in); got != tt.want {
			t.Errorf("ageValue(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func FuzzParseHTTPDate(f *testing.F) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, s := range []string{"Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tm, ok := parseHTTPDate(s, now)
		if !ok {
			return
		}
		// The IMF-fixdate form of whatever is accepted parses back to the
		// same time.
		if tm.Year() > 9999 {
			t.Fatalf("%q -> %v", s, tm)
		}
		back, ok := parseHTTPDate(tm.Format(http.TimeFormat), now)
		if !ok || !back.Equal(tm) {
			t.Fatalf("%q -> %v does not round-trip", s, tm)
		}
	})
}

// TestDatesInFreshness checks the date rules of RFC 9111 at the cache
// level: §5.1 (list-based Age), §5.3 (an invalid Expires, or several, is
// already expired), RFC 9110 §13.1.3 (an invalid If-Modified-Since is
// ignored).
func TestDatesInFreshness(t *testing.T) {
	tests := []struct {
		name   string
		fields []string
		fresh  bool
	}{
		{"§5.1 Age list uses the first member", []string{"Cache-Control: max-age=3600", "Age: 7200, 0"}, false},
		{"§5.1 Age list, young", []string{"Cache-Control: max-age=3600", "Age: 10, 7200"}, true},
		{"§5.3 valid Expires", []string{"Expires: Fri, 02 Jan 2026 04:04:05 GMT", "Date: Fri, 02 Jan 2026 03:04:05 GMT"}, true},
		{"§5.3 Expires with runs of spaces is expired", []string{"Expires: Thu, 18  Aug  2050 02:01:18 GMT", "Date: Fri, 02 Jan 2026 03:04:05 GMT", "Etag: \"x\""}, false},
		{"§5.3 Expires with a 1-digit hour is expired", []string{"Expires: Thu, 18 Aug 2050 2:01:18 GMT", "Etag: \"x\""}, false},
		{"§5.3 Expires 0 is expired", []string{"Expires: 0", "Etag: \"x\""}, false},
		{"§5.3 several Expires are invalid", []string{"Expires: Thu, 18 Aug 2050 02:01:18 GMT", "Expires: Thu, 18 Aug 2050 02:01:18 GMT", "Etag: \"x\""}, false},
		{"§5.3 obsolete rfc850 Expires", []string{"Expires: Friday, 02-Jan-26 04:04:05 GMT", "Date: Fri, 02 Jan 2026 03:04:05 GMT"}, true},
		{"§5.3 obsolete asctime Expires", []string{"Expires: Fri Jan  2 04:04:05 2026", "Date: Fri, 02 Jan 2026 03:04:05 GMT"}, true},
		{"§4.2.3 invalid Date is the response time", []string{"Cache-Control: max-age=60", "Date: Fri, 02 Jan 2026 3:03:05 GMT"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			c := newTestCache(t, Options{Now: clk.Now})
			o := &origin{}
			o.set(static(200, "v", tt.fields...))
			h := c.Middleware(o)
			get(h, "GET", "/a")
			clk.Advance(time.Second)
			w := get(h, "GET", "/a")
			if hit := o.calls.Load() == 1; hit != tt.fresh {
				t.Fatalf("fresh = %v, want %v (Cache-Status %q)", hit, tt.fresh, status(w))
			}
		})
	}
	t.Run("RFC 9110 §13.1.3 invalid If-Modified-Since is ignored", func(t *testing.T) {
		c := newTestCache(t, Options{Now: newClock().Now})
		o := &origin{}
		o.set(static(200, "v", "Cache-Control: max-age=60", "Last-Modified: Thu, 01 Jan 2026 00:00:00 GMT"))
		h := c.Middleware(o)
		get(h, "GET", "/a")
		if w := get(h, "GET", "/a", "If-Modified-Since: Fri, 02 Jan 2026 03:04:05 GMT"); w.Code != 304 {
			t.Fatalf("valid If-Modified-Since: %d", w.Code)
		}
		if w := get(h, "GET", "/a", "If-Modified-Since: Fri, 02  Jan 2026 03:04:05 GMT"); w.Code != 200 {
			t.Fatalf("invalid If-Modified-Since: %d, want 200", w.Code)
		}
	})
}

// TestHeuristicFreshness checks RFC 9111 §4.2.2: without explicit
// freshness, a heuristically cacheable response may be fresh for a
// fraction of the time since Last-Modified, capped; never with explicit
// freshness, never for other statuses.
func TestHeuristicFreshness(t *testing.T) {
	// The clock starts at Fri, 02 Jan 2026 03:04:05 GMT.
	tenDaysAgo := "Last-Modified: Tue, 23 Dec 2025 03:04:05 GMT"
	tests := []struct {
		name   string
		opts   Options
		status int
		fields []string
		fresh  time.Duration // fresh for this long, then not
	}{
		{"§4.2.2 10% of 10 days", Options{HeuristicFraction: 0.1}, 200, []string{tenDaysAgo}, 24 * time.Hour},
		{"§4.2.2 capped", Options{HeuristicFraction: 0.1, HeuristicMax: time.Hour}, 200, []string{tenDaysAgo}, time.Hour},
		{"§4.2.2 404 is heuristically cacheable", Options{HeuristicFraction: 0.01}, 404, []string{tenDaysAgo}, 144 * time.Minute},
		{"§4.2.2 public 418", Options{HeuristicFraction: 0.01}, 418, []string{tenDaysAgo, "Cache-Control: public"}, 144 * time.Minute},
		{"§4.2.2 from Date", Options{HeuristicFraction: 0.1}, 200, []string{tenDaysAgo, "Date: Fri, 02 Jan 2026 03:04:05 GMT"}, 24 * time.Hour},
		{"§4.2.1 explicit freshness wins", Options{HeuristicFraction: 0.1}, 200, []string{tenDaysAgo, "Cache-Control: max-age=60"}, time.Minute},
		{"off by default", Options{}, 200, []string{tenDaysAgo}, 0},
		{"not for 418", Options{HeuristicFraction: 0.1}, 418, []string{tenDaysAgo}, 0},
		{"invalid Last-Modified", Options{HeuristicFraction: 0.1}, 200, []string{"Last-Modified: Tue, 23 Dec 2025 3:04:05 GMT"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			tt.opts.Now = clk.Now
			c := newTestCache(t, tt.opts)
			o := &origin{}
			o.set(static(tt.status, "v", tt.fields...))
			h := c.Middleware(o)
			get(h, "GET", "/a")
			if tt.fresh > 0 {
				clk.Advance(tt.fresh - time.Second)
				if w := get(h, "GET", "/a"); o.calls.Load() != 1 {
					t.Fatalf("not fresh after %v: %q", tt.fresh-time.Second, status(w))
				}
			}
			clk.Advance(2 * time.Second)
			get(h, "GET", "/a")
			if o.calls.Load() != 2 {
				t.Fatalf("fresh beyond %v", tt.fresh)
			}
		})
	}
	if _, err := New(Options{HeuristicFraction: 2}); err == nil {
		t.Error("HeuristicFraction 2 accepted")
	}
}
