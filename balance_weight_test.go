package pylon

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// countingUpstreams starts n loopback upstreams that count the requests
// they answer.
func countingUpstreams(t *testing.T, n int) ([]string, []*atomic.Int64) {
	t.Helper()
	urls := make([]string, n)
	hits := make([]*atomic.Int64, n)
	for i := range n {
		c := new(atomic.Int64)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { c.Add(1) }))
		t.Cleanup(srv.Close)
		urls[i], hits[i] = srv.URL, c
	}
	return urls, hits
}

// TestLeastLoadedBalancersFollowWeightsSequentially: with one request at a
// time (nothing in flight at a pick), LeastRequests and PowerOfTwoChoices
// give weights 3:1 shares of 3:1, not everything to the heavier target.
func TestLeastLoadedBalancersFollowWeightsSequentially(t *testing.T) {
	for _, bal := range []namedBalancer{{"LeastRequests", LeastRequests}, {"PowerOfTwoChoices", PowerOfTwoChoices}} {
		t.Run(bal.name, func(t *testing.T) {
			urls, hits := countingUpstreams(t, 2)
			b := MustNewBackend("weighted", BackendOptions{Targets: urls, Weights: []int{3, 1}, Balancer: bal.new()})
			defer b.Close()
			const n = 2000
			for range n {
				rec := httptest.NewRecorder()
				b.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
				if rec.Code != http.StatusOK {
					t.Fatalf("status %d", rec.Code)
				}
			}
			// 75 % ± 5 %: a binomial(2000, 0.75) leaves it with
			// probability below 1e-10.
			if s := float64(hits[0].Load()) / n; s < 0.70 || s > 0.80 {
				t.Fatalf("weight 3 of 3:1 took %.1f%% of %d sequential requests (hits %d, %d), want 75%% ± 5%%",
					100*s, n, hits[0].Load(), hits[1].Load())
			}
		})
	}
}

// TestLeastLoadedBalancersRampSequentially: under SlowStart, a new target
// served one request at a time gets a share that grows over the window
// (about 0.1/2.1, 0.5/2.5, then 1/3), not nothing and then a full share.
func TestLeastLoadedBalancersRampSequentially(t *testing.T) {
	for _, bal := range []namedBalancer{{"LeastRequests", LeastRequests}, {"PowerOfTwoChoices", PowerOfTwoChoices}} {
		t.Run(bal.name, func(t *testing.T) {
			clock := newFakeClock()
			p := newTestPool(t, poolConfig{Targets: testURLs(2), Now: clock.Now,
				Balancer: SlowStart(bal.new(), SlowStartOptions{Window: 10 * time.Second})})
			if err := p.update(endpoints(testURLs(3), nil)); err != nil {
				t.Fatal(err)
			}
			nt := p.targets()[2]
			sequentialShare := func(n int) float64 {
				got := 0
				for range n {
					x := p.pick(nil, nil)
					p.acquire(x)
					p.finish(x, outcomeSuccess)
					if x == nt {
						got++
					}
				}
				return float64(got) / float64(n)
			}
			for _, step := range []struct {
				advance  time.Duration
				lo, hi   float64
				expected string
			}{
				{0, 0.025, 0.075, "4.8%"},
				{5 * time.Second, 0.16, 0.24, "20%"},
				{5 * time.Second, 0.29, 0.38, "33%"},
			} {
				clock.Advance(step.advance)
				if s := sequentialShare(3000); s < step.lo || s > step.hi {
					t.Fatalf("%v into the window the new target took %.1f%% of sequential picks, want about %s",
						clock.Now().Sub(newFakeClock().Now()), 100*s, step.expected)
				}
			}
		})
	}
}
