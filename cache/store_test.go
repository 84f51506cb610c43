package cache

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"
)

func body(n int) *Entry {
	return &Entry{kind: kindResponse, status: 200, header: http.Header{}, body: make([]byte, n)}
}

func TestMemoryStoreBoundedInBytes(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	s := NewMemoryStore(MemoryOptions{MaxBytes: 10_000, Now: clk.Now})
	for i, k := range []string{"a", "b", "c"} {
		if err := s.Set(ctx, k, body(3000), time.Minute); err != nil {
			t.Fatal(i, err)
		}
	}
	if _, _ = s.Get(ctx, "a"); s.Len() != 3 { // a becomes most recently used
		t.Fatalf("Len = %d", s.Len())
	}
	if err := s.Set(ctx, "d", body(3000), time.Minute); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]bool{"a": true, "b": false, "c": true, "d": true} {
		if e, _ := s.Get(ctx, k); (e != nil) != want {
			t.Errorf("%s present = %v, want %v", k, e != nil, want)
		}
	}
	if s.Bytes() > 10_000 {
		t.Fatalf("Bytes = %d over the limit", s.Bytes())
	}
	if err := s.Set(ctx, "huge", body(20_000), time.Minute); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Set(huge) = %v", err)
	}
	// Replacing an entry accounts for the old one.
	before := s.Bytes()
	_ = s.Set(ctx, "d", body(3000), time.Minute)
	if s.Bytes() != before {
		t.Fatalf("Bytes after replace = %d, want %d", s.Bytes(), before)
	}
}

func TestMemoryStoreExpiryAndDelete(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	s := NewMemoryStore(MemoryOptions{Now: clk.Now})
	_ = s.Set(ctx, "GET http://h/a", body(1), time.Second)
	_ = s.Set(ctx, "GET http://h/a\x00vx", body(1), time.Minute)
	_ = s.Set(ctx, "GET http://h/b", body(1), time.Minute)
	_ = s.Set(ctx, "GET http://i/a", body(1), time.Minute)
	clk.Advance(time.Second)
	if e, _ := s.Get(ctx, "GET http://h/a"); e != nil {
		t.Fatal("expired entry returned")
	}
	if n, _ := s.DeletePrefix(ctx, "GET http://h/"); n != 2 {
		t.Fatalf("DeletePrefix = %d", n)
	}
	_ = s.Delete(ctx, "GET http://i/a")
	if s.Len() != 0 || s.Bytes() != 0 {
		t.Fatalf("Len %d Bytes %d after deleting all", s.Len(), s.Bytes())
	}
	if err := s.Set(ctx, "k", body(1), 0); err != nil || s.Len() != 0 {
		t.Fatalf("Set with ttl 0 stored: %v", err)
	}
}

func TestEntryRoundTrip(t *testing.T) {
	e := &Entry{kind: kindResponse, flags: flagNoCache, status: 203, gen: 42,
		header:       http.Header{"Content-Type": {"text/plain"}, "Vary": {"A", "B"}},
		body:         []byte("hello"),
		vary:         []string{"Accept"},
		responseTime: time.Unix(100, 5), initialAge: 3 * time.Second, lifetime: time.Minute,
		swr: time.Second, sie: 2 * time.Second}
	b, err := e.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var d Entry
	if err := d.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(e.header, d.header) || !bytes.Equal(e.body, d.body) || d.status != 203 || d.gen != 42 ||
		!d.responseTime.Equal(e.responseTime) || d.lifetime != e.lifetime || d.initialAge != e.initialAge ||
		d.swr != e.swr || d.sie != e.sie || d.flags != e.flags || !reflect.DeepEqual(d.vary, e.vary) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", d, *e)
	}
	for i := range b {
		var x Entry
		if err := x.UnmarshalBinary(b[:i]); err == nil {
			t.Fatalf("truncated at %d decoded", i)
		}
	}
}

func FuzzEntryUnmarshal(f *testing.F) {
	e := &Entry{kind: kindResponse, status: 200, header: http.Header{"A": {"b"}}, body: []byte("x"), vary: []string{"V"}}
	b, _ := e.MarshalBinary()
	f.Add(b)
	f.Add([]byte{1, 2, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		var x Entry
		if err := x.UnmarshalBinary(data); err != nil {
			return
		}
		again, _ := x.MarshalBinary()
		var y Entry
		if err := y.UnmarshalBinary(again); err != nil {
			t.Fatalf("re-encoded entry does not decode: %v", err)
		}
	})
}

func FuzzDirectives(f *testing.F) {
	f.Add(`max-age=60, s-maxage="30", private="a,b", no-cache`)
	f.Add(`"`)
	f.Add(`max-stale, min-fresh=abc, stale-if-error=99999999999999999999`)
	f.Fuzz(func(t *testing.T, v string) {
		h := http.Header{"Cache-Control": {v}}
		d := parseRespDirectives(h)
		r := parseReqDirectives(h)
		for _, x := range []time.Duration{d.maxAge, d.sMaxAge, d.swr, d.sie, r.maxAge, r.maxStale, r.minFresh} {
			if x < -1 || x > maxDelta {
				t.Fatalf("duration %v out of range for %q", x, v)
			}
		}
	})
}

func FuzzQueryKey(f *testing.F) {
	f.Add("b=2&a=1")
	f.Add("a=%zz")
	f.Add("a=1&a=0&utm=3")
	c, _ := New(Options{IgnoreQueryParams: []string{"utm"}})
	defer c.Close()
	f.Fuzz(func(t *testing.T, raw string) {
		q, ok := c.normQuery(raw)
		if !ok {
			return
		}
		// Normalizing is idempotent, and never keeps an ignored parameter.
		if q2, ok2 := c.normQuery(q); !ok2 || q2 != q {
			t.Fatalf("normQuery(%q) = %q, again %q", raw, q, q2)
		}
		for p := range strings.SplitSeq(q, "&") {
			if strings.HasPrefix(p, "utm=") || p == "utm" {
				t.Fatalf("ignored parameter kept: %q", q)
			}
		}
	})
}
