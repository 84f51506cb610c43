// Command ecommerce runs a shop's API gateway in front of three services,
// all in one process, and needs nothing installed:
//
//	go run ./examples/ecommerce          # serve, and print curl lines to try
//	go run ./examples/ecommerce -once    # try them all, print the answers, exit
//
// The products, orders and payments services each listen on a loopback port
// of their own. The gateway in front of them (on -addr, 127.0.0.1:8080 by
// default) shows Pylon end to end:
//
//   - a global chain: Prometheus metrics, request IDs, panic recovery, an
//     access log on stdout (-log text or json) and the client's real IP;
//   - JWT authentication against a demo issuer's JWKS, with a required scope;
//   - a rate limit per subject and route (5 per second, bursts of 5),
//     answered 429 with Retry-After and the RateLimit header fields;
//   - a circuit breaker on the payments service: three failures in a row
//     (order "broken" makes it fail) and payments are refused with 503 and
//     Retry-After for ten seconds;
//   - GET /api/orders/{id}/summary, one answer merged from three calls, the
//     payment optional: without it the summary is 200, marked partial;
//   - /metrics for Prometheus, /healthz and /readyz for the platform;
//   - a status page on a loopback listener of its own (-admin,
//     127.0.0.1:9901 by default): routes with their traffic, targets with
//     their health and breaker, recent errors, and actions.
//
// On start it prints the URLs, a token for alice (with the "shop" scope) and
// one for bob (without it), and the curl lines to try each feature. Ctrl-C
// drains in-flight requests and stops.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is the program: it parses args, builds the example and serves it
// until ctx ends, or, with -once, tours it and returns. It returns the exit
// code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ecommerce", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:8080", "gateway listen address")
	adminAddr := fs.String("admin", "127.0.0.1:9901", "status page listen address (loopback)")
	logFormat := fs.String("log", "text", "access log format: text or json")
	once := fs.Bool("once", false, "try every feature against the gateway, print the answers and exit")
	verbose := fs.Bool("v", false, "with -once, print the access log too")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *logFormat != "text" && *logFormat != "json" {
		fmt.Fprintf(stderr, "ecommerce: -log is %q, want text or json\n", *logFormat)
		return 2
	}

	cfg := config{
		Addr:      *addr,
		AdminAddr: *adminAddr,
		AccessLog: stdout,
		JSONLog:   *logFormat == "json",
		Logger:    slog.New(slog.NewTextHandler(stderr, nil)),
	}
	if *once {
		// Only what goes wrong, and the breaker opening.
		cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		if !*verbose {
			cfg.AccessLog = nil
		}
	}
	a, err := build(cfg)
	if err != nil {
		fmt.Fprintln(stderr, "ecommerce:", err)
		return 1
	}
	defer a.Close()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- a.run(ctx) }()

	if *once {
		err := a.tour(stdout)
		cancel()
		if serr := <-served; err == nil {
			err = serr
		}
		if err != nil {
			fmt.Fprintln(stderr, "ecommerce:", err)
			return 1
		}
		return 0
	}
	a.intro(stdout)
	if err := <-served; err != nil {
		fmt.Fprintln(stderr, "ecommerce:", err)
		return 1
	}
	return 0
}

// intro prints where everything is, the tokens, and the curl lines to try.
func (a *app) intro(w io.Writer) {
	fmt.Fprintf(w, "Pylon e-commerce example: a gateway in front of three services, all in this process.\n\n")
	fmt.Fprintf(w, "  gateway   %s   (/api/..., /metrics, /healthz, /readyz)\n", a.URL)
	fmt.Fprintf(w, "  products  %s\n", a.ProductsURL)
	fmt.Fprintf(w, "  orders    %s\n", a.OrdersURL)
	fmt.Fprintf(w, "  payments  %s\n", a.PaymentsURL)
	fmt.Fprintf(w, "  JWKS      %s   (the demo issuer's keys)\n", a.JWKSURL)
	fmt.Fprintf(w, "  status    %s   (routes, targets, breaker, errors; JSON at api/v1/status)\n\n", a.AdminURL)
	fmt.Fprintf(w, "In another shell (alice's token has the %q scope, bob's has not; both last 24h):\n\n", scope)
	fmt.Fprintf(w, "export GW=%s\n", a.URL)
	fmt.Fprintf(w, "export TOKEN=%s\n", a.Token)
	fmt.Fprintf(w, "export TOKEN_NOSCOPE=%s\n", a.NoScopeToken)
	for i, s := range steps() {
		fmt.Fprintf(w, "\n# %d. %s\n%s\n", i+1, s.about, s.curl())
	}
	fmt.Fprintf(w, "\nThe access log follows; Ctrl-C stops the gateway gracefully.\n\n")
}
