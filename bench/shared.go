package main

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/breaker"
	pylonredis "github.com/pylon-gateway/pylon/redis"
)

// storeTimeout is the BreakerStore's timeout in the shared scenario: the
// bound of a request's wait on a frozen Redis.
const storeTimeout = 100 * time.Millisecond

// serveShared is one replica of the shared scenario: GET /bench is the
// plain route, GET /shared the same route behind a breaker whose state is
// shared through Redis at addr.
func serveShared(upstream, addr string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	c := goredis.NewClient(&goredis.Options{Addr: addr, ContextTimeoutEnabled: true})
	defer c.Close()
	quiet := slog.New(slog.DiscardHandler)
	store, err := pylonredis.NewBreakerStore(c, pylonredis.BreakerStoreOptions{Prefix: "pylonbench:", Timeout: storeTimeout, Logger: quiet})
	if err != nil {
		log.Fatal(err)
	}
	br := breaker.MustNew(breaker.Settings{Name: "bench", Store: store, Logger: quiet})
	defer br.Close()
	b := pylon.MustNewBackend("bench", pylon.BackendOptions{Targets: []string{upstream}, Transport: sameTransport()})
	g := pylon.New(pylon.Options{})
	g.Route("GET /bench").To(b)
	g.Route("GET /shared").Use(br.Middleware).To(b)
	fmt.Println("http://" + ln.Addr().String())
	fmt.Println()
	serve(ln, g, false)
}

// sharedScenario runs two replicas with a shared breaker on a redis-server
// of its own and prints the shared route's ratio to the plain one, then
// the shared route's latency with Redis frozen.
func sharedScenario(gen, upstream string, size, conns int, d time.Duration, rounds int) {
	srv := startRedis()
	defer srv.stop()
	r1 := startChild("pylon-shared", upstream, size, "-redis-addr", srv.addr)
	defer r1.stop()
	r2 := startChild("pylon-shared", upstream, size, "-redis-addr", srv.addr)
	defer r2.stop()
	both := []*child{r1, r2}
	half := max(conns/2, 1)
	fmt.Printf("\nshared breaker: redis-server at %s, two replicas, %d connections each\n", srv.addr, half)
	loadPair(gen, both, "/bench", half, time.Second)
	loadPair(gen, both, "/shared", half, time.Second)
	var plain, shared []result
	for range rounds {
		plain = append(plain, loadPair(gen, both, "/bench", half, d))
		shared = append(shared, loadPair(gen, both, "/shared", half, d))
	}
	for i := range plain {
		fmt.Printf("round %d: plain %.0f req/s, shared breaker %.0f req/s: %.2fx\n", i+1, plain[i].rps, shared[i].rps, shared[i].rps/plain[i].rps)
	}
	p, s := median(plain), median(shared)
	fmt.Printf("%-22s %12s %10s %10s\n", "two replicas", "req/s", "p50", "p99")
	fmt.Printf("%-22s %12.0f %10s %10s\n", "plain route", p.rps, p.p50, p.p99)
	fmt.Printf("%-22s %12.0f %10s %10s\n", "shared-breaker route", s.rps, s.p50, s.p99)
	fmt.Printf("ratio shared breaker/plain route: %.2fx req/s (medians)\n", s.rps/p.rps)

	// Redis frozen: requests must not wait for it beyond the store timeout.
	srv.signal(syscall.SIGSTOP)
	f := loadPair(gen, both, "/shared", half, d)
	srv.signal(syscall.SIGCONT)
	fmt.Printf("Redis frozen (SIGSTOP) for %s: shared route %.0f req/s, p50 %s, p99 %s (bound: store timeout %s + 5ms)\n",
		d, f.rps, f.p50, f.p99, storeTimeout)
}

// loadPair drives every replica at once with conns connections each, on
// path, and sums their requests/s; p50 and p99 are the worst replica's.
func loadPair(gen string, replicas []*child, path string, conns int, d time.Duration) result {
	res := make([]result, len(replicas))
	var wg sync.WaitGroup
	for i, c := range replicas {
		wg.Go(func() { res[i] = load(gen, c.url+path, "", conns, d) })
	}
	wg.Wait()
	var sum result
	for _, r := range res {
		sum.rps += r.rps
		sum.p50 = max(sum.p50, r.p50)
		sum.p99 = max(sum.p99, r.p99)
	}
	return sum
}

// redisProc is the scenario's redis-server.
type redisProc struct {
	addr string
	cmd  *exec.Cmd
}

// startRedis starts redis-server on a free loopback port, persistence off,
// and waits until it answers PING.
func startRedis() *redisProc {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		fatal("-redis needs redis-server on PATH (apt-get install redis-server): %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fatal("%v", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", os.TempDir(), "--loglevel", "warning")
	if err := cmd.Start(); err != nil {
		fatal("start redis-server: %v", err)
	}
	r := &redisProc{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), cmd: cmd}
	c := goredis.NewClient(&goredis.Options{Addr: r.addr, MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return r
		}
		if time.Now().After(deadline) {
			r.stop()
			fatal("redis-server not ready: %v", err)
		}
		time.Sleep(10 * time.Millisecond) // polling, with the deadline above
	}
}

func (r *redisProc) signal(sig syscall.Signal) { _ = r.cmd.Process.Signal(sig) }

func (r *redisProc) stop() {
	r.signal(syscall.SIGCONT)
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
}
