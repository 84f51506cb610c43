package overload_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/breaker"
	"github.com/pylon-gateway/pylon/overload"
	"github.com/pylon-gateway/pylon/ratelimit"
)

// A Backend limited to 100 attempts in flight (10 more may wait 50ms), 20
// per target, behind per-target breakers; the checkout route is critical,
// and each client may have 8 requests in flight.
func Example() {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "hello")
	}))
	defer upstream.Close()

	breakers := breaker.MustPerTarget(breaker.Settings{Name: "shop"})
	defer breakers.Close()
	shop := pylon.MustNewBackend("shop", pylon.BackendOptions{
		Targets: []string{upstream.URL},
		Guard: pylon.Guards(
			overload.MustPerBackend(overload.Limits{Name: "shop", MaxInFlight: 100, MaxQueued: 10, MaxWait: 50 * time.Millisecond}),
			overload.MustPerTarget(overload.Limits{Name: "shop", MaxInFlight: 20}),
			breakers,
		),
	})
	defer shop.Close()

	gw := pylon.New(pylon.Options{})
	gw.Use(overload.PerClient(ratelimit.ByIP, 8))
	gw.Route("GET /products").To(shop)
	gw.Route("POST /checkout").Use(overload.Critical).To(shop)

	srv := httptest.NewServer(gw)
	defer srv.Close()
	res, err := http.Get(srv.URL + "/products")
	if err != nil {
		fmt.Println(err)
		return
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	fmt.Println(res.StatusCode, string(body))
	// Output: 200 hello
}
