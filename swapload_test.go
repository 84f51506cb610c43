package pylon

import (
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestSwapUnderLoad swaps a Backend's targets every 100ms while about
// 1,000 requests/s flow through it over loopback, for a bounded time, and
// asserts that not one request fails. It logs the figure for the README.
func TestSwapUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	const (
		upstreams = 5
		rate      = 1000 // requests per second offered
		duration  = 3 * time.Second
		swapEvery = 100 * time.Millisecond
	)
	var urls []string
	for range upstreams {
		u := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }))
		defer u.Close()
		urls = append(urls, u.URL)
	}
	b := MustNewBackend("orders", BackendOptions{Targets: urls[:2],
		Balancer: SlowStart(LeastRequests(), SlowStartOptions{Window: time.Second})})
	defer b.Close()
	front := httptest.NewServer(b)
	defer front.Close()
	client := front.Client()

	stop := make(chan struct{})
	var swaps atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the swapper: a random non-empty subset every swapEvery
		defer wg.Done()
		tick := time.NewTicker(swapEvery)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			var eps []Endpoint
			for _, u := range urls {
				if rand.IntN(2) == 0 {
					eps = append(eps, Endpoint{URL: u})
				}
			}
			if len(eps) == 0 {
				eps = append(eps, Endpoint{URL: urls[rand.IntN(len(urls))]})
			}
			if err := b.SetTargets(eps); err != nil {
				t.Error(err)
				return
			}
			swaps.Add(1)
		}
	}()

	tokens := make(chan struct{}, rate)
	var sent, failed atomic.Int64
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range tokens {
				resp, err := client.Get(front.URL + "/")
				sent.Add(1)
				if err != nil {
					failed.Add(1)
					t.Errorf("request failed: %v", err)
					continue
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 || string(body) != "ok" {
					failed.Add(1)
					t.Errorf("request failed: status %d, body %q, err %v", resp.StatusCode, body, err)
				}
			}
		}()
	}
	start := time.Now()
	pace := time.NewTicker(time.Second / rate)
	deadline := time.After(duration)
loop:
	for {
		select {
		case <-deadline:
			break loop
		case <-pace.C:
			select {
			case tokens <- struct{}{}:
			default: // the workers are behind: offer less, never queue without bound
			}
		}
	}
	pace.Stop()
	close(tokens)
	close(stop)
	wg.Wait()
	elapsed := time.Since(start)
	t.Logf("%d requests in %v (%.0f/s), %d target swaps, %d failed",
		sent.Load(), elapsed.Round(time.Millisecond), float64(sent.Load())/elapsed.Seconds(), swaps.Load(), failed.Load())
	if failed.Load() != 0 {
		t.Fatalf("%d of %d requests failed during swaps", failed.Load(), sent.Load())
	}
	if swaps.Load() < int64(duration/swapEvery)/2 {
		t.Fatalf("only %d swaps", swaps.Load())
	}
}
