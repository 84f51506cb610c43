package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/overload"
)

// The -overload scenarios: concurrency limits, the adaptive limit and
// hedging, each against upstreams of their own (each a process, on a free
// loopback port) through one gateway process, driven by a closed-loop Go
// client in this process (a shed client pauses ovShedPause before its next
// request, as a client honouring a shortened Retry-After would).
var (
	withOverload = flag.Bool("overload", false, "also run the overload scenarios (limits, adaptive limit, hedging)")
	overloadOnly = flag.Bool("overload-only", false, "run the overload scenarios only (implies -overload)")
	overloadD    = flag.Duration("overload-d", 3*time.Second, "measured duration of each overload run, after 0.5s of warm-up")

	// Internal: the delay upstream's and the overload gateway's settings.
	delayBase   = flag.Duration("base", 0, "internal: delay upstream: base latency")
	delayKnee   = flag.Int("knee", 0, "internal: delay upstream: requests in flight past which it slows in proportion (0: never)")
	delayJitter = flag.Duration("jitter", 0, "internal: delay upstream: uniform extra latency up to this")
	delayTail   = flag.Duration("tail", 0, "internal: delay upstream: latency of the slow tail")
	delayTailP  = flag.Float64("tail-p", 0, "internal: delay upstream: share of requests in the slow tail")
	gwTargets   = flag.String("targets", "", "internal: overload gateway: name=URL,... of its upstreams")
)

const (
	ovWarm      = 500 * time.Millisecond
	ovShedPause = 20 * time.Millisecond

	// The contended upstream: ovBase × max(1, in-flight/ovKnee).
	ovBase    = 20 * time.Millisecond
	ovKnee    = 4
	ovClients = 16
)

// ovStatic are the static per-backend limits tried by hand on the contended
// upstream.
var ovStatic = []int{2, 4, 6, 8}

// serveOverloadRole runs this process as one of the scenarios' servers and
// reports whether role was one of them.
func serveOverloadRole(role string) bool {
	var h http.Handler
	switch role {
	case "delay":
		h = delayUpstream(*delayBase, *delayKnee, *delayJitter, *delayTail, *delayTailP)
	case "overload-gw":
		targets := map[string]string{}
		for kv := range strings.SplitSeq(*gwTargets, ",") {
			k, v, _ := strings.Cut(kv, "=")
			targets[k] = v
		}
		h = overloadGateway(targets)
	default:
		return false
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("http://" + ln.Addr().String())
	fmt.Println()
	serve(ln, h, false)
	return true
}

// delayUpstream answers after base (× in-flight/knee past knee requests in
// flight, when knee > 0) plus up to jitter, or after tail for a share tailP
// of requests. GET /_count answers the number of requests it received.
func delayUpstream(base time.Duration, knee int, jitter, tail time.Duration, tailP float64) http.Handler {
	var inflight, arrivals atomic.Int64
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/_count" {
			fmt.Fprint(w, arrivals.Load())
			return
		}
		arrivals.Add(1)
		n := inflight.Add(1)
		defer inflight.Add(-1)
		d := base
		if knee > 0 {
			d = time.Duration(float64(base) * math.Max(1, float64(n)/float64(knee)))
		}
		if jitter > 0 {
			d += rand.N(jitter)
		}
		if tailP > 0 && rand.Float64() < tailP {
			d = tail
		}
		t := time.NewTimer(d) // the simulated latency
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "ok")
	})
}

// overloadGateway serves one route per scenario row, each to a backend of
// its own: /c/... to the contended upstream, /t/... to a fast and a slow
// one, /h/... to one with a slow tail and a fast one. GET /_stats reports
// the adaptive limit.
func overloadGateway(targets map[string]string) http.Handler {
	g := pylon.New(pylon.Options{})
	add := func(path string, urls []string, guard pylon.Guard, hedge pylon.HedgeOptions) {
		b := pylon.MustNewBackend(strings.ReplaceAll(strings.Trim(path, "/"), "/", "-"), pylon.BackendOptions{
			Targets: urls,
			Guard:   guard,
			Hedge:   hedge,
			// Every target is up: a slow one must be limited, not ejected.
			Outlier: pylon.OutlierDetection{ConsecutiveFailures: -1},
		})
		g.Route("GET " + path).To(b)
	}
	none := pylon.HedgeOptions{}
	c := []string{targets["contended"]}
	add("/c/none", c, nil, none)
	for _, n := range ovStatic {
		add("/c/static"+strconv.Itoa(n), c, overload.MustPerBackend(overload.Limits{MaxInFlight: n}), none)
	}
	adaptive := overload.MustAdaptive(overload.AdaptiveOptions{})
	add("/c/adaptive", c, adaptive, none)

	pair := []string{targets["fast"], targets["slow"]}
	add("/t/none", pair, nil, none)
	add("/t/pertarget", pair, overload.MustPerTarget(overload.Limits{MaxInFlight: 4}), none)
	add("/t/perbackend", pair, overload.MustPerBackend(overload.Limits{MaxInFlight: 8, MaxQueued: 8, MaxWait: 10 * time.Millisecond}), none)

	hp := []string{targets["tailed"], targets["fast"]}
	add("/h/none", hp, nil, none)
	add("/h/fixed2", hp, nil, pylon.HedgeOptions{Delay: 2 * time.Millisecond})
	add("/h/fixed20", hp, nil, pylon.HedgeOptions{Delay: 20 * time.Millisecond})
	add("/h/p95", hp, nil, pylon.HedgeOptions{Delay: time.Millisecond, Observed: true})

	g.Route("GET /_stats").Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st := adaptive.Stats()
		fmt.Fprintf(w, "limit %d, minRTT %v, admitted %d, shed %d", st.Limit, adaptive.MinRTT().Round(100*time.Microsecond), st.Admitted, st.Shed)
	}))
	if err := g.Err(); err != nil {
		log.Fatal(err)
	}
	return g
}

// ovResult is one closed-loop run.
type ovResult struct {
	ok, shed, total int // total: every request answered, warm-up included
	rps, shedRPS    float64
	p50, p99, p999  time.Duration // of the 200s
	shedP99         time.Duration // of the refusals
}

// ovLoad drives url with clients closed-loop clients for ovWarm + d and
// measures the requests sent after the warm-up and answered before the end.
func ovLoad(url string, clients int, d time.Duration) ovResult {
	tr := &http.Transport{MaxIdleConnsPerHost: clients, DisableCompression: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	start := time.Now()
	from, end := start.Add(ovWarm), start.Add(ovWarm+d)
	var mu sync.Mutex
	var ok, shed []time.Duration
	total := 0
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for time.Now().Before(end) {
				t0 := time.Now()
				res, err := c.Get(url)
				if err != nil {
					fatal("overload: %s: %v", url, err)
				}
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				el := time.Since(t0)
				counted := t0.After(from) && time.Now().Before(end)
				mu.Lock()
				total++
				switch {
				case counted && res.StatusCode == http.StatusOK:
					ok = append(ok, el)
				case counted && res.StatusCode == http.StatusServiceUnavailable:
					shed = append(shed, el)
				case res.StatusCode != http.StatusOK && res.StatusCode != http.StatusServiceUnavailable:
					mu.Unlock()
					fatal("overload: %s: status %d", url, res.StatusCode)
				}
				mu.Unlock()
				if res.StatusCode != http.StatusOK {
					time.Sleep(ovShedPause) // the client's back-off, not a wait for an event
				}
			}
		})
	}
	wg.Wait()
	slices.Sort(ok)
	slices.Sort(shed)
	r := ovResult{ok: len(ok), shed: len(shed), total: total,
		rps: float64(len(ok)) / d.Seconds(), shedRPS: float64(len(shed)) / d.Seconds()}
	r.p50, r.p99, r.p999 = pct(ok, 500), pct(ok, 990), pct(ok, 999)
	r.shedP99 = pct(shed, 990)
	return r
}

// pct returns the p-th per-mille of sorted xs (0 when empty).
func pct(xs []time.Duration, p int) time.Duration {
	if len(xs) == 0 {
		return 0
	}
	return xs[min(len(xs)-1, len(xs)*p/1000)]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

// get returns the body of GET url.
func get(url string) string {
	res, err := http.Get(url)
	if err != nil {
		fatal("%v", err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return string(b)
}

// arrivals returns the requests a delay upstream has received.
func arrivals(c *child) int {
	n, err := strconv.Atoi(get(c.url + "/_count"))
	if err != nil {
		fatal("overload: %s/_count: %v", c.url, err)
	}
	return n
}

// overloadScenario starts the scenarios' upstreams and gateway and runs
// the three scenarios once.
func overloadScenario(d time.Duration) {
	delay := func(args ...string) *child { return startChild("delay", "", 0, args...) }
	contended := delay("-base", ovBase.String(), "-knee", strconv.Itoa(ovKnee))
	defer contended.stop()
	fast := delay("-base", "5ms")
	defer fast.stop()
	slow := delay("-base", "200ms")
	defer slow.stop()
	tailed := delay("-base", "4ms", "-jitter", "2ms", "-tail", "150ms", "-tail-p", "0.03")
	defer tailed.stop()
	gw := startChild("overload-gw", "", 0, "-targets",
		"contended="+contended.url+",fast="+fast.url+",slow="+slow.url+",tailed="+tailed.url)
	defer gw.stop()

	fmt.Printf("\noverload: closed-loop Go clients, %s per run after %s of warm-up, a shed client pauses %s\n", d, ovWarm, ovShedPause)
	contentionScenario(gw, d)
	limitsScenario(gw, slow, d)
	hedgeScenario(gw, tailed, fast, d)
}

func contentionScenario(gw *child, d time.Duration) {
	fmt.Printf("\ncontended upstream: %s × max(1, in-flight/%d), %d clients unless marked\n", ovBase, ovKnee, ovClients)
	fmt.Printf("%-28s %9s %9s %9s %9s\n", "guard", "req/s", "p50", "p99", "shed/s")
	row := func(name, path string, clients int) ovResult {
		r := ovLoad(gw.url+path, clients, d)
		fmt.Printf("%-28s %9.0f %9s %9s %9.0f\n", name, r.rps, ms(r.p50), ms(r.p99), r.shedRPS)
		return r
	}
	unc := row("none, 1 client (uncontended)", "/c/none", 1)
	none := row("none", "/c/none", ovClients)
	none2 := row(fmt.Sprintf("none, %d clients", 2*ovClients), "/c/none", 2*ovClients)
	var best ovResult
	bestN := 0
	for _, n := range ovStatic {
		r := row(fmt.Sprintf("static per-backend %d", n), "/c/static"+strconv.Itoa(n), ovClients)
		if r.rps > best.rps {
			best, bestN = r, n
		}
	}
	a := row("overload.Adaptive", "/c/adaptive", ovClients)
	a2 := row(fmt.Sprintf("overload.Adaptive, %d clients", 2*ovClients), "/c/adaptive", 2*ovClients)
	fmt.Printf("adaptive: %s\n", get(gw.url+"/_stats"))
	fmt.Printf("adaptive, %d clients: p99 %.2f× uncontended p50 (bound 2×), throughput %.0f %% of the best static limit (%d, %.0f req/s; bound 90 %%)\n",
		ovClients, float64(a.p99)/float64(unc.p50), 100*a.rps/best.rps, bestN, best.rps)
	fmt.Printf("adaptive, %d clients: p99 %.2f× uncontended p50, throughput %.0f %% of the best static limit at %d\n",
		2*ovClients, float64(a2.p99)/float64(unc.p50), 100*a2.rps/best.rps, ovClients)
	fmt.Printf("no limit: p99 %.2f× uncontended p50 at %d clients, %.2f× at %d\n",
		float64(none.p99)/float64(unc.p50), ovClients, float64(none2.p99)/float64(unc.p50), 2*ovClients)
}

func limitsScenario(gw, slow *child, d time.Duration) {
	const clients = 32
	fmt.Printf("\na fast (5 ms) and a slow (200 ms) target, round robin, %d clients\n", clients)
	fmt.Printf("%-36s %9s %9s %9s %9s %12s %10s\n", "guard", "200/s", "p50", "p99", "503/s", "503 p99", "to slow")
	for _, r := range []struct{ name, path string }{
		{"none", "/t/none"},
		{"per target: 4 in flight", "/t/pertarget"},
		{"per backend: 8 + 8 queued ≤ 10 ms", "/t/perbackend"},
	} {
		before := arrivals(slow)
		res := ovLoad(gw.url+r.path, clients, d)
		toSlow := float64(arrivals(slow)-before) / float64(res.total)
		fmt.Printf("%-36s %9.0f %9s %9s %9.0f %12s %9.1f%%\n", r.name, res.rps, ms(res.p50), ms(res.p99), res.shedRPS, ms(res.shedP99), 100*toSlow)
	}
}

func hedgeScenario(gw, tailed, fast *child, d time.Duration) {
	const clients = 8
	fmt.Printf("\nhedging: a target of 4-6 ms with 3 %% of its answers at 150 ms, and one of 5 ms, round robin, %d clients\n", clients)
	fmt.Printf("%-34s %9s %9s %9s %9s %16s\n", "hedge", "req/s", "p50", "p99", "p99.9", "upstream/request")
	for _, r := range []struct{ name, path string }{
		{"none", "/h/none"},
		{"fixed 2 ms", "/h/fixed2"},
		{"fixed 20 ms", "/h/fixed20"},
		{"observed p95 (floor 1 ms)", "/h/p95"},
	} {
		before := arrivals(tailed) + arrivals(fast)
		res := ovLoad(gw.url+r.path, clients, d)
		up := float64(arrivals(tailed)+arrivals(fast)-before) / float64(res.total)
		fmt.Printf("%-34s %9.0f %9s %9s %9s %16.3f\n", r.name, res.rps, ms(res.p50), ms(res.p99), ms(res.p999), up)
	}
}
