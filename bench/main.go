// Command bench is Pylon's load benchmark. In one run it starts a loopback
// upstream, a bare httputil.ReverseProxy (on the standard transport with
// Pylon's settings) and a Pylon gateway (on its default transport), each in
// a process of its own, drives each proxy with concurrent keep-alive
// clients, and prints requests per second, p50 and p99 latency, and Pylon's
// ratio to the baseline. It also runs a Pylon route with the whole stack
// (metrics, request ID, recover, JSON access log, real IP, cached JWT, rate
// limit, circuit breaker) and reports its ratio to the plain route.
//
// When nginx is on PATH (apt-get install nginx), it is run too, as a reverse
// proxy to the same upstream (in the foreground, from a configuration in a
// temporary directory, one worker per CPU, keep-alive connections to the
// upstream), and Pylon's ratio to it is printed.
//
//	go run ./bench                 # wrk when installed, else a Go client
//	go run ./bench -d 10s -c 64 -rounds 3
//	go run ./bench -redis          # and the shared-breaker scenario
//	go run ./bench -redis-only     # that scenario alone
//	go run ./bench -overload       # and the overload scenarios
//	go run ./bench -overload-only  # those alone (about a minute)
//
// With -redis it also starts a redis-server of its own (on a free loopback
// port; redis-server must be on PATH) and two gateway replicas that share a
// circuit breaker through it (pylonredis.BreakerStore) on one route and
// have a plain route beside it. It drives both replicas at once, half the
// connections each, on the plain route and on the shared-breaker route,
// alternating, and prints the ratio of their requests/s; then it freezes
// Redis (SIGSTOP) for one run of the shared route and prints its p99
// against the store's timeout.
//
// With -overload it also starts upstreams whose latency it sets (each a
// process of its own) and a gateway in front of them, and drives it with a
// closed-loop Go client: an upstream whose latency grows with its
// concurrency, unguarded, behind static per-backend limits and behind
// overload.Adaptive (throughput, p50 and p99, and the ratios the adaptive
// limit is held to); a fast and a slow target, unguarded and behind
// per-target and per-backend limits (answers and refusals per second, p99
// of both, the share sent to the slow target); and two targets, one with a
// slow tail, without hedging, with fixed hedge delays and with hedging after
// the observed p95 (p50, p99, and upstream requests per client request).
// -overload-d sets each of its runs' length.
//
// The load generator is wrk when it is on PATH (apt-get install wrk), which
// leaves the Go processes alone with the proxy work; -client=go forces the
// built-in generator.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/breaker"
	"github.com/pylon-gateway/pylon/cache"
	"github.com/pylon-gateway/pylon/gatewaytest/jwttest"
	"github.com/pylon-gateway/pylon/middleware"
	"github.com/pylon-gateway/pylon/middleware/jwtauth"
	"github.com/pylon-gateway/pylon/observe"
	"github.com/pylon-gateway/pylon/ratelimit"
)

func main() {
	role := flag.String("role", "", "internal: run as upstream, httputil or pylon")
	upstreamURL := flag.String("upstream", "", "internal: upstream URL for a proxy role")
	dur := flag.Duration("d", 5*time.Second, "duration of each measured run")
	conns := flag.Int("c", 64, "concurrent keep-alive connections")
	size := flag.Int("size", 1024, "response body size in bytes")
	rounds := flag.Int("rounds", 3, "measured runs per proxy, alternating; the median is reported")
	client := flag.String("client", "auto", "load generator: auto, wrk or go")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of one server's process to this file")
	profileRole := flag.String("profile-role", "pylon", "the server -cpuprofile profiles: pylon, pylon-stack, pylon-cache, pylon-lean, pylon-stack-lean or httputil")
	withRedis := flag.Bool("redis", false, "also run the shared-breaker scenario on a redis-server of its own")
	redisOnly := flag.Bool("redis-only", false, "run the shared-breaker scenario only (implies -redis)")
	redisAddr := flag.String("redis-addr", "", "internal: Redis address for the pylon-shared role")
	flag.Parse()

	if serveOverloadRole(*role) { // overload.go
		return
	}
	if *role == "pylon-shared" {
		serveShared(*upstreamURL, *redisAddr)
		return
	}
	if *role != "" {
		if *cpuprofile != "" {
			f, err := os.Create(*cpuprofile)
			if err != nil {
				log.Fatal(err)
			}
			if err := pprof.StartCPUProfile(f); err != nil {
				log.Fatal(err)
			}
			defer pprof.StopCPUProfile()
		}
		serveRole(*role, *upstreamURL, *size)
		return
	}
	profileFor[*profileRole] = *cpuprofile
	if *overloadOnly {
		overloadScenario(*overloadD)
		return
	}

	up := startChild("upstream", "", *size)
	defer up.stop()
	gen := *client
	if gen == "auto" {
		gen = "go"
		if _, err := exec.LookPath("wrk"); err == nil {
			gen = "wrk"
		}
	}
	if *redisOnly {
		fmt.Printf("load: %s, %d connections, %s per run, %d rounds, %d-byte responses\n", gen, *conns, *dur, *rounds, *size)
		sharedScenario(gen, up.url, *size, *conns, *dur, *rounds)
		return
	}
	base := startChild("httputil", up.url, *size)
	defer base.stop()
	pyl := startChild("pylon", up.url, *size)
	defer pyl.stop()
	stack := startChild("pylon-stack", up.url, *size)
	defer stack.stop()
	cached := startChild("pylon-cache", up.url, *size)
	defer cached.stop()
	lean := startChild("pylon-lean", up.url, *size)
	defer lean.stop()
	leanStack := startChild("pylon-stack-lean", up.url, *size)
	defer leanStack.stop()
	direct := &child{url: up.url}
	var ngx *nginxProc
	if _, err := exec.LookPath("nginx"); err == nil {
		ngx = startNginx(up.url)
		defer ngx.stop()
	}

	fmt.Printf("load: %s, %d connections, %s per run, %d rounds, %d-byte responses, GOMAXPROCS per process: default\n",
		gen, *conns, *dur, *rounds, *size)

	// Warm both up (connection pools, page cache), then alternate runs so
	// that drift on the machine hits both alike.
	runs := []struct {
		name string
		c    *child
		res  []result
	}{
		{name: "httputil.ReverseProxy", c: base},
		{name: "pylon", c: pyl},
		{name: "pylon, whole stack", c: stack},
		{name: "pylon, cached route", c: cached},
		{name: "upstream, direct", c: direct},
		{name: "pylon, lean server", c: lean},
		{name: "stack, lean server", c: leanStack},
	}
	if ngx != nil {
		runs = append(runs, struct {
			name string
			c    *child
			res  []result
		}{name: "nginx", c: &child{url: ngx.url, master: ngx.cmd.Process.Pid}})
	}
	for _, r := range runs {
		load(gen, r.c.url+"/bench", r.c.header, *conns, time.Second)
	}
	for range *rounds {
		for i := range runs {
			runs[i].res = append(runs[i].res, measure(gen, runs[i].c, *conns, *dur))
		}
	}
	med := make([]result, len(runs))
	fmt.Printf("\n%-22s %12s %10s %10s %12s\n", "proxy", "req/s", "p50", "p99", "CPU/request")
	for i, r := range runs {
		med[i] = median(r.res)
		cpu := "-"
		if med[i].cpu > 0 {
			cpu = fmt.Sprintf("%.1fµs", float64(med[i].cpu)/float64(time.Microsecond))
		}
		fmt.Printf("%-22s %12.0f %10s %10s %12s\n", r.name, med[i].rps, med[i].p50, med[i].p99, cpu)
	}
	b, p, st, ca, dir, l, ls := med[0], med[1], med[2], med[3], med[4], med[5], med[6]
	fmt.Printf("\nratio pylon/httputil: %.2fx req/s, p99 %s vs %s\n", p.rps/b.rps, p.p99, b.p99)
	fmt.Printf("ratio whole stack/plain route: %.2fx req/s\n", st.rps/p.rps)
	fmt.Printf("ratio cached route/direct upstream: %.2fx req/s\n", ca.rps/dir.rps)
	fmt.Printf("ratio lean server/httputil: %.2fx req/s, p99 %s vs %s\n", l.rps/b.rps, l.p99, b.p99)
	fmt.Printf("ratio lean server: whole stack/plain route: %.2fx req/s\n", ls.rps/l.rps)
	if ngx != nil {
		n := med[7]
		fmt.Printf("ratio pylon/nginx: %.2fx req/s, p99 %s vs %s\n", p.rps/n.rps, p.p99, n.p99)
		fmt.Printf("ratio lean server/nginx: %.2fx req/s, p99 %s vs %s\n", l.rps/n.rps, l.p99, n.p99)
	}
	fmt.Printf("\nper round (req/s):")
	for _, r := range runs {
		fmt.Printf("\n  %-22s", r.name)
		for _, x := range r.res {
			fmt.Printf(" %8.0f", x.rps)
		}
	}
	fmt.Println()
	if *withRedis {
		sharedScenario(gen, up.url, *size, *conns, *dur, *rounds)
	}
	if *withOverload {
		overloadScenario(*overloadD)
	}
}

type result struct {
	rps      float64
	p50, p99 time.Duration
	cpu      time.Duration // the proxy's processes' CPU time per request; 0 when unknown
}

// measure runs one load run against c and adds the CPU time its processes
// used per request (user and system, from /proc): a figure that other work
// on the machine disturbs far less than requests per second.
func measure(gen string, c *child, conns int, d time.Duration) result {
	if c.master != 0 {
		c.pids = childrenOf(c.master)
	}
	before, ok := cpuOf(c.pids)
	r := load(gen, c.url+"/bench", c.header, conns, d)
	after, ok2 := cpuOf(c.pids)
	if n := r.rps * d.Seconds(); ok && ok2 && n > 0 {
		r.cpu = time.Duration(float64(after-before) / n)
	}
	return r
}

func median(rs []result) result {
	slices.SortFunc(rs, func(a, b result) int {
		if a.rps < b.rps {
			return -1
		}
		if a.rps > b.rps {
			return 1
		}
		return 0
	})
	return rs[len(rs)/2]
}

// sameTransport is the baseline's transport: the standard transport with the
// settings Pylon's default transport is given (pylon.NewTransport).
func sameTransport() *http.Transport {
	return &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		DisableCompression:    true,
	}
}

func serveRole(role, upstream string, size int) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	role, lean := strings.CutSuffix(role, "-lean")
	var h http.Handler
	switch role {
	case "upstream":
		body := []byte(strings.Repeat("x", size))
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Write(body)
		})
	case "httputil":
		target, _ := url.Parse(upstream)
		h = &httputil.ReverseProxy{
			ErrorLog:  log.New(io.Discard, "", 0), // wrk's hang-ups at the end of each run
			Transport: sameTransport(),
			Rewrite: func(pr *httputil.ProxyRequest) {
				pr.SetURL(target)
				pr.SetXForwarded()
			},
		}
	case "pylon":
		h = plainGateway(upstream)
	case "pylon-cache":
		h = cachedGateway(upstream)
	case "pylon-stack":
		var token string
		h, token = stackGateway(upstream)
		fmt.Println("http://" + ln.Addr().String())
		fmt.Println(token)
		serve(ln, h, lean)
		return
	default:
		log.Fatalf("unknown role %q", role)
	}
	fmt.Println("http://" + ln.Addr().String())
	fmt.Println()
	serve(ln, h, lean)
}

// plainGateway is one route to one backend, nothing else.
func plainGateway(upstream string) http.Handler {
	b := pylon.MustNewBackend("bench", pylon.BackendOptions{Targets: []string{upstream}})
	g := pylon.New(pylon.Options{})
	g.Route("GET /bench").To(b)
	return g
}

// cachedGateway is the plain route behind a response cache that keeps the
// upstream's answer for a minute (the upstream sends no cache headers).
func cachedGateway(upstream string) http.Handler {
	b := pylon.MustNewBackend("bench", pylon.BackendOptions{Targets: []string{upstream}})
	c := cache.MustNew(cache.Options{MaxBytes: 64 << 20, DefaultTTL: time.Minute})
	g := pylon.New(pylon.Options{})
	g.Route("GET /bench").Use(c.Middleware).To(b)
	return g
}

// stackGateway is the plain route with the whole stack in front of it, as a
// production gateway would run: metrics, request ID, recover, a JSON access
// log (to io.Discard), real IP, a JWT check (verified once, then cached), a
// per-subject rate limit that never trips and a circuit breaker.
func stackGateway(upstream string) (http.Handler, string) {
	idp := jwttest.NewIssuer()
	verifier, err := jwtauth.New(context.Background(), jwtauth.Options{
		JWKS:       idp.JWKS(),
		Issuer:     idp.URL,
		Audience:   []string{jwttest.DefaultAudience},
		Algorithms: []string{"RS256"},
	})
	if err != nil {
		log.Fatal(err)
	}
	token := idp.Mint(map[string]any{"sub": "bench-user", "exp": time.Now().Add(24 * time.Hour).Unix()})
	metrics, err := observe.NewMetrics(prometheus.NewRegistry(), observe.MetricsOptions{})
	if err != nil {
		log.Fatal(err)
	}
	logger := slog.New(slog.NewJSONHandler(io.Discard, nil))
	b := pylon.MustNewBackend("bench", pylon.BackendOptions{Targets: []string{upstream}})
	g := pylon.New(pylon.Options{})
	g.Use(metrics.Middleware, middleware.RequestID, middleware.Recover(logger),
		middleware.AccessLog(logger))
	g.Route("GET /bench").
		Use(jwtauth.Require(verifier),
			ratelimit.MustNew(ratelimit.BySubject, ratelimit.PerSecond(1_000_000)),
			breaker.MustNew(breaker.Settings{Name: "bench"}).Middleware).
		To(b)
	return g, token
}

// serve runs h on a server from pylon.NewServer, on net/http's connection
// loop or, with lean, on Pylon's (RunOptions.LeanHTTP1).
func serve(ln net.Listener, h http.Handler, lean bool) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	srv := pylon.NewServer("", h)
	if err := pylon.RunWithOptions(ctx, srv, pylon.RunOptions{Listener: ln, DrainTimeout: time.Second, LeanHTTP1: lean}); err != nil {
		log.Fatal(err)
	}
}

// profileFor maps a role to the CPU profile its process writes, if any.
var profileFor = map[string]string{}

// children are stopped by fatal, so a failed start leaves no process behind.
var children []*child

func fatal(format string, args ...any) {
	for _, c := range children {
		c.stop()
	}
	log.Fatalf(format, args...)
}

type child struct {
	cmd    *exec.Cmd
	url    string
	header string // "Authorization: Bearer ..." for the stack, else empty
	pids   []int  // the processes whose CPU time is the proxy's; none for the upstream run direct
	master int    // nginx's master process: its workers are the proxy's processes
}

func startChild(role, upstream string, size int, extra ...string) *child {
	exe, err := os.Executable()
	if err != nil {
		log.Fatal(err)
	}
	args := []string{"-role", role, "-upstream", upstream, "-size", strconv.Itoa(size)}
	if p := profileFor[role]; p != "" {
		args = append(args, "-cpuprofile", p)
	}
	cmd := exec.Command(exe, append(args, extra...)...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		log.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	br := bufio.NewReader(out)
	line, err := br.ReadString('\n')
	if err != nil {
		fatal("%s did not start: %v", role, err)
	}
	token, err := br.ReadString('\n')
	if err != nil {
		fatal("%s did not start: %v", role, err)
	}
	c := &child{cmd: cmd, url: strings.TrimSpace(line), pids: []int{cmd.Process.Pid}}
	children = append(children, c)
	if token = strings.TrimSpace(token); token != "" {
		c.header = "Authorization: Bearer " + token
	}
	return c
}

func (c *child) stop() {
	_ = c.cmd.Process.Signal(os.Interrupt)
	_ = c.cmd.Wait()
}

func load(gen, target, header string, conns int, d time.Duration) result {
	if gen == "wrk" {
		return loadWrk(target, header, conns, d)
	}
	return loadGo(target, header, conns, d)
}

var (
	wrkRPS = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkPct = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([0-9.]+)(us|ms|s)`)
)

func loadWrk(target, header string, conns int, d time.Duration) result {
	args := []string{"-t2", "-c" + strconv.Itoa(conns), "-d" + strconv.Itoa(int(d.Seconds())) + "s", "--latency"}
	if header != "" {
		args = append(args, "-H", header)
	}
	out, err := exec.Command("wrk", append(args, target)...).CombinedOutput()
	if err != nil {
		fatal("wrk: %v\n%s", err, out)
	}
	var r result
	if m := wrkRPS.FindSubmatch(out); m != nil {
		r.rps, _ = strconv.ParseFloat(string(m[1]), 64)
	}
	for _, m := range wrkPct.FindAllSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(string(m[2]), 64)
		unit := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second}[string(m[3])]
		dv := time.Duration(math.Round(v * float64(unit)))
		if string(m[1]) == "50" {
			r.p50 = dv
		} else {
			r.p99 = dv
		}
	}
	return r
}

func loadGo(target, header string, conns int, d time.Duration) result {
	name, value, _ := strings.Cut(header, ": ")
	tr := &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	deadline := time.Now().Add(d)
	lat := make([][]time.Duration, conns)
	var wg sync.WaitGroup
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				t0 := time.Now()
				req, _ := http.NewRequest("GET", target, nil)
				if name != "" {
					req.Header.Set(name, value)
				}
				res, err := client.Do(req)
				if err != nil {
					continue
				}
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode == http.StatusOK {
					lat[i] = append(lat[i], time.Since(t0))
				}
			}
		}()
	}
	wg.Wait()
	all := slices.Concat(lat...)
	slices.Sort(all)
	if len(all) == 0 {
		return result{}
	}
	return result{
		rps: float64(len(all)) / d.Seconds(),
		p50: all[len(all)/2],
		p99: all[len(all)*99/100],
	}
}
