package cache

import (
	"strings"
	"testing"
	"time"
)

// TestParseSFDictionary checks the Dictionary grammar of RFC 9651 §3.2 and
// its parsing algorithm (§4.2.2), with cases from the RFC's text.
func TestParseSFDictionary(t *testing.T) {
	tests := []struct {
		in   []string
		ok   bool
		keys string // members in order, "k=kind"
	}{
		{[]string{`max-age=60`}, true, "max-age=2"},
		{[]string{`no-store`}, true, "no-store=1"},
		{[]string{`max-age=60, no-cache`}, true, "max-age=2 no-cache=1"},
		{[]string{`max-age=60`, `private`}, true, "max-age=2 private=1"},                 // §4.2: lines combined
		{[]string{`  a=1,b=2  `}, true, "a=2 b=2"},                                       // leading/trailing SP
		{[]string{"a=1 ,\tb=2"}, true, "a=2 b=2"},                                        // OWS around commas
		{[]string{`a=1, b=2, a=3`}, true, "a=2 b=2"},                                     // duplicate: last value wins
		{[]string{`no-cache="set-cookie"`}, true, "no-cache=4"},                          // String
		{[]string{`a=?0, b=?1`}, true, "a=1 b=1"},                                        // Booleans
		{[]string{`a=1.5, b=-3, c=tok/en:x, d=:cHJldGVuZA==:`}, true, "a=3 b=2 c=5 d=6"}, // Decimal, Integer, Token, Byte Sequence
		{[]string{`a=@1659578233, b=%"f%c3%bc"`}, true, "a=7 b=8"},                       // Date, Display String (RFC 9651)
		{[]string{`a=(1 2 "x");p=1, b;q=?0`}, true, "a=9 b=1"},                           // Inner List, parameters
		{[]string{`*x=1`}, true, "*x=2"},
		{[]string{``}, true, ""},

		{[]string{`max-age=60,`}, false, ""},        // trailing comma
		{[]string{`Max-Age=60`}, false, ""},         // keys are lower case
		{[]string{`max-age="60`}, false, ""},        // unterminated String
		{[]string{`a="\x"`}, false, ""},             // bad escape
		{[]string{`a=1.`}, false, ""},               // Decimal without a fraction
		{[]string{`a=1.2345`}, false, ""},           // more than 3 fractional digits
		{[]string{`a=1234567890123456`}, false, ""}, // more than 15 digits
		{[]string{`a=?2`}, false, ""},
		{[]string{`a=:abc`}, false, ""},
		{[]string{`a=%"%C3%BC"`}, false, ""}, // upper-case hex
		{[]string{`a=%"%ff"`}, false, ""},    // not UTF-8
		{[]string{`a b`}, false, ""},
		{[]string{`a=1;`}, false, ""},
		{[]string{`a=(1 2`}, false, ""},
		{[]string{`, a=1`}, false, ""},
		{[]string{`1a=1`}, false, ""},
		{[]string{"a=\"\x7f\""}, false, ""},
	}
	for _, tt := range tests {
		m, ok := parseSFDictionary(tt.in)
		var got []string
		for _, mem := range m {
			got = append(got, mem.key+"="+itoa(int64(mem.val.kind)))
			if mem.val.kind == sfBool && mem.val.n != 1 && mem.key != "a" && mem.key != "b" {
				t.Errorf("%q: %s is false", tt.in, mem.key)
			}
		}
		if ok != tt.ok || strings.Join(got, " ") != tt.keys {
			t.Errorf("parseSFDictionary(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.keys, tt.ok)
		}
	}
	if m, _ := parseSFDictionary([]string{`a=?0, b=?1, c=-7`}); m[0].val.n != 0 || m[1].val.n != 1 || m[2].val.n != -7 {
		t.Errorf("values: %+v", m)
	}
	many := strings.Repeat("a,", maxSFMembers) + "b"
	if _, ok := parseSFDictionary([]string{many}); !ok {
		t.Error("duplicates count as new members")
	}
	var b strings.Builder
	for i := range maxSFMembers + 1 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("k" + itoa(int64(i)))
	}
	if _, ok := parseSFDictionary([]string{b.String()}); ok {
		t.Error("a dictionary beyond maxSFMembers is accepted")
	}
}

func FuzzParseSFDictionary(f *testing.F) {
	for _, s := range []string{`max-age=60, no-cache="a"`, `a=(1 2);p=?1`, `a=@1, b=%"x%20"`, `a=1.5;q=:aGk=:`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, ok := parseSFDictionary([]string{s})
		if !ok {
			return
		}
		for _, mem := range m {
			if mem.key == "" || len(m) > maxSFMembers {
				t.Fatalf("%q: bad member %+v", s, mem)
			}
		}
		_ = targetedDirectives(m)
	})
}

// TestTargetedCacheControl checks RFC 9213: a valid targeted field
// replaces Cache-Control (and Expires) for this cache (§2.2), the most
// specific field of Options.TargetedFields first; an invalid or empty one
// is ignored (§2.1); the fields are removed before the response leaves
// unless Options.KeepTargetedFields.
func TestTargetedCacheControl(t *testing.T) {
	tests := []struct {
		name    string
		opts    Options
		fields  []string
		freshAt time.Duration // still fresh after this; -1: not stored fresh
	}{
		{"§2.2 CDN-Cache-Control max-age over Cache-Control", Options{}, []string{"Cache-Control: max-age=10", "CDN-Cache-Control: max-age=600"}, 500 * time.Second},
		{"§2.2 CDN-Cache-Control no-store", Options{}, []string{"Cache-Control: max-age=600", "CDN-Cache-Control: no-store"}, -1},
		{"§2.2 CDN-Cache-Control private", Options{}, []string{"Cache-Control: max-age=600", "CDN-Cache-Control: private"}, -1},
		{"§2.2 CDN-Cache-Control no-cache", Options{}, []string{"Cache-Control: max-age=600", "CDN-Cache-Control: no-cache, max-age=600"}, -1},
		{"§2.2 CDN-Cache-Control s-maxage", Options{}, []string{"CDN-Cache-Control: max-age=10, s-maxage=600"}, 500 * time.Second},
		{"§2.2 Cache-Control no-store ignored", Options{}, []string{"Cache-Control: no-store, private", "CDN-Cache-Control: max-age=600"}, 500 * time.Second},
		{"§2.2 Expires ignored", Options{}, []string{"Expires: Thu, 01 Jan 2026 00:00:00 GMT", "CDN-Cache-Control: max-age=600"}, 500 * time.Second},
		{"§2.2 no freshness in the targeted field", Options{}, []string{"Cache-Control: max-age=600", "CDN-Cache-Control: public"}, -1},
		{"§2.1 invalid field is ignored", Options{}, []string{"Cache-Control: max-age=10", "CDN-Cache-Control: max-age=600,"}, 5 * time.Second},
		{"§2.1 invalid field, not fresh after Cache-Control's", Options{}, []string{"Cache-Control: max-age=10", "CDN-Cache-Control: Max-Age=600"}, -2},
		{"§2.1 empty field is ignored", Options{}, []string{"Cache-Control: max-age=10", "CDN-Cache-Control: "}, 5 * time.Second},
		{"§2.1 wrong type ignores the directive", Options{}, []string{"Cache-Control: max-age=600", `CDN-Cache-Control: max-age="600"`}, -1},
		{"§2.2 own field first", Options{TargetedFields: []string{"Pylon-Cache-Control", "CDN-Cache-Control"}},
			[]string{"CDN-Cache-Control: no-store", "Pylon-Cache-Control: max-age=600"}, 500 * time.Second},
		{"§2.2 own field invalid, next one used", Options{TargetedFields: []string{"Pylon-Cache-Control", "CDN-Cache-Control"}},
			[]string{"CDN-Cache-Control: max-age=600", "Pylon-Cache-Control: max-age=1.5.5"}, 500 * time.Second},
		{"none targeted", Options{TargetedFields: []string{}}, []string{"Cache-Control: max-age=10", "CDN-Cache-Control: max-age=600"}, -2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			tt.opts.Now = clk.Now
			c := newTestCache(t, tt.opts)
			o := &origin{}
			o.set(static(200, "v", tt.fields...))
			h := c.Middleware(o)
			w := get(h, "GET", "/a")
			if len(c.targeted) > 0 {
				for _, name := range c.targeted {
					if w.Header().Get(name) != "" {
						t.Errorf("miss: %s reached the client", name)
					}
				}
			}
			switch {
			case tt.freshAt >= 0:
				clk.Advance(tt.freshAt)
				w = get(h, "GET", "/a")
				if o.calls.Load() != 1 {
					t.Fatalf("not fresh after %v: Cache-Status %q", tt.freshAt, status(w))
				}
				for _, name := range c.targeted {
					if w.Header().Get(name) != "" {
						t.Errorf("hit: %s reached the client", name)
					}
				}
			case tt.freshAt == -2:
				clk.Advance(11 * time.Second)
				get(h, "GET", "/a")
				if o.calls.Load() != 2 {
					t.Fatal("fresh beyond Cache-Control's max-age")
				}
			default:
				get(h, "GET", "/a")
				if o.calls.Load() != 2 {
					t.Fatal("served from the cache")
				}
			}
		})
	}
	t.Run("KeepTargetedFields", func(t *testing.T) {
		c := newTestCache(t, Options{Now: newClock().Now, KeepTargetedFields: true})
		o := &origin{}
		o.set(static(200, "v", "CDN-Cache-Control: max-age=600"))
		h := c.Middleware(o)
		for range 2 {
			if w := get(h, "GET", "/a"); w.Header().Get("CDN-Cache-Control") != "max-age=600" {
				t.Fatalf("CDN-Cache-Control = %q (%s)", w.Header().Get("CDN-Cache-Control"), status(w))
			}
		}
	})
	t.Run("stripped from bypassed responses", func(t *testing.T) {
		c := newTestCache(t, Options{Now: newClock().Now})
		o := &origin{}
		o.set(static(200, "v", "CDN-Cache-Control: max-age=600"))
		if w := get(c.Middleware(o), "POST", "/a"); w.Header().Get("CDN-Cache-Control") != "" {
			t.Fatal("CDN-Cache-Control reached the client")
		}
	})
	t.Run("bad name", func(t *testing.T) {
		for _, name := range []string{"", "Cache-Control", "a b", "x:y"} {
			if _, err := New(Options{TargetedFields: []string{name}}); err == nil {
				t.Errorf("TargetedFields %q accepted", name)
			}
		}
	})
}
