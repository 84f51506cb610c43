package discovery

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pylon-gateway/pylon"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// waitFor polls cond until it holds or a deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond) // polling, with a deadline
	}
}

func urlsOf(b *pylon.Backend) []string {
	var s []string
	for _, t := range b.Targets() {
		s = append(s, t.String())
	}
	slices.Sort(s)
	return s
}

func resolve(t *testing.T, r Resolver) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := r.Resolve(ctx)
	require.NoError(t, err)
	return res
}

func TestDNSRecordsAndTTL(t *testing.T) {
	d := startDNSMasq(t, "127.0.0.11 orders.test\n127.0.0.12 orders.test\nfd00::11 orders.test\n", nil, 7)
	opts := DNSOptions{Server: d.Addr(), Port: 8080}

	res := resolve(t, DNS("orders.test", opts))
	var got []string
	for _, e := range res.Endpoints {
		got = append(got, e.URL)
		assert.Equal(t, 1, e.Weight)
	}
	slices.Sort(got)
	assert.Equal(t, []string{"http://127.0.0.11:8080", "http://127.0.0.12:8080", "http://[fd00::11]:8080"}, got)
	assert.Equal(t, 7*time.Second, res.TTL, "the records' TTL, read from the answers")

	opts.Network, opts.Scheme, opts.Port, opts.Path = "ip6", "https", 0, "/api"
	res = resolve(t, DNS("orders.test", opts))
	require.Len(t, res.Endpoints, 1)
	assert.Equal(t, "https://[fd00::11]/api", res.Endpoints[0].URL)

	// A name that does not exist is an empty set, not an error.
	res = resolve(t, DNS("nothing.test", DNSOptions{Server: d.Addr()}))
	assert.Empty(t, res.Endpoints)
	assert.Zero(t, res.TTL)

	// A server that does not answer is an error.
	dead := fmt.Sprintf("127.0.0.1:%d", freeUDPPort(t))
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := DNS("orders.test", DNSOptions{Server: dead}).Resolve(ctx)
	assert.Error(t, err)
}

func TestSRVWeightsAndPriorities(t *testing.T) {
	d := startDNSMasq(t, "127.0.0.21 a.test\n127.0.0.22 b.test\n127.0.0.23 b.test\n", []string{
		"_http._tcp.orders.test,a.test,8081,0,5",
		"_http._tcp.orders.test,b.test,8082,1,0",
	}, 3)
	res := resolve(t, SRV("_http._tcp.orders.test", DNSOptions{Server: d.Addr()}))
	eps := normalize(res.Endpoints)
	assert.Equal(t, []pylon.Endpoint{
		{URL: "http://127.0.0.21:8081", Weight: 5, Priority: 0},
		{URL: "http://127.0.0.22:8082", Weight: 1, Priority: 1},
		{URL: "http://127.0.0.23:8082", Weight: 1, Priority: 1},
	}, eps)
	assert.Equal(t, 3*time.Second, res.TTL)

	res = resolve(t, SRV("_http._tcp.orders.test", DNSOptions{Server: d.Addr(), KeepHostnames: true}))
	eps = normalize(res.Endpoints)
	assert.Equal(t, []pylon.Endpoint{
		{URL: "http://a.test:8081", Weight: 5, Priority: 0},
		{URL: "http://b.test:8082", Weight: 1, Priority: 1},
	}, eps)

	res = resolve(t, SRV("_http._tcp.none.test", DNSOptions{Server: d.Addr()}))
	assert.Empty(t, res.Endpoints)
}

// sharedPortServers starts one upstream per loopback address, all on one
// port (DNS A records give addresses only).
func sharedPortServers(t *testing.T, ips []string, h http.Handler) int {
	t.Helper()
	for try := 0; try < 10; try++ {
		var ls []net.Listener
		l, err := net.Listen("tcp", ips[0]+":0")
		require.NoError(t, err)
		ls = append(ls, l)
		port := l.Addr().(*net.TCPAddr).Port
		ok := true
		for _, ip := range ips[1:] {
			l, err := net.Listen("tcp", fmt.Sprintf("%s:%d", ip, port))
			if err != nil {
				ok = false
				break
			}
			ls = append(ls, l)
		}
		if !ok {
			for _, l := range ls {
				l.Close()
			}
			continue
		}
		for _, l := range ls {
			s := &httptest.Server{Listener: l, Config: &http.Server{Handler: h}}
			s.Start()
			t.Cleanup(s.Close)
		}
		return port
	}
	t.Fatal("no port free on every address")
	return 0
}

func hostsFor(name string, ips ...string) string {
	var b strings.Builder
	for _, ip := range ips {
		fmt.Fprintf(&b, "%s %s\n", ip, name)
	}
	return b.String()
}

// TestDNSScalesUnderLoad changes the records while requests flow through
// the Backend: every change reaches it, no request fails, and an empty
// answer keeps the last good set.
func TestDNSScalesUnderLoad(t *testing.T) {
	ips := []string{"127.0.0.31", "127.0.0.32", "127.0.0.33", "127.0.0.34"}
	var hits sync.Map // address -> *atomic.Int64
	for _, ip := range ips {
		hits.Store(ip, new(atomic.Int64))
	}
	port := sharedPortServers(t, ips, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.Context().Value(http.LocalAddrContextKey).(net.Addr).String())
		v, _ := hits.Load(host)
		v.(*atomic.Int64).Add(1)
		w.Write([]byte("ok"))
	}))
	d := startDNSMasq(t, hostsFor("orders.test", ips[:2]...), nil, 0)

	target := func(ip string) string { return fmt.Sprintf("http://%s:%d", ip, port) }
	b, err := pylon.NewBackend("orders", pylon.BackendOptions{Targets: []string{target(ips[0])}})
	require.NoError(t, err)
	defer b.Close()
	src := Poll(DNS("orders.test", DNSOptions{Server: d.Addr(), Port: port}), PollOptions{MinInterval: 5 * time.Millisecond, Interval: 5 * time.Millisecond})
	k := Keep(b, src, Options{})
	defer k.Stop()

	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var served, failed atomic.Int64
	var perClient [4]atomic.Int64 // requests each client finished
	for i := range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				rec := httptest.NewRecorder()
				b.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
				served.Add(1)
				perClient[i].Add(1)
				if rec.Code != http.StatusOK {
					failed.Add(1)
				}
			}
		})
	}
	want := func(sel ...string) {
		t.Helper()
		var w []string
		for _, ip := range sel {
			w = append(w, target(ip))
		}
		slices.Sort(w)
		waitFor(t, fmt.Sprint("targets ", w), func() bool { return slices.Equal(urlsOf(b), w) })
		// Every client finishes two requests begun after the swap, so none
		// still holds a target chosen from the set before it.
		var marks [4]int64
		for i := range perClient {
			marks[i] = perClient[i].Load()
		}
		waitFor(t, "requests after the swap", func() bool {
			for i := range perClient {
				if perClient[i].Load() < marks[i]+2 {
					return false
				}
			}
			return true
		})
	}
	want(ips[0], ips[1])
	steps := [][]string{ips, ips[2:], {ips[1]}, ips[:3]}
	for _, sel := range steps {
		d.SetHosts(hostsFor("orders.test", sel...))
		want(sel...)
	}
	// The name vanishes: the last good set keeps serving.
	d.SetHosts("127.0.0.1 other.test\n")
	waitFor(t, "the empty answer", func() bool { return k.Err() == ErrEmpty })
	want(ips[:3]...)

	// Removed targets take no requests once drained.
	d.SetHosts(hostsFor("orders.test", ips[3]))
	want(ips[3])
	before := map[string]int64{}
	for _, ip := range ips[:3] {
		v, _ := hits.Load(ip)
		before[ip] = v.(*atomic.Int64).Load()
	}
	n := served.Load()
	waitFor(t, "requests", func() bool { return served.Load() > n+100 })
	stop()
	wg.Wait()
	for _, ip := range ips[:3] {
		v, _ := hits.Load(ip)
		assert.Equal(t, before[ip], v.(*atomic.Int64).Load(), "%s was removed", ip)
	}
	assert.Zero(t, failed.Load(), "failed requests while the records changed")
	t.Logf("%d requests", served.Load())
}

func TestSRVUpdatesFlow(t *testing.T) {
	up := func(name string) string {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(name)) }))
		t.Cleanup(s.Close)
		return s.Listener.Addr().(*net.TCPAddr).AddrPort().String()
	}
	portOf := func(hp string) string { _, p, _ := net.SplitHostPort(hp); return p }
	a, c := up("a"), up("c")
	d := startDNSMasq(t, "127.0.0.1 host.test\n", []string{"_http._tcp.orders.test,host.test," + portOf(a) + ",0,1"}, 1)
	b, err := pylon.NewBackend("orders", pylon.BackendOptions{Targets: []string{"http://" + a}})
	require.NoError(t, err)
	defer b.Close()
	updates := make(chan []pylon.Endpoint, 16)
	k := Keep(b, Poll(SRV("_http._tcp.orders.test", DNSOptions{Server: d.Addr()}), PollOptions{MinInterval: 5 * time.Millisecond}), Options{
		OnUpdate: func(eps []pylon.Endpoint) { updates <- eps },
	})
	defer k.Stop()
	first := <-updates
	assert.Equal(t, []pylon.Endpoint{{URL: "http://" + a, Weight: 1}}, first)

	// c joins as a backup (priority 1), weight 3.
	d.SetSRV([]string{
		"_http._tcp.orders.test,host.test," + portOf(a) + ",0,1",
		"_http._tcp.orders.test,host.test," + portOf(c) + ",1,3",
	})
	waitFor(t, "the new record", func() bool { return len(b.Targets()) == 2 })
	tc := b.Targets()[1]
	assert.Equal(t, "http://"+c, tc.String())
	assert.Equal(t, 1, tc.Priority())
	assert.Equal(t, 3, tc.Weight())
	for range 5 {
		rec := httptest.NewRecorder()
		b.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
		assert.Equal(t, "a", rec.Body.String(), "the backup tier waits while the first is healthy")
	}
}

// TestSRVWeightIsTheRecords: an SRV record's weight is the record's (RFC
// 2782), not multiplied by the number of addresses its host has. Two
// records of equal weight, one host with 1 address and one with 4, share
// the traffic of a Gateway half and half, whether the weights are 0 (each
// counted as 1) or 10; the 4 addresses share their record's half.
func TestSRVWeightIsTheRecords(t *testing.T) {
	ips := []string{"127.0.0.41", "127.0.0.42", "127.0.0.43", "127.0.0.44", "127.0.0.45"}
	var mu sync.Mutex
	hits := map[string]int{}
	port := sharedPortServers(t, ips, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.Context().Value(http.LocalAddrContextKey).(net.Addr).String())
		mu.Lock()
		hits[host]++
		mu.Unlock()
	}))
	p := fmt.Sprint(port)
	d := startDNSMasq(t, hostsFor("a.test", ips[0])+hostsFor("b.test", ips[1:]...), []string{
		"_http._tcp.zero.test,a.test," + p + ",0,0", "_http._tcp.zero.test,b.test," + p + ",0,0",
		"_http._tcp.ten.test,a.test," + p + ",0,10", "_http._tcp.ten.test,b.test," + p + ",0,10",
	}, 60)

	// The rounding: weight 10 over 4 addresses is 3, 3, 2, 2 in URL order.
	eps := normalize(resolve(t, SRV("_http._tcp.ten.test", DNSOptions{Server: d.Addr()})).Endpoints)
	var weights []int
	for _, e := range eps {
		weights = append(weights, e.Weight)
	}
	assert.Equal(t, []int{10, 3, 3, 2, 2}, weights, "%v", eps)

	for _, name := range []string{"_http._tcp.zero.test", "_http._tcp.ten.test"} {
		t.Run(name, func(t *testing.T) {
			b, err := pylon.NewBackend("orders", pylon.BackendOptions{Balancer: pylon.WeightedRoundRobin()})
			require.NoError(t, err)
			defer b.Close()
			applied := make(chan []pylon.Endpoint, 1)
			k := Keep(b, Poll(SRV(name, DNSOptions{Server: d.Addr()}), PollOptions{}), Options{OnUpdate: func(eps []pylon.Endpoint) {
				select {
				case applied <- eps:
				default:
				}
			}})
			defer k.Stop()
			<-applied
			gw := pylon.New(pylon.Options{})
			gw.Route("/").To(b)
			require.NoError(t, gw.Err())
			front := httptest.NewServer(gw)
			defer front.Close()

			mu.Lock()
			clear(hits)
			mu.Unlock()
			const n = 80 // whole rounds of the weights (8 and 20)
			for range n {
				res, err := http.Get(front.URL + "/")
				require.NoError(t, err)
				res.Body.Close()
				require.Equal(t, http.StatusOK, res.StatusCode)
			}
			mu.Lock()
			defer mu.Unlock()
			assert.Equal(t, n/2, hits[ips[0]], "a.test's record takes half: %v", hits)
			for _, ip := range ips[1:] {
				assert.InDelta(t, n/8, hits[ip], 2, "b.test's addresses share the other half: %v", hits)
			}
		})
	}
}
