package ratelimit_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/pylon-gateway/pylon/ratelimit"
)

// A route limited to 2 requests per second and 100 per hour per client IP:
// the third request in the same second is refused with 429.
func Example() {
	hello := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello\n")
	})
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC) // injected for a stable output
	limit := ratelimit.MustNewWithOptions(ratelimit.Options{
		Limits: []ratelimit.Limit{ratelimit.PerSecond(2), ratelimit.PerHour(100).Named("hourly")},
		Key:    ratelimit.ByIP,
		Now:    func() time.Time { return now },
	})
	h := limit(hello)

	for i := 0; i < 3; i++ {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/hello", nil))
		fmt.Println(rec.Code, rec.Header().Get("RateLimit"))
		if ra := rec.Header().Get("Retry-After"); ra != "" {
			fmt.Println("Retry-After:", ra)
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/hello", nil))
	fmt.Println(rec.Header().Get("RateLimit-Policy"))
	// Output:
	// 200 "2-per-1s";r=1;t=1, "hourly";r=99;t=36
	// 200 "2-per-1s";r=0;t=1, "hourly";r=98;t=72
	// 429 "2-per-1s";r=0;t=1, "hourly";r=98;t=1
	// Retry-After: 1
	// "2-per-1s";q=2;w=1, "hourly";q=100;w=3600
}

// The in-memory store decides with injected time: a burst of 3, then one
// request every 100ms.
func ExampleMemoryStore() {
	store := ratelimit.NewMemoryStore(ratelimit.MemoryOptions{MaxKeys: 10_000})
	limits, err := ratelimit.PrepareLimits(ratelimit.PerSecond(10).WithBurst(3))
	if err != nil {
		panic(err)
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, at := range []time.Duration{0, 0, 0, 0, 100 * time.Millisecond} {
		d := store.AllowAt("ip:192.0.2.1", limits, t0.Add(at))
		fmt.Println(at, d.Allowed, d.Results[0].Remaining, d.RetryAfter())
	}
	// Output:
	// 0s true 2 0s
	// 0s true 1 0s
	// 0s true 0 0s
	// 0s false 0 100ms
	// 100ms true 0 0s
}
