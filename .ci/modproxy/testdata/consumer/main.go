// Command consumer is a program outside the repository that imports the root
// module and every nested library module, built by .ci/run against the file
// module proxy that modproxy writes: it proves `go get` resolves them from
// their require lines alone, with no replace directive and no workspace.
package main

import (
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/middleware"
	"github.com/pylon-gateway/pylon/middleware/compress"
	"github.com/pylon-gateway/pylon/observe"
	pylonredis "github.com/pylon-gateway/pylon/redis"
)

func main() {
	metrics, err := observe.NewMetrics(prometheus.NewRegistry(), observe.MetricsOptions{})
	if err != nil {
		panic(err)
	}
	gz, err := compress.New(compress.Options{})
	if err != nil {
		panic(err)
	}
	gw := pylon.New(pylon.Options{})
	gw.Use(metrics.Middleware, middleware.RequestID, gz)
	gw.Handle("GET /hello", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "hello")
	}))
	fmt.Println(gw.Err() == nil, pylonredis.ErrContextTimeoutDisabled != nil)
}
