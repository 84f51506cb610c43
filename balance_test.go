package pylon

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// newTestPool builds a pool (backend "test" unless named) and closes it
// when the test ends.
func newTestPool(tb testing.TB, cfg poolConfig) *pool {
	tb.Helper()
	if cfg.Backend == "" {
		cfg.Backend = "test"
	}
	p, err := newPool(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(p.close)
	return p
}

// testURLs returns n distinct target URLs.
func testURLs(n int) []string {
	s := make([]string, n)
	for i := range s {
		s[i] = fmt.Sprintf("http://10.0.0.%d:8080", i+1)
	}
	return s
}

// pickCounts picks n times (tried empty) and counts the picks per target.
func pickCounts(p *pool, r *http.Request, n int) map[string]int {
	counts := make(map[string]int)
	for range n {
		counts[p.pick(r, nil).String()]++
	}
	return counts
}

func TestRoundRobinExact(t *testing.T) {
	for _, bal := range []struct {
		name string
		b    Balancer
	}{{"explicit", RoundRobin()}, {"default", nil}} {
		t.Run(bal.name, func(t *testing.T) {
			p := newTestPool(t, poolConfig{Targets: testURLs(3), Balancer: bal.b})
			ts := p.targets()
			for i := range 9 {
				if got, want := p.pick(nil, nil), ts[i%3]; got != want {
					t.Fatalf("pick %d = %s, want %s", i, got, want)
				}
			}
		})
	}
}

func TestWeightedRoundRobin(t *testing.T) {
	t.Run("smooth sequence", func(t *testing.T) {
		// nginx's documented example: weights 5, 1, 1 give a a b a c a a.
		p := newTestPool(t, poolConfig{Targets: testURLs(3), Weights: []int{5, 1, 1}, Balancer: WeightedRoundRobin()})
		ts := p.targets()
		names := map[*Target]byte{ts[0]: 'a', ts[1]: 'b', ts[2]: 'c'}
		var seq []byte
		for range 14 {
			seq = append(seq, names[p.pick(nil, nil)])
		}
		if got, want := string(seq), "aabacaaaabacaa"; got != want {
			t.Fatalf("sequence %s, want %s", got, want)
		}
	})
	for _, tc := range []struct {
		weights []int
	}{
		{[]int{1, 1, 1}},
		{[]int{3, 2}},
		{[]int{10, 1, 4, 5}},
	} {
		t.Run(fmt.Sprint("proportional ", tc.weights), func(t *testing.T) {
			p := newTestPool(t, poolConfig{Targets: testURLs(len(tc.weights)), Weights: tc.weights, Balancer: WeightedRoundRobin()})
			total := 0
			for _, w := range tc.weights {
				total += w
			}
			const rounds = 50
			counts := pickCounts(p, nil, rounds*total)
			for i, tg := range p.targets() {
				if got, want := counts[tg.String()], rounds*tc.weights[i]; got != want {
					t.Errorf("%s (weight %d) got %d picks, want exactly %d", tg, tc.weights[i], got, want)
				}
			}
		})
	}
	t.Run("skips ineligible targets", func(t *testing.T) {
		p := newTestPool(t, poolConfig{Targets: testURLs(3), Weights: []int{5, 1, 1}, Balancer: WeightedRoundRobin()})
		ts := p.targets()
		for range 50 {
			if got := p.pick(nil, ts[:1]); got == ts[0] {
				t.Fatalf("picked tried target %s", got)
			}
		}
	})
}

func TestLeastRequests(t *testing.T) {
	t.Run("prefers idle", func(t *testing.T) {
		p := newTestPool(t, poolConfig{Targets: testURLs(3), Balancer: LeastRequests()})
		ts := p.targets()
		p.acquire(ts[0])
		p.acquire(ts[0])
		p.acquire(ts[1])
		for range 20 {
			if got := p.pick(nil, nil); got != ts[2] {
				t.Fatalf("picked %s with %d in flight, want the idle %s", got, got.InFlight(), ts[2])
			}
		}
		p.acquire(ts[2])
		p.acquire(ts[2])
		if got := p.pick(nil, nil); got != ts[1] {
			t.Fatalf("picked %s, want %s (1 in flight against 2)", got, ts[1])
		}
		p.finish(ts[0], outcomeSuccess)
		p.finish(ts[0], outcomeSuccess)
		if got := ts[0].InFlight(); got != 0 {
			t.Fatalf("InFlight = %d after finishing both, want 0", got)
		}
		if got := p.pick(nil, nil); got != ts[0] {
			t.Fatalf("picked %s, want the now idle %s", got, ts[0])
		}
	})
	t.Run("ties spread", func(t *testing.T) {
		p := newTestPool(t, poolConfig{Targets: testURLs(4), Balancer: LeastRequests()})
		counts := pickCounts(p, nil, 400)
		for _, tg := range p.targets() {
			if counts[tg.String()] != 100 {
				t.Fatalf("idle targets got %v picks, want 100 each", counts)
			}
		}
	})
	t.Run("weighted", func(t *testing.T) {
		p := newTestPool(t, poolConfig{Targets: testURLs(2), Weights: []int{4, 1}, Balancer: LeastRequests()})
		ts := p.targets()
		// Simulate requests that never finish: the loads settle at the
		// weight ratio (within a few requests: with unequal weights the
		// request about to be sent counts as a random draw).
		for range 1000 {
			p.acquire(p.pick(nil, nil))
		}
		if a, b := ts[0].InFlight(), ts[1].InFlight(); a < 790 || a > 810 {
			t.Fatalf("in flight %d and %d, want about 800 and 200 (weights 4 and 1)", a, b)
		}
	})
}

func TestPowerOfTwoChoices(t *testing.T) {
	p := newTestPool(t, poolConfig{Targets: testURLs(3), Balancer: PowerOfTwoChoices()})
	ts := p.targets()
	for range 5 {
		p.acquire(ts[0])
	}
	p.acquire(ts[1])
	counts := pickCounts(p, nil, 3000)
	if n := counts[ts[0].String()]; n != 0 {
		t.Errorf("most loaded target picked %d times, want never", n)
	}
	// The idle target loses only when it is not drawn: 1/3 of the time.
	if n := counts[ts[2].String()]; n < 1700 || n > 2300 {
		t.Errorf("idle target picked %d of 3000 times, want about 2000", n)
	}

	two := newTestPool(t, poolConfig{Targets: testURLs(2), Balancer: PowerOfTwoChoices()})
	two.acquire(two.targets()[0])
	if c := pickCounts(two, nil, 100); c[two.targets()[1].String()] != 100 {
		t.Errorf("with two targets, the idle one should always win: %v", c)
	}

	idle := newTestPool(t, poolConfig{Targets: testURLs(4), Balancer: PowerOfTwoChoices()})
	c := pickCounts(idle, nil, 4000)
	for _, tg := range idle.targets() {
		if n := c[tg.String()]; n < 700 || n > 1300 {
			t.Errorf("idle targets should share picks evenly: %v", c)
		}
	}
}

func TestConsistentHash(t *testing.T) {
	const keys = 5000
	req := func(key string) *http.Request {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		if key != "" {
			r.Header.Set("X-User", key)
		}
		return r
	}
	newCH := func(t *testing.T, urls []string, weights []int) *pool {
		return newTestPool(t, poolConfig{Targets: urls, Weights: weights, Balancer: ConsistentHash(HashHeader("x-user"))})
	}
	assign := func(p *pool, tried []*Target) []string {
		out := make([]string, keys)
		r := req("")
		for i := range out {
			r.Header.Set("X-User", fmt.Sprint("user-", i))
			out[i] = p.pick(r, tried).String()
		}
		return out
	}

	t.Run("stable and even", func(t *testing.T) {
		p := newCH(t, testURLs(5), nil)
		first, again := assign(p, nil), assign(p, nil)
		counts := map[string]int{}
		for i := range first {
			if first[i] != again[i] {
				t.Fatalf("key %d moved from %s to %s with an unchanged set", i, first[i], again[i])
			}
			counts[first[i]]++
		}
		for _, tg := range p.targets() {
			if n := counts[tg.String()]; n < 800 || n > 1200 {
				t.Errorf("uneven spread: %v", counts)
			}
		}
		// Another pool with the same targets maps keys the same way
		// (another replica of the gateway, or a restart).
		if other := assign(newCH(t, testURLs(5), nil), nil); fmt.Sprint(other) != fmt.Sprint(first) {
			t.Error("a second pool over the same targets maps keys differently")
		}
	})

	t.Run("minimal disruption on removal", func(t *testing.T) {
		urls := testURLs(5)
		before := assign(newCH(t, urls, nil), nil)
		removed := urls[2]
		after := assign(newCH(t, append(append([]string{}, urls[:2]...), urls[3:]...), nil), nil)
		spread := map[string]int{}
		for i := range before {
			if before[i] != removed {
				if after[i] != before[i] {
					t.Fatalf("key %d moved from %s to %s though its target stayed", i, before[i], after[i])
				}
				continue
			}
			spread[after[i]]++
		}
		if len(spread) < 3 {
			t.Errorf("the removed target's keys should spread over the others, went to %v", spread)
		}
	})

	t.Run("tried target gives up only its keys", func(t *testing.T) {
		p := newCH(t, testURLs(4), nil)
		before := assign(p, nil)
		out := p.targets()[1]
		during := assign(p, []*Target{out})
		for i := range before {
			switch {
			case during[i] == out.String():
				t.Fatalf("key %d went to the tried target", i)
			case before[i] != out.String() && during[i] != before[i]:
				t.Fatalf("key %d moved from %s though its target was not tried", i, before[i])
			}
		}
	})

	t.Run("weighted", func(t *testing.T) {
		p := newCH(t, testURLs(2), []int{1, 3})
		counts := map[string]int{}
		for _, s := range assign(p, nil) {
			counts[s]++
		}
		if n := counts[p.targets()[1].String()]; n < 3500 || n > 4000 {
			t.Errorf("weight 3 of 4 got %d of %d keys, want about 3750", n, keys)
		}
	})

	t.Run("empty key is round robin", func(t *testing.T) {
		p := newCH(t, testURLs(3), nil)
		ts := p.targets()
		r := req("")
		first := p.pick(r, nil)
		seen := map[*Target]bool{first: true}
		for range 2 {
			seen[p.pick(r, nil)] = true
		}
		if len(seen) != len(ts) {
			t.Errorf("three keyless picks reached %d targets, want 3", len(seen))
		}
	})
}

func TestHashKeys(t *testing.T) {
	withInfo := func(r *http.Request, ip string) *http.Request {
		return r.WithContext(NewContext(r.Context(), &RequestInfo{ClientIP: netip.MustParseAddr(ip)}))
	}
	tests := []struct {
		name string
		key  func(*http.Request) string
		req  func() *http.Request
		want string
	}{
		{"header", HashHeader("x-tenant"), func() *http.Request {
			r := httptest.NewRequest("GET", "/", nil)
			r.Header.Add("X-Tenant", "acme")
			r.Header.Add("X-Tenant", "other")
			return r
		}, "acme"},
		{"header missing", HashHeader("X-Tenant"), func() *http.Request { return httptest.NewRequest("GET", "/", nil) }, ""},
		{"cookie", HashCookie("session"), func() *http.Request {
			r := httptest.NewRequest("GET", "/", nil)
			r.Header.Add("Cookie", "theme=dark; sessionx=no")
			r.Header.Add("Cookie", "a=1;session=s3cr3t ; b=2")
			return r
		}, "s3cr3t"},
		{"cookie quoted", HashCookie("session"), func() *http.Request {
			r := httptest.NewRequest("GET", "/", nil)
			r.Header.Set("Cookie", `session="abc"`)
			return r
		}, "abc"},
		{"cookie missing", HashCookie("session"), func() *http.Request {
			r := httptest.NewRequest("GET", "/", nil)
			r.Header.Set("Cookie", "session; other=1")
			return r
		}, ""},
		{"ipv4", HashClientIP(), func() *http.Request {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = "192.0.2.7:51000"
			return r
		}, "192.0.2.7"},
		{"ipv6", HashClientIP(), func() *http.Request {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = "[2001:db8::1]:51000"
			return r
		}, "2001:db8::1"},
		{"ipv4-mapped ipv6", HashClientIP(), func() *http.Request {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = "[::ffff:192.0.2.7]:51000"
			return r
		}, "192.0.2.7"},
		{"request info wins", HashClientIP(), func() *http.Request {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = "10.0.0.1:51000" // a trusted proxy
			return withInfo(r, "2001:db8::42")
		}, "2001:db8::42"},
		{"request info same as peer", HashClientIP(), func() *http.Request {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = "[2001:db8::9]:51000"
			return withInfo(r, "2001:db8::9")
		}, "2001:db8::9"},
		{"unparseable address", HashClientIP(), func() *http.Request {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = "@"
			return r
		}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.key(tc.req()); got != tc.want {
				t.Errorf("key = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestHashClientIPv6Clients guards against the oxy bug of splitting on the
// first ':' and putting every IPv6 client in one bucket.
func TestHashClientIPv6Clients(t *testing.T) {
	key := HashClientIP()
	k := func(addr string) string {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = addr
		return key(r)
	}
	a, b := k("[2001:db8::1]:4000"), k("[2001:db8::2]:4000")
	if a == "" || a == b {
		t.Fatalf("two IPv6 clients share the key %q and %q", a, b)
	}
	if c := k("[2001:db8::1]:5000"); c != a {
		t.Fatalf("one IPv6 client on two ports has keys %q and %q", a, c)
	}

	// And they land on different targets often enough to spread load.
	p := newTestPool(t, poolConfig{Targets: testURLs(4), Balancer: ConsistentHash(key)})
	seen := map[*Target]bool{}
	for i := range 64 {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = fmt.Sprintf("[2001:db8::%x]:443", i+1)
		seen[p.pick(r, nil)] = true
	}
	if len(seen) != 4 {
		t.Fatalf("64 IPv6 clients reached %d of 4 targets", len(seen))
	}
}

func TestPickSkipsTried(t *testing.T) {
	clock := newFakeClock()
	for _, b := range testBalancers() {
		t.Run(b.name, func(t *testing.T) {
			p := newTestPool(t, poolConfig{Targets: testURLs(3), Balancer: b.new(), Now: clock.Now,
				Outlier: OutlierDetection{ConsecutiveFailures: 1}})
			ts := p.targets()
			r := httptest.NewRequest("GET", "/", nil)
			r.Header.Set("X-Key", "k")
			r.RemoteAddr = "192.0.2.1:1"
			for range 30 {
				if got := p.pick(r, ts[:1]); got == ts[0] {
					t.Fatalf("picked tried %s", got)
				}
				if got := p.pick(r, ts[:2]); got != ts[2] {
					t.Fatalf("picked %s, want the only untried %s", got, ts[2])
				}
				if got := p.pick(r, ts); got == nil {
					t.Fatal("pick returned nil with every target tried")
				}
			}
			// With one target ejected and the other two tried, the
			// healthy ones are tried again rather than the ejected one.
			p.acquire(ts[2])
			p.finish(ts[2], outcomeFailure)
			for range 30 {
				if got := p.pick(r, ts[:2]); got == ts[2] {
					t.Fatal("picked the ejected target while healthy ones remain")
				}
			}
		})
	}
}

type namedBalancer struct {
	name string
	new  func() Balancer
}

func testBalancers() []namedBalancer {
	return []namedBalancer{
		{"RoundRobin", RoundRobin},
		{"WeightedRoundRobin", WeightedRoundRobin},
		{"LeastRequests", LeastRequests},
		{"PowerOfTwoChoices", PowerOfTwoChoices},
		{"ConsistentHash", func() Balancer { return ConsistentHash(HashHeader("X-Key")) }},
		{"ConsistentHashClientIP", func() Balancer { return ConsistentHash(HashClientIP()) }},
	}
}

// nilBalancer breaks the Balancer contract.
type nilBalancer struct{}

func (nilBalancer) Pick(*http.Request, []*Target) *Target { return nil }

func TestPickNeverNil(t *testing.T) {
	p := newTestPool(t, poolConfig{Targets: testURLs(2), Balancer: nilBalancer{}})
	if p.pick(nil, nil) == nil || p.pick(nil, p.targets()[:1]) == nil {
		t.Fatal("pick returned nil")
	}
}

func TestPickZeroAllocs(t *testing.T) {
	for _, b := range testBalancers() {
		t.Run(b.name, func(t *testing.T) {
			p := newTestPool(t, poolConfig{Targets: testURLs(8), Balancer: b.new()})
			r := httptest.NewRequest("GET", "/", nil)
			r.Header.Set("X-Key", "user-42")
			if n := testing.AllocsPerRun(200, func() { p.pick(r, nil) }); n != 0 {
				t.Errorf("pick with all targets healthy: %v allocs, want 0", n)
			}
			tried := p.targets()[:1]
			p.pick(r, tried) // warm the scratch slice pool
			if n := testing.AllocsPerRun(200, func() { p.pick(r, tried) }); n > 0.1 {
				t.Errorf("pick with a tried target: %v allocs, want 0", n)
			}
		})
	}
}

// TestPoolConcurrent exercises picks, outcomes, health reads and checks
// from many goroutines, for the race detector.
func TestPoolConcurrent(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	tr := newTestTransport(t)
	for _, b := range testBalancers() {
		t.Run(b.name, func(t *testing.T) {
			p := newTestPool(t, poolConfig{
				Targets:   []string{srv.URL + "/a", srv.URL + "/b", srv.URL + "/c"},
				Weights:   []int{1, 2, 3},
				Balancer:  b.new(),
				Outlier:   OutlierDetection{ConsecutiveFailures: 2, BaseEjectionTime: time.Millisecond},
				Health:    HealthCheck{Path: "/healthz", Interval: time.Hour},
				Transport: tr,
			})
			var wg sync.WaitGroup
			for g := range 8 {
				wg.Go(func() {
					r := httptest.NewRequest("GET", "/", nil)
					r.Header.Set("X-Key", fmt.Sprint(g))
					var tried []*Target
					for i := range 300 {
						tg := p.pick(r, tried)
						p.acquire(tg)
						p.finish(tg, outcome((g+i)%3))
						_ = tg.Healthy()
						tried = append(tried[:0], tg)
					}
				})
			}
			wg.Go(p.checkNow)
			wg.Wait()
			for _, tg := range p.targets() {
				if n := tg.InFlight(); n != 0 {
					t.Errorf("%s InFlight = %d after all finished", tg, n)
				}
			}
		})
	}
}

func TestNewPoolTargets(t *testing.T) {
	p := newTestPool(t, poolConfig{
		Targets: []string{"http://10.0.0.1:8080", "https://api.internal/base/", "http://[2001:db8::1]:80"},
		Weights: []int{1, 2, 3},
	})
	ts := p.targets()
	if len(ts) != 3 {
		t.Fatalf("%d targets, want 3", len(ts))
	}
	want := []struct {
		str, host, path string
		weight          int
	}{
		{"http://10.0.0.1:8080", "10.0.0.1:8080", "", 1},
		{"https://api.internal/base/", "api.internal", "/base/", 2},
		{"http://[2001:db8::1]:80", "[2001:db8::1]:80", "", 3},
	}
	for i, w := range want {
		tg := ts[i]
		if tg.String() != w.str || tg.URL().Host != w.host || tg.URL().Path != w.path || tg.Weight() != w.weight {
			t.Errorf("target %d = %s host %q path %q weight %d, want %+v", i, tg, tg.URL().Host, tg.URL().Path, tg.Weight(), w)
		}
		if !tg.Healthy() || tg.InFlight() != 0 {
			t.Errorf("target %s should start healthy and idle", tg)
		}
	}
	var zero Target
	if !zero.Healthy() || zero.Weight() != 1 {
		t.Error("a zero Target should be healthy with weight 1")
	}
}

func TestNewPoolErrors(t *testing.T) {
	one := []string{"http://10.0.0.1"}
	tests := []struct {
		name string
		cfg  poolConfig
		want string
	}{
		{"weights without targets", poolConfig{Weights: []int{1}}, `pylon: backend "orders": 1 weights for 0 targets`},
		{"bad scheme", poolConfig{Targets: []string{"ftp://10.0.0.1"}}, `pylon: backend "orders": target "ftp://10.0.0.1": scheme must be http, https or h2c`},
		{"no scheme", poolConfig{Targets: []string{"10.0.0.1:8080"}}, `pylon: backend "orders": target "10.0.0.1:8080": invalid URL`},
		{"host only", poolConfig{Targets: []string{"orders.internal"}}, `target "orders.internal": scheme must be http, https or h2c`},
		{"missing host", poolConfig{Targets: []string{"http://"}}, `target "http://": missing host`},
		{"port without host", poolConfig{Targets: []string{"http://:8080"}}, `target "http://:8080": missing host`},
		{"bad port", poolConfig{Targets: []string{"http://h:port"}}, `target "http://h:port": invalid URL`},
		{"bad ipv6", poolConfig{Targets: []string{"http://[::1"}}, `target "http://[::1": invalid URL`},
		{"query", poolConfig{Targets: []string{"http://h/?a=1"}}, `target "http://h/?a=1": query is not allowed`},
		{"empty query", poolConfig{Targets: []string{"http://h/?"}}, `query is not allowed`},
		{"fragment", poolConfig{Targets: []string{"http://h/#top"}}, `target "http://h/#top": fragment is not allowed`},
		{"userinfo", poolConfig{Targets: []string{"http://u:p@h"}}, `target "http://u:p@h": user info is not allowed`},
		{"opaque", poolConfig{Targets: []string{"http:h"}}, `target "http:h": not an absolute http(s) URL`},
		{"duplicate", poolConfig{Targets: []string{"http://h", "http://h"}}, `target "http://h": listed twice`},
		{"weights length", poolConfig{Targets: one, Weights: []int{1, 2}}, `pylon: backend "orders": 2 weights for 1 targets`},
		{"weight zero", poolConfig{Targets: one, Weights: []int{0}}, `target "http://10.0.0.1": weight 0, want at least 1`},
		{"health path", poolConfig{Targets: one, Health: HealthCheck{Path: "healthz"}}, `pylon: backend "orders": HealthCheck.Path "healthz" must start with "/"`},
		{"health interval", poolConfig{Targets: one, Health: HealthCheck{Path: "/h", Interval: -1}}, `HealthCheck.Interval -1ns is negative`},
		{"health timeout", poolConfig{Targets: one, Health: HealthCheck{Path: "/h", Timeout: -1}}, `HealthCheck.Timeout -1ns is negative`},
		{"health healthy threshold", poolConfig{Targets: one, Health: HealthCheck{Path: "/h", HealthyThreshold: -1}}, `HealthCheck.HealthyThreshold -1 is negative`},
		{"health unhealthy threshold", poolConfig{Targets: one, Health: HealthCheck{Path: "/h", UnhealthyThreshold: -2}}, `HealthCheck.UnhealthyThreshold -2 is negative`},
		{"ejection base", poolConfig{Targets: one, Outlier: OutlierDetection{BaseEjectionTime: -time.Second}}, `pylon: backend "orders": OutlierDetection.BaseEjectionTime -1s is negative`},
		{"ejection max", poolConfig{Targets: one, Outlier: OutlierDetection{MaxEjectionTime: -time.Second}}, `OutlierDetection.MaxEjectionTime -1s is negative`},
		{"ejection base over max", poolConfig{Targets: one, Outlier: OutlierDetection{BaseEjectionTime: time.Minute, MaxEjectionTime: time.Second}}, `OutlierDetection.BaseEjectionTime 1m0s is longer than MaxEjectionTime 1s`},
		{"ejection max under default base", poolConfig{Targets: one, Outlier: OutlierDetection{MaxEjectionTime: time.Second}}, `OutlierDetection.MaxEjectionTime 1s is shorter than the default BaseEjectionTime 30s`},
		{"panic threshold", poolConfig{Targets: one, Outlier: OutlierDetection{PanicThreshold: 101}}, `OutlierDetection.PanicThreshold 101% is over 100%`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Backend = "orders"
			p, err := newPool(tc.cfg)
			if err == nil {
				p.close()
				t.Fatalf("newPool succeeded, want error containing %q", tc.want)
			}
			if !strings.HasPrefix(err.Error(), `pylon: backend "orders": `) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want one containing %q", err, tc.want)
			}
		})
	}
}

// fakeClock is an injectable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// recordHandler is a slog.Handler that keeps the messages it is given.
type recordHandler struct {
	mu   sync.Mutex
	msgs []string
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *recordHandler) WithGroup(string) slog.Handler            { return h }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.msgs = append(h.msgs, r.Message)
	return nil
}

// count returns how many messages contain s.
func (h *recordHandler) count(s string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, m := range h.msgs {
		if strings.Contains(m, s) {
			n++
		}
	}
	return n
}

// newTestTransport returns a transport whose idle connections are closed
// when the test ends, so no connection goroutine outlives it.
func newTestTransport(tb testing.TB) *http.Transport {
	tr := &http.Transport{}
	tb.Cleanup(tr.CloseIdleConnections)
	return tr
}

func benchPool(b *testing.B, bal Balancer) (*pool, *http.Request) {
	var weights []int // equal
	if _, ok := bal.(*weightedRR); ok {
		weights = []int{1, 2, 3, 4, 1, 2, 3, 4}
	}
	p := newTestPool(b, poolConfig{Targets: testURLs(8), Weights: weights, Balancer: bal})
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("X-Key", "user-42")
	r.RemoteAddr = "[2001:db8::7]:443"
	return p, r
}

// BenchmarkPick measures a pick over 8 healthy targets, the hot path of
// every proxied request.
func BenchmarkPick(b *testing.B) {
	for _, nb := range testBalancers() {
		b.Run(nb.name, func(b *testing.B) {
			p, r := benchPool(b, nb.new())
			b.ReportAllocs()
			for b.Loop() {
				p.pick(r, nil)
			}
		})
	}
}

// BenchmarkPickParallel measures picks, starts and finishes from all CPUs.
func BenchmarkPickParallel(b *testing.B) {
	for _, nb := range testBalancers() {
		b.Run(nb.name, func(b *testing.B) {
			p, r := benchPool(b, nb.new())
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					t := p.pick(r, nil)
					p.acquire(t)
					p.finish(t, outcomeSuccess)
				}
			})
		})
	}
}

// BenchmarkPickRetry measures a retry's pick: one target ejected and one
// already tried.
func BenchmarkPickRetry(b *testing.B) {
	for _, nb := range testBalancers() {
		b.Run(nb.name, func(b *testing.B) {
			p, r := benchPool(b, nb.new())
			ts := p.targets()
			ts[7].ejectedUntil.Store(time.Now().Add(time.Hour).UnixNano())
			tried := ts[:1]
			b.ReportAllocs()
			for b.Loop() {
				p.pick(r, tried)
			}
		})
	}
}

func TestDrainedTargets(t *testing.T) {
	clock := newFakeClock()
	for _, b := range testBalancers() {
		t.Run(b.name, func(t *testing.T) {
			p := newTestPool(t, poolConfig{Targets: testURLs(3), Balancer: b.new(), Now: clock.Now,
				Outlier: OutlierDetection{ConsecutiveFailures: 1}})
			ts := p.targets()
			r := httptest.NewRequest("GET", "/", nil)
			r.Header.Set("X-Key", "k")
			r.RemoteAddr = "192.0.2.1:1"
			ts[0].SetDrained(true)
			if !ts[0].Drained() || ts[1].Drained() {
				t.Fatal("Drained does not report SetDrained")
			}
			for range 30 {
				if got := p.pick(r, nil); got == ts[0] {
					t.Fatal("picked the drained target")
				}
			}
			// Panic mode (the other two ejected) still skips it.
			for _, x := range ts[1:] {
				p.acquire(x)
				p.finish(x, outcomeFailure)
			}
			for range 30 {
				if got := p.pick(r, nil); got == ts[0] {
					t.Fatal("picked the drained target in panic mode")
				}
			}
			// Every target drained: draining is ignored.
			ts[1].SetDrained(true)
			ts[2].SetDrained(true)
			if p.pick(r, nil) == nil {
				t.Fatal("pick returned nil with every target drained")
			}
			for _, x := range ts {
				x.SetDrained(false)
			}
			seen := map[*Target]bool{}
			clock.Advance(time.Hour)
			for range 60 {
				seen[p.pick(r, ts[1:])] = true
			}
			if !seen[ts[0]] {
				t.Fatal("an undrained target is not picked again")
			}
		})
	}
}
