// Command quickstart runs a Pylon gateway in front of demo backends, all in
// one process, and needs nothing installed:
//
//	go run ./examples/quickstart
//
// Two demo services ("blue" and "green") answer behind one Backend, with a
// third target that refuses connections, to show load balancing, a retry
// and the passive ejection of the dead target. The access log on stderr
// shows, for each request, the target chosen and the number of attempts.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/middleware"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "gateway listen address")
	flag.Parse()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))

	blue := demoService("blue")
	green := demoService("green")
	dead := deadAddr()

	orders := pylon.MustNewBackend("orders", pylon.BackendOptions{
		Targets: []string{blue, green, dead},
		Retries: 2, // GETs that hit the dead target go to a live one
		Outlier: pylon.OutlierDetection{ConsecutiveFailures: 2, BaseEjectionTime: 30 * time.Second},
		Logger:  logger,
	})
	defer orders.Close()

	gw := pylon.New(pylon.Options{})
	gw.Use(middleware.RequestID, middleware.Recover(logger), middleware.AccessLog(logger))
	gw.Route("GET /orders/{id}").Name("order").Timeout(2 * time.Second).To(orders)
	gw.Route("GET /v2/orders/{id}").Name("order-v2").Rewrite("/orders/{id}").To(orders)
	gw.Route("GET /health").Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	}))

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	fmt.Printf("Pylon quickstart gateway on %s\n", base)
	fmt.Printf("  backends: blue %s, green %s, dead %s (refuses connections)\n\n", blue, green, dead)
	fmt.Println("Try:")
	fmt.Printf("  curl -s %s/orders/42          # round robin: blue, green; the dead target is retried away\n", base)
	fmt.Printf("  curl -s %s/v2/orders/7        # path rewrite /v2/orders/{id} -> /orders/{id}\n", base)
	fmt.Printf("  curl -si -X POST %s/orders/1  # 405 problem+json with Allow\n\n", base)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := pylon.RunWithOptions(ctx, pylon.NewServer("", gw), pylon.RunOptions{Listener: ln, Logger: logger}); err != nil {
		log.Fatal(err)
	}
}

// demoService starts an in-process service that names itself in its answers.
func demoService(name string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{
			"served_by": name,
			"path":      r.URL.Path,
		})
	}))
	return "http://" + ln.Addr().String()
}

// deadAddr returns the URL of a loopback port nothing listens on.
func deadAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	return "http://" + ln.Addr().String()
}
