package pylon_test

import (
	"fmt"
	"time"

	"github.com/pylon-gateway/pylon"
)

// A target added while the backend serves starts at a tenth of its weight
// and ramps to the whole of it over the window.
func ExampleSlowStart() {
	orders := pylon.MustNewBackend("orders", pylon.BackendOptions{
		Targets:  []string{"http://10.0.0.5:8080", "http://10.0.0.6:8080"},
		Balancer: pylon.SlowStart(pylon.LeastRequests(), pylon.SlowStartOptions{Window: time.Minute}),
	})
	defer orders.Close()

	err := orders.SetTargets([]pylon.Endpoint{
		{URL: "http://10.0.0.5:8080"},
		{URL: "http://10.0.0.6:8080"},
		{URL: "http://10.0.0.7:8080", Weight: 4}, // a new, cold instance
	})
	if err != nil {
		panic(err)
	}
	for _, t := range orders.Targets() {
		fmt.Printf("%s weight %d, effective %.1f, ramping %v\n", t, t.Weight(), t.EffectiveWeight(), t.Ramping())
	}
	// Output:
	// http://10.0.0.5:8080 weight 1, effective 1.0, ramping false
	// http://10.0.0.6:8080 weight 1, effective 1.0, ramping false
	// http://10.0.0.7:8080 weight 4, effective 0.4, ramping true
}
