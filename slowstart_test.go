package pylon

import (
	"math"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestSlowStartFactor(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts SlowStartOptions
		e    time.Duration
		want float64
	}{
		{"defaults at start", SlowStartOptions{}, 0, 0.1},
		{"defaults halfway", SlowStartOptions{}, 15 * time.Second, 0.5},
		{"linear", SlowStartOptions{Window: 10 * time.Second}, 3 * time.Second, 0.3},
		{"aggressive", SlowStartOptions{Window: 10 * time.Second, Aggression: 2}, 2500 * time.Millisecond, 0.5},
		{"lazy", SlowStartOptions{Window: 10 * time.Second, Aggression: 0.5}, 5 * time.Second, 0.25},
		{"minimum", SlowStartOptions{Window: 10 * time.Second, MinWeightPercent: 40}, 2 * time.Second, 0.4},
		{"first second counts as one", SlowStartOptions{Window: 4 * time.Second, MinWeightPercent: 1}, 0, 0.25},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tc.opts.config()
			if err != nil {
				t.Fatal(err)
			}
			if got := c.factor(int64(tc.e)); math.Abs(got-tc.want) > 1e-9 {
				t.Fatalf("factor(%v) = %v, want %v", tc.e, got, tc.want)
			}
		})
	}
}

func TestSlowStartOptionsInvalid(t *testing.T) {
	for _, tc := range []struct {
		opts SlowStartOptions
		want string
	}{
		{SlowStartOptions{Window: -time.Second}, "Window"},
		{SlowStartOptions{Aggression: -1}, "Aggression"},
		{SlowStartOptions{Aggression: math.Inf(1)}, "Aggression"},
		{SlowStartOptions{MinWeightPercent: 101}, "MinWeightPercent"},
		{SlowStartOptions{MinWeightPercent: -1}, "MinWeightPercent"},
	} {
		_, err := NewBackend("orders", BackendOptions{Targets: testURLs(1), Balancer: SlowStart(LeastRequests(), tc.opts)})
		if err == nil || !strings.Contains(err.Error(), `"orders"`) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err = %v, want one naming the backend and %s", tc.opts, err, tc.want)
		}
	}
}

func slowBalancers() []namedBalancer {
	return []namedBalancer{
		{"RoundRobin", RoundRobin},
		{"WeightedRoundRobin", WeightedRoundRobin},
		{"LeastRequests", LeastRequests},
		{"PowerOfTwoChoices", PowerOfTwoChoices},
	}
}

// share picks n times, keeping every pick in flight (so that least-loaded
// balancers spread by weight), and returns target t's share of the picks.
// The picks are finished before it returns.
func share(p *pool, target *Target, n int) float64 {
	r := httptest.NewRequest("GET", "/", nil)
	got := 0
	var held []*Target
	for range n {
		x := p.pick(r, nil)
		p.acquire(x)
		held = append(held, x)
		if x == target {
			got++
		}
	}
	for _, x := range held {
		p.finish(x, outcomeNeutral)
	}
	return float64(got) / float64(n)
}

func TestSlowStartNewTargetRamps(t *testing.T) {
	for _, b := range slowBalancers() {
		t.Run(b.name, func(t *testing.T) {
			clock := newFakeClock()
			p := newTestPool(t, poolConfig{Targets: testURLs(2), Now: clock.Now,
				Balancer: SlowStart(b.new(), SlowStartOptions{Window: 10 * time.Second})})
			for _, x := range p.targets() {
				if x.Ramping() || x.EffectiveWeight() != 1 {
					t.Fatalf("initial target %s ramps (effective weight %v)", x, x.EffectiveWeight())
				}
			}
			eps := endpoints(testURLs(3), nil)
			if err := p.update(eps); err != nil {
				t.Fatal(err)
			}
			nt := p.targets()[2]
			if !nt.Ramping() || nt.EffectiveWeight() > 0.11 {
				t.Fatalf("new target: Ramping %v, effective weight %v, want ramping at 0.1", nt.Ramping(), nt.EffectiveWeight())
			}
			// Expected share 0.1 / 2.1 ≈ 4.8%.
			if s := share(p, nt, 2100); s > 0.09 {
				t.Errorf("at the start of the window the new target took %.1f%% of picks, want about 4.8%%", 100*s)
			}
			clock.Advance(5 * time.Second) // 0.5 / 2.5 = 20%
			if s := share(p, nt, 2500); s < 0.14 || s > 0.26 {
				t.Errorf("halfway through the window the new target took %.1f%% of picks, want about 20%%", 100*s)
			}
			clock.Advance(5 * time.Second)
			if nt.Ramping() || nt.EffectiveWeight() != 1 {
				t.Fatalf("after the window: Ramping %v, effective weight %v", nt.Ramping(), nt.EffectiveWeight())
			}
			if s := share(p, nt, 3000); s < 0.28 || s > 0.39 {
				t.Errorf("after the window the new target took %.1f%% of picks, want about 33%%", 100*s)
			}
		})
	}
}

func TestSlowStartReturningTargets(t *testing.T) {
	clock := newFakeClock()
	p := newTestPool(t, poolConfig{Targets: testURLs(3), Now: clock.Now,
		Outlier:  OutlierDetection{ConsecutiveFailures: 1, BaseEjectionTime: time.Second},
		Balancer: SlowStart(WeightedRoundRobin(), SlowStartOptions{Window: 10 * time.Second})})
	ts := p.targets()

	t.Run("ejection", func(t *testing.T) {
		p.acquire(ts[0])
		p.finish(ts[0], outcomeFailure)
		if ts[0].Healthy() {
			t.Fatal("target not ejected")
		}
		clock.Advance(2 * time.Second)
		if !ts[0].Healthy() || !ts[0].Ramping() {
			t.Fatalf("returned from ejection: Healthy %v, Ramping %v; want both", ts[0].Healthy(), ts[0].Ramping())
		}
		clock.Advance(10 * time.Second)
		if ts[0].Ramping() {
			t.Fatal("still ramping after the window")
		}
	})
	t.Run("removed and back", func(t *testing.T) {
		if err := p.update(endpoints(testURLs(2), nil)); err != nil {
			t.Fatal(err)
		}
		if err := p.update(endpoints(testURLs(3), nil)); err != nil {
			t.Fatal(err)
		}
		if p.targets()[2] != ts[2] || !ts[2].Ramping() {
			t.Fatal("a returning target does not ramp with its state")
		}
		if ts[1].Ramping() {
			t.Fatal("a target that stayed ramps")
		}
	})
	t.Run("weights", func(t *testing.T) {
		clock.Advance(5 * time.Second) // halfway
		eps := endpoints(testURLs(3), []int{1, 1, 4})
		if err := p.update(eps); err != nil {
			t.Fatal(err)
		}
		if got := ts[2].EffectiveWeight(); math.Abs(got-2) > 0.01 {
			t.Fatalf("weight 4 halfway through: effective weight %v, want 2", got)
		}
	})
}

func TestSlowStartActiveHealthReturnRamps(t *testing.T) {
	clock := newFakeClock()
	p := newTestPool(t, poolConfig{Targets: testURLs(2), Now: clock.Now,
		Balancer: SlowStart(LeastRequests(), SlowStartOptions{})})
	p.hc.HealthyThreshold, p.hc.UnhealthyThreshold = 1, 1
	x := p.targets()[0]
	p.recordCheck(x, "refused")
	if x.Healthy() {
		t.Fatal("target still healthy after a failed check")
	}
	p.recordCheck(x, "")
	if !x.Healthy() || !x.Ramping() {
		t.Fatalf("passed its checks again: Healthy %v, Ramping %v; want both", x.Healthy(), x.Ramping())
	}
}

func TestSlowStartWithoutItNoRamp(t *testing.T) {
	p := newTestPool(t, poolConfig{Targets: testURLs(1), Balancer: LeastRequests()})
	if err := p.update(endpoints(testURLs(2), nil)); err != nil {
		t.Fatal(err)
	}
	if x := p.targets()[1]; x.Ramping() || x.EffectiveWeight() != 1 {
		t.Fatal("a new target ramps without SlowStart")
	}
}

// slowBenchPool is benchPool with SlowStart and half of the targets
// ramping.
func slowBenchPool(tb testing.TB, bal Balancer) *pool {
	clock := newFakeClock()
	p := newTestPool(tb, poolConfig{Targets: testURLs(4), Now: clock.Now,
		Balancer: SlowStart(bal, SlowStartOptions{Window: time.Hour})})
	if err := p.update(endpoints(testURLs(8), []int{1, 2, 3, 4, 1, 2, 3, 4})); err != nil {
		tb.Fatal(err)
	}
	clock.Advance(10 * time.Minute)
	return p
}

func TestSlowStartPickDoesNotAllocate(t *testing.T) {
	for _, b := range slowBalancers() {
		t.Run(b.name, func(t *testing.T) {
			p := slowBenchPool(t, b.new())
			r := httptest.NewRequest("GET", "/", nil)
			p.pick(r, nil)
			if n := testing.AllocsPerRun(200, func() { p.pick(r, nil) }); n != 0 {
				t.Fatalf("pick allocates %v times while targets ramp", n)
			}
		})
	}
}

// BenchmarkPickSlowStart measures a pick over 8 targets, 4 of them ramping
// under SlowStart.
func BenchmarkPickSlowStart(b *testing.B) {
	for _, nb := range slowBalancers() {
		b.Run(nb.name, func(b *testing.B) {
			p := slowBenchPool(b, nb.new())
			r := httptest.NewRequest("GET", "/", nil)
			b.ReportAllocs()
			for b.Loop() {
				p.pick(r, nil)
			}
		})
	}
}
