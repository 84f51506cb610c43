package aggregate_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/aggregate"
)

// doc returns a JSON object of about size bytes: an id, a few fields and an
// array of items.
func doc(size int) []byte {
	var b strings.Builder
	b.WriteString(`{"id":"o-123","status":"shipped","customer_id":"c-9","meta":{"created":"2026-01-01T00:00:00Z","source":"web"},"items":[`)
	for i := 0; b.Len() < size-2; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"sku":"SKU-%05d","name":"Item number %d","qty":%d,"price":%d.99,"description":"lorem ipsum dolor sit amet"}`, i, i, i%5+1, i%90+10)
	}
	b.WriteString(`]}`)
	return []byte(b.String())
}

// static answers body from memory: in-process targets isolate the cost of
// the fan-out, shaping and merge from the network.
func static(body []byte) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	})
}

// discard is a ResponseWriter that keeps nothing.
type discard struct{ h http.Header }

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) Write(p []byte) (int, error) { return len(p), nil }
func (d *discard) WriteHeader(int)             {}

// BenchmarkMerge merges 3 answers of 1 KiB and 16 KiB from in-process
// targets, as they are and with Allow lists.
func BenchmarkMerge(b *testing.B) {
	for _, size := range []int{1 << 10, 16 << 10} {
		body := static(doc(size))
		for _, allow := range []bool{false, true} {
			name := fmt.Sprintf("%dKiB/all", size>>10)
			calls := []*aggregate.Call{
				aggregate.Get("a", body, "/a/{id}"),
				aggregate.Get("b", body, "/b/{id}"),
				aggregate.Get("c", body, "/c/{id}"),
			}
			if allow {
				name = fmt.Sprintf("%dKiB/allow", size>>10)
				for _, c := range calls {
					c.Allow("id", "status", "items.sku", "items.qty")
				}
			}
			h := aggregate.MustNew(calls...)
			req := httptest.NewRequest("GET", "/x/1", nil)
			req.SetPathValue("id", "1")
			b.Run(name, func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(3 * size))
				w := &discard{h: make(http.Header)}
				for b.Loop() {
					clear(w.h)
					h.ServeHTTP(w, req)
				}
			})
		}
	}
}

// BenchmarkFanOut measures a 3-call aggregate through real Backends over
// loopback against one direct call through a Backend: the difference is the
// fan-out overhead.
func BenchmarkFanOut(b *testing.B) {
	body := doc(1 << 10)
	up := func(name string) *pylon.Backend {
		return upstream(b, name, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Write(body)
		})
	}
	a, c, d := up("a"), up("b"), up("c")
	run := func(b *testing.B, h http.Handler) {
		req := httptest.NewRequest("GET", "/x/1", nil)
		req.SetPathValue("id", "1")
		b.ReportAllocs()
		w := &discard{h: make(http.Header)}
		for b.Loop() {
			clear(w.h)
			h.ServeHTTP(w, req)
		}
	}
	b.Run("direct-1", func(b *testing.B) { run(b, a) })
	b.Run("aggregate-1", func(b *testing.B) { run(b, aggregate.MustNew(aggregate.Get("a", a, "/a/{id}"))) })
	b.Run("aggregate-3", func(b *testing.B) {
		run(b, aggregate.MustNew(aggregate.Get("a", a, "/a/{id}"), aggregate.Get("b", c, "/b/{id}"), aggregate.Get("c", d, "/c/{id}")))
	})
	b.Run("sequential-3", func(b *testing.B) {
		run(b, aggregate.MustNew(aggregate.Get("a", a, "/a/{id}"), aggregate.Get("b", c, "/b/{a.id}"), aggregate.Get("c", d, "/c/{b.id}")))
	})
}

// BenchmarkLatency checks the latency goal: the p50 of a 3-call aggregate,
// over loopback through a Gateway, against backends answering after 1, 2
// and 3 ms, should be at most the slowest backend's p50 plus 0.3 ms.
// It reports p50 and p99 in microseconds.
func BenchmarkLatency(b *testing.B) {
	delayed := func(name string, d time.Duration) *pylon.Backend {
		return upstream(b, name, func(w http.ResponseWriter, r *http.Request) {
			select { // simulated service time, cut short when the caller leaves
			case <-time.After(d):
			case <-r.Context().Done():
				return
			}
			io.WriteString(w, `{"ok":true}`)
		})
	}
	b1, b2, b3 := delayed("b1", time.Millisecond), delayed("b2", 2*time.Millisecond), delayed("b3", 3*time.Millisecond)
	gw := pylon.New(pylon.Options{})
	gw.Route("GET /slowest/{id}").To(b3)
	gw.Route("GET /agg/{id}").Handler(aggregate.MustNew(
		aggregate.Get("a", b1, "/a/{id}"), aggregate.Get("b", b2, "/b/{id}"), aggregate.Get("c", b3, "/c/{id}"),
	))
	gw.Route("GET /seq/{id}").Handler(aggregate.MustNew(
		aggregate.Get("a", b1, "/a/{id}"), aggregate.Get("b", b2, "/b/{a.ok}"), aggregate.Get("c", b3, "/c/{b.ok}"),
	))
	srv := httptest.NewServer(gw)
	b.Cleanup(srv.Close)
	client := srv.Client()
	for _, path := range []string{"/slowest/1", "/agg/1", "/seq/1"} {
		b.Run(strings.Split(path, "/")[1], func(b *testing.B) {
			var lat []time.Duration
			for b.Loop() {
				t0 := time.Now()
				res, err := client.Get(srv.URL + path)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode != 200 {
					b.Fatal(res.Status)
				}
				lat = append(lat, time.Since(t0))
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}
	client.CloseIdleConnections()
}
