package discovery

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pylon-gateway/pylon"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDNSUnderSteadyLoad is the DNS-under-load figure: about 1,000
// requests/s over loopback through a Gateway whose Backend is kept by
// Keep from a real dnsmasq, while A records are added, removed and changed
// (two rounds of six sets). No request may fail, and once a set is applied
// and the requests in flight at that moment are done, a removed target
// takes no new request. The achieved rate and the number of swaps are
// logged.
func TestDNSUnderSteadyLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("load figure; skipped in -short")
	}
	ips := []string{"127.0.0.41", "127.0.0.42", "127.0.0.43", "127.0.0.44", "127.0.0.45"}
	hits := map[string]*atomic.Int64{}
	for _, ip := range ips {
		hits[ip] = new(atomic.Int64)
	}
	port := sharedPortServers(t, ips, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.Context().Value(http.LocalAddrContextKey).(net.Addr).String())
		hits[host].Add(1)
		io.WriteString(w, "ok")
	}))
	target := func(ip string) string { return fmt.Sprintf("http://%s:%d", ip, port) }
	d := startDNSMasq(t, hostsFor("orders.test", ips[:2]...), nil, 0)

	b, err := pylon.NewBackend("orders", pylon.BackendOptions{Targets: []string{target(ips[0])}})
	require.NoError(t, err)
	defer b.Close()
	var swaps atomic.Int64
	k := Keep(b, Poll(DNS("orders.test", DNSOptions{Server: d.Addr(), Port: port}), PollOptions{MinInterval: 5 * time.Millisecond, Interval: 5 * time.Millisecond}), Options{
		Logger:   slog.New(slog.DiscardHandler),
		OnUpdate: func([]pylon.Endpoint) { swaps.Add(1) },
	})
	defer k.Stop()

	gw := pylon.New(pylon.Options{})
	gw.Route("GET /").To(b)
	require.NoError(t, gw.Err())
	front := httptest.NewServer(gw)
	defer front.Close()
	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}

	// 8 clients, each paced at one request per 8 ms: at most 1,000/s.
	const clients = 8
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var served, failed atomic.Int64
	var done [clients]atomic.Int64 // requests each client has finished
	start := time.Now()
	for i := range clients {
		wg.Go(func() {
			tick := time.NewTicker(8 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				resp, err := client.Get(front.URL + "/")
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				if err != nil || resp.StatusCode != http.StatusOK {
					failed.Add(1)
				}
				served.Add(1)
				done[i].Add(1)
			}
		})
	}
	defer func() { stop(); wg.Wait() }()

	// settled waits until every client has finished a request it started
	// after this call: the requests in flight before it are then done.
	settled := func() {
		t.Helper()
		var at [clients]int64
		for i := range clients {
			at[i] = done[i].Load()
		}
		waitFor(t, "the requests in flight", func() bool {
			for i := range clients {
				if done[i].Load() < at[i]+2 {
					return false
				}
			}
			return true
		})
	}
	apply := func(sel []string) {
		t.Helper()
		var want []string
		for _, ip := range sel {
			want = append(want, target(ip))
		}
		slices.Sort(want)
		waitFor(t, fmt.Sprint("targets ", want), func() bool { return slices.Equal(urlsOf(b), want) })
		settled()
		// From here on, the targets not in sel take nothing.
		before := map[string]int64{}
		for _, ip := range ips {
			before[ip] = hits[ip].Load()
		}
		n := served.Load()
		waitFor(t, "requests on the new set", func() bool { return served.Load() > n+150 })
		for _, ip := range ips {
			if slices.Contains(sel, ip) {
				continue
			}
			assert.Equal(t, before[ip], hits[ip].Load(), "%s is not in %v: it took requests after the swap", ip, sel)
		}
	}
	apply(ips[:2])
	steps := [][]string{
		ips[:4],                  // two added
		ips[2:4],                 // two removed
		{ips[2], ips[4]},         // one changed (.44 → .45)
		{ips[0], ips[1], ips[4]}, // changed and added
		{ips[4]},                 // all but one removed
		ips[:2],                  // replaced whole
	}
	for range 2 {
		for _, sel := range steps {
			d.SetHosts(hostsFor("orders.test", sel...))
			apply(sel)
		}
	}
	stop()
	wg.Wait()
	elapsed := time.Since(start)
	assert.Zero(t, failed.Load(), "failed requests while the records changed")
	assert.GreaterOrEqual(t, swaps.Load(), int64(2*len(steps)))
	t.Logf("%d requests in %.1fs (%.0f/s), %d swaps applied, %d failed", served.Load(), elapsed.Seconds(), float64(served.Load())/elapsed.Seconds(), swaps.Load(), failed.Load())
}
