package overload_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/pylon-gateway/pylon/overload"
)

// fakeClock is a clock the test moves.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// simulate runs rounds in virtual time against an upstream of capacity
// knee whose latency is base × max(1, inflight/knee): each round fills
// every place the limit gives, lets them all take their latency, ends them.
func simulate(a *overload.AdaptiveLimit, clk *fakeClock, rounds, knee int, base time.Duration) (maxInflight int) {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	for range rounds {
		var dones []func(int, error)
		for {
			done, err := a.Allow(r, nil)
			if err != nil {
				break
			}
			dones = append(dones, done)
		}
		n := len(dones)
		maxInflight = max(maxInflight, n)
		clk.Add(time.Duration(float64(base) * math.Max(1, float64(n)/float64(knee))))
		for _, d := range dones {
			d(200, nil)
		}
	}
	return maxInflight
}

func TestAdaptiveConverges(t *testing.T) {
	tests := []struct {
		knee     int
		min, max int // where the limit must settle
	}{
		{1, 1, 2},
		{4, 4, 7},
		{50, 50, 70},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint("knee ", tt.knee), func(t *testing.T) {
			clk := &fakeClock{now: time.Unix(0, 0)}
			a := overload.MustAdaptive(overload.AdaptiveOptions{Now: clk.Now, InitialLimit: 1})
			simulate(a, clk, 400, tt.knee, 10*time.Millisecond)
			if got := a.Limit(); got < tt.min || got > tt.max {
				t.Errorf("limit = %d, want in [%d, %d]", got, tt.min, tt.max)
			}
			if got := a.MinRTT(); got != 10*time.Millisecond {
				t.Errorf("minRTT = %v", got)
			}
		})
	}
}

func TestAdaptiveShrinksAndRecovers(t *testing.T) {
	clk := &fakeClock{now: time.Unix(0, 0)}
	a := overload.MustAdaptive(overload.AdaptiveOptions{Now: clk.Now, InitialLimit: 1})
	simulate(a, clk, 400, 50, 10*time.Millisecond)
	high := a.Limit()
	simulate(a, clk, 30, 5, 10*time.Millisecond) // the upstream loses capacity
	low := a.Limit()
	if low > 10 {
		t.Errorf("limit %d after capacity fell from 50 to 5 (was %d)", low, high)
	}
	simulate(a, clk, 600, 50, 10*time.Millisecond)
	if got := a.Limit(); got < 50 {
		t.Errorf("limit %d after capacity came back", got)
	}
}

func TestAdaptiveIgnoresFailuresAndIdle(t *testing.T) {
	clk := &fakeClock{now: time.Unix(0, 0)}
	a := overload.MustAdaptive(overload.AdaptiveOptions{Now: clk.Now, InitialLimit: 10})
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	for range 100 { // one at a time: a limit of 10 is not used, so it does not grow
		done, err := a.Allow(r, nil)
		if err != nil {
			t.Fatal(err)
		}
		clk.Add(time.Millisecond)
		done(200, nil)
	}
	if got := a.Limit(); got != 10 {
		t.Errorf("idle limit grew to %d", got)
	}
	for _, end := range []struct {
		status int
		err    error
	}{{503, nil}, {0, errors.New("connection refused")}, {0, context.Canceled}} {
		done, _ := a.Allow(r, nil)
		clk.Add(time.Hour) // would crush the limit if it counted
		done(end.status, end.err)
	}
	if got := a.Limit(); got != 10 {
		t.Errorf("failures moved the limit to %d", got)
	}
	if st := a.Stats(); st.InFlight != 0 || st.Admitted != 103 {
		t.Errorf("stats = %+v", st)
	}
}
