package traffic_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/traffic"
)

func Example() {
	say := func(s string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, s) })
	}
	// A canary taking 5% of the clients, each client sticky by its
	// X-User header; in a gateway the sides are *pylon.Backend values.
	split := traffic.MustSplit(traffic.SplitOptions{Key: pylon.HashHeader("X-User")},
		traffic.Side{Name: "stable", Handler: say("stable"), Weight: 95},
		traffic.Side{Name: "canary", Handler: say("canary"), Weight: 5},
	)
	// Every request copied to a shadow whose answers are discarded.
	mirror, _ := traffic.NewMirror(say("shadow"), traffic.MirrorOptions{})
	defer mirror.Close()
	// Requests carrying X-Fault answered 503.
	fault := traffic.MustFault(traffic.FaultOptions{AbortPercent: 100, Header: "X-Fault"})

	gw := pylon.New(pylon.Options{})
	gw.Route("GET /orders").Use(fault, mirror.Middleware).Handler(split)

	for _, hdr := range []string{"", "X-Fault"} {
		r := httptest.NewRequest("GET", "/orders", nil)
		r.Header.Set("X-User", "alice")
		if hdr != "" {
			r.Header.Set(hdr, "1")
		}
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, r)
		fmt.Println(w.Code, w.Body.Len() > 0)
	}
	mirror.Close()
	fmt.Println("mirrored:", mirror.Stats().Mirrored)
	// Output:
	// 200 true
	// 503 true
	// mirrored: 1
}
