package admin_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/admin"
)

// The status page on a loopback listener of its own, next to the gateway:
// its JSON API lists the routes with their traffic and the backends with
// their targets' health.
func Example() {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer upstream.Close()
	orders := pylon.MustNewBackend("orders", pylon.BackendOptions{Targets: []string{upstream.URL}})
	defer orders.Close()

	stats := admin.NewStats(admin.StatsOptions{})
	gw := pylon.New(pylon.Options{})
	gw.Use(stats.Middleware) // first, to count every request
	gw.Route("GET /orders/{id}").Name("orders").To(orders)

	srv, err := admin.Listen("127.0.0.1:0", admin.Options{Gateway: gw, Stats: stats})
	if err != nil {
		panic(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	defer func() { stop(); <-done }()

	for range 3 {
		gw.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/orders/1", nil))
	}
	res, err := http.Get(srv.URL() + "api/v1/status")
	if err != nil {
		panic(err)
	}
	defer res.Body.Close()
	var st admin.Status
	if err := json.NewDecoder(res.Body).Decode(&st); err != nil {
		panic(err)
	}
	for _, r := range st.Routes {
		fmt.Printf("route %s %q -> %s: %d requests, %d errors\n", r.Name, r.Pattern, r.Target, r.Traffic.Requests, r.Traffic.Errors)
	}
	for _, b := range st.Backends {
		fmt.Printf("backend %s: %d of %d targets healthy\n", b.Name, b.Healthy, len(b.Targets))
	}
	fmt.Println("actions enabled:", st.ActionsEnabled)

	// Without an Authorizer, the page refuses to listen on a public address.
	_, err = admin.Listen(":9901", admin.Options{Gateway: gw})
	fmt.Println(err)
	// Output:
	// route orders "GET /orders/{id}" -> backend orders: 3 requests, 0 errors
	// backend orders: 1 of 1 targets healthy
	// actions enabled: false
	// admin: refusing to listen on a non-loopback address without an Authorizer: ":9901"
}
