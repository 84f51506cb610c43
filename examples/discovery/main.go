// Command discovery runs a Pylon gateway whose Backend follows a discovery
// source while it serves, all in one process, needing nothing installed:
//
//	go run ./examples/discovery          # serve on 127.0.0.1:8080 until interrupted
//	go run ./examples/discovery -once    # print each target set and who served, then exit
//
// Three demo services (blue, green, red) listen on loopback. A static
// source of the example's own (a discovery.Source in a few lines) changes
// the Backend's target set every few seconds, as a registry would on a
// deploy or a scale event; discovery.Keep applies each set with
// Backend.SetTargets. New targets ramp up under pylon.SlowStart. In a real
// gateway the source is discovery.Poll(discovery.DNS(...)), SRV, or the
// Kubernetes EndpointSlice source of discovery/kubernetes.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/discovery"
	"github.com/pylon-gateway/pylon/middleware"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "gateway listen address")
	every := flag.Duration("every", 3*time.Second, "how often the source changes the target set (500ms with -once)")
	once := flag.Bool("once", false, "go through the target sets once, printing who served, and exit")
	flag.Parse()
	if *once && !isSet("every") {
		*every = 500 * time.Millisecond // the sequence in a few seconds
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if !*once {
		logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}

	urls := map[string]string{}
	for _, name := range []string{"blue", "green", "red"} {
		urls[name] = demoService(name)
	}
	byURL := map[string]string{}
	for name, u := range urls {
		byURL[u] = name
	}
	// What a registry would report over time: a deploy adding green, a
	// scale-up adding red, blue going away, blue coming back.
	var phases [][]pylon.Endpoint
	for _, names := range [][]string{{"blue"}, {"blue", "green"}, {"blue", "green", "red"}, {"green", "red"}, {"blue", "red"}} {
		var eps []pylon.Endpoint
		for _, n := range names {
			eps = append(eps, pylon.Endpoint{URL: urls[n]})
		}
		phases = append(phases, eps)
	}

	orders := pylon.MustNewBackend("orders", pylon.BackendOptions{
		Targets:  []string{urls["blue"]},
		Balancer: pylon.SlowStart(pylon.WeightedRoundRobin(), pylon.SlowStartOptions{Window: 10 * time.Second}),
		Logger:   logger,
	})
	defer orders.Close()

	updates := make(chan []pylon.Endpoint, len(phases))
	src := &static{phases: phases, every: *every, loop: !*once}
	keeper := discovery.Keep(orders, src, discovery.Options{Logger: logger, OnUpdate: func(eps []pylon.Endpoint) {
		select {
		case updates <- eps:
		default:
		}
	}})
	defer keeper.Stop()

	gw := pylon.New(pylon.Options{})
	gw.Use(middleware.RequestID, middleware.AccessLog(logger))
	gw.Route("GET /").To(orders)

	if *once {
		runOnce(gw, orders, updates, len(phases), byURL)
		return
	}
	fmt.Printf("gateway on http://%s/ - the target set changes every %v; try: while sleep 0.2; do curl -s http://%s/; done\n", *addr, *every, *addr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := pylon.Run(ctx, pylon.NewServer(*addr, gw)); err != nil {
		log.Fatal(err)
	}
}

func isSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// runOnce waits for each target set, sends requests through the gateway
// over loopback, and prints who served them.
func runOnce(gw http.Handler, orders *pylon.Backend, updates <-chan []pylon.Endpoint, n int, byURL map[string]string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: gw}
	go srv.Serve(ln)
	defer srv.Close()
	front := "http://" + ln.Addr().String() + "/"
	for i := range n {
		eps := <-updates
		var names []string
		for _, e := range eps {
			names = append(names, byURL[e.URL])
		}
		slices.Sort(names)
		served := map[string]int{}
		for range 40 {
			resp, err := http.Get(front)
			if err != nil {
				log.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			served[strings.TrimSpace(string(b))]++
		}
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(served)) {
			parts = append(parts, fmt.Sprintf("%s=%d", k, served[k]))
		}
		var ramping []string
		for _, t := range orders.Targets() {
			if t.Ramping() {
				ramping = append(ramping, byURL[t.String()])
			}
		}
		slices.Sort(ramping)
		fmt.Printf("set %d: targets %v, ramping %v; 40 requests served by %s\n", i+1, names, ramping, strings.Join(parts, " "))
	}
}

// static is a discovery.Source that reports its phases in turn, one every
// interval (and then again from the start, when loop is set).
type static struct {
	phases [][]pylon.Endpoint
	every  time.Duration
	loop   bool
}

// Watch implements discovery.Source.
func (s *static) Watch(ctx context.Context, update func([]pylon.Endpoint), _ func(error)) {
	tick := time.NewTicker(s.every)
	defer tick.Stop()
	for i := 0; ; i++ {
		if i == len(s.phases) {
			if !s.loop {
				<-ctx.Done()
				return
			}
			i = 0
		}
		update(s.phases[i])
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// demoService starts a loopback server that answers with its name, and
// returns its URL.
func demoService(name string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, name)
	}))
	return "http://" + ln.Addr().String()
}
