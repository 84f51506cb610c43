// Command bench is Pylon's load benchmark. In one run it starts a loopback
// upstream, a bare httputil.ReverseProxy and a Pylon gateway (each in a
// process of its own, with the same transport settings), drives each proxy
// with concurrent keep-alive clients, and prints requests per second, p50 and
// p99 latency, and Pylon's ratio to the baseline.
//
//	go run ./bench                 # wrk when installed, else a Go client
//	go run ./bench -d 10s -c 64 -rounds 3
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
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pylon-gateway/pylon"
)

func main() {
	role := flag.String("role", "", "internal: run as upstream, httputil or pylon")
	upstreamURL := flag.String("upstream", "", "internal: upstream URL for a proxy role")
	dur := flag.Duration("d", 5*time.Second, "duration of each measured run")
	conns := flag.Int("c", 64, "concurrent keep-alive connections")
	size := flag.Int("size", 1024, "response body size in bytes")
	rounds := flag.Int("rounds", 3, "measured runs per proxy, alternating; the median is reported")
	client := flag.String("client", "auto", "load generator: auto, wrk or go")
	flag.Parse()

	if *role != "" {
		serveRole(*role, *upstreamURL, *size)
		return
	}

	up := startChild("upstream", "", *size)
	defer up.stop()
	base := startChild("httputil", up.url, *size)
	defer base.stop()
	pyl := startChild("pylon", up.url, *size)
	defer pyl.stop()

	gen := *client
	if gen == "auto" {
		gen = "go"
		if _, err := exec.LookPath("wrk"); err == nil {
			gen = "wrk"
		}
	}
	fmt.Printf("load: %s, %d connections, %s per run, %d rounds, %d-byte responses, GOMAXPROCS per process: default\n",
		gen, *conns, *dur, *rounds, *size)

	// Warm both up (connection pools, page cache), then alternate runs so
	// that drift on the machine hits both alike.
	for _, p := range []*child{base, pyl} {
		load(gen, p.url+"/bench", *conns, time.Second)
	}
	var baseRes, pylRes []result
	for range *rounds {
		baseRes = append(baseRes, load(gen, base.url+"/bench", *conns, *dur))
		pylRes = append(pylRes, load(gen, pyl.url+"/bench", *conns, *dur))
	}
	b, p := median(baseRes), median(pylRes)
	fmt.Printf("\n%-22s %12s %10s %10s\n", "proxy", "req/s", "p50", "p99")
	fmt.Printf("%-22s %12.0f %10s %10s\n", "httputil.ReverseProxy", b.rps, b.p50, b.p99)
	fmt.Printf("%-22s %12.0f %10s %10s\n", "pylon", p.rps, p.p50, p.p99)
	fmt.Printf("\nratio pylon/httputil: %.2fx req/s, p99 %s vs %s\n", p.rps/b.rps, p.p99, b.p99)
}

type result struct {
	rps      float64
	p50, p99 time.Duration
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

// sameTransport is the transport both proxies use: the settings of Pylon's
// own default transport, built here so the two get identical ones.
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
			Transport: sameTransport(),
			Rewrite: func(pr *httputil.ProxyRequest) {
				pr.SetURL(target)
				pr.SetXForwarded()
			},
		}
	case "pylon":
		b := pylon.MustBackend("bench", pylon.BackendOptions{
			Targets:   []string{upstream},
			Transport: sameTransport(),
		})
		g := pylon.New(pylon.Options{})
		g.Route("GET /bench").To(b)
		h = g
	default:
		log.Fatalf("unknown role %q", role)
	}
	fmt.Println("http://" + ln.Addr().String())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	srv := pylon.NewServer("", h)
	if err := pylon.RunWithOptions(ctx, srv, pylon.RunOptions{Listener: ln, DrainTimeout: time.Second}); err != nil {
		log.Fatal(err)
	}
}

type child struct {
	cmd *exec.Cmd
	url string
}

func startChild(role, upstream string, size int) *child {
	exe, err := os.Executable()
	if err != nil {
		log.Fatal(err)
	}
	cmd := exec.Command(exe, "-role", role, "-upstream", upstream, "-size", strconv.Itoa(size))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		log.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		log.Fatalf("%s did not start: %v", role, err)
	}
	return &child{cmd: cmd, url: strings.TrimSpace(line)}
}

func (c *child) stop() {
	_ = c.cmd.Process.Signal(os.Interrupt)
	_ = c.cmd.Wait()
}

func load(gen, target string, conns int, d time.Duration) result {
	if gen == "wrk" {
		return loadWrk(target, conns, d)
	}
	return loadGo(target, conns, d)
}

var (
	wrkRPS = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkPct = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([0-9.]+)(us|ms|s)`)
)

func loadWrk(target string, conns int, d time.Duration) result {
	out, err := exec.Command("wrk", "-t2", "-c"+strconv.Itoa(conns), "-d"+strconv.Itoa(int(d.Seconds()))+"s",
		"--latency", target).CombinedOutput()
	if err != nil {
		log.Fatalf("wrk: %v\n%s", err, out)
	}
	var r result
	if m := wrkRPS.FindSubmatch(out); m != nil {
		r.rps, _ = strconv.ParseFloat(string(m[1]), 64)
	}
	for _, m := range wrkPct.FindAllSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(string(m[2]), 64)
		unit := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second}[string(m[3])]
		dv := time.Duration(v * float64(unit))
		if string(m[1]) == "50" {
			r.p50 = dv
		} else {
			r.p99 = dv
		}
	}
	return r
}

func loadGo(target string, conns int, d time.Duration) result {
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
				res, err := client.Get(target)
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
