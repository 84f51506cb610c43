package discovery_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/discovery"
)

// registry is a Resolver of your own: here, a fixed list of upstreams.
type registry struct{ urls []string }

func (r registry) Resolve(context.Context) (discovery.Result, error) {
	var res discovery.Result
	for _, u := range r.urls {
		res.Endpoints = append(res.Endpoints, pylon.Endpoint{URL: u})
	}
	return res, nil
}

func Example() {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello from the discovered upstream\n")
	}))
	defer upstream.Close()

	// The backend starts with no targets (it answers 503 until discovery
	// gives it some). For DNS: discovery.DNS("orders.internal",
	// discovery.DNSOptions{Port: 8080}) or
	// discovery.SRV("_http._tcp.orders.internal", discovery.DNSOptions{}).
	orders := pylon.MustNewBackend("orders", pylon.BackendOptions{})
	defer orders.Close()
	applied := make(chan []pylon.Endpoint, 1)
	k := discovery.Keep(orders, discovery.Poll(registry{urls: []string{upstream.URL}}, discovery.PollOptions{}), discovery.Options{
		OnUpdate: func(eps []pylon.Endpoint) { applied <- eps },
	})
	defer k.Stop()
	<-applied

	front := httptest.NewServer(orders)
	defer front.Close()
	res, err := http.Get(front.URL)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	fmt.Println(len(orders.Targets()), "target:", strings.HasPrefix(orders.Targets()[0].String(), "http://127.0.0.1:"))
	fmt.Print(string(body))
	// Output:
	// 1 target: true
	// hello from the discovered upstream
}
