// Command bff runs two Pylon gateways, one for a web client and one for a
// mobile client, in front of the same three demo services (products,
// reviews, orders), all in one process. It needs nothing installed:
//
//	go run ./examples/bff
//	go run ./examples/bff -once   # print the comparison and exit
//
// Both gateways answer the same routes with one aggregated JSON document
// built from several service calls. The web gateway sends everything the
// services know; the mobile gateway keeps only what a phone screen shows
// (Allow lists, a Rename), so the same data costs fewer bytes. The program
// fetches each route from both and prints the byte counts, then serves
// until interrupted.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/aggregate"
)

func main() {
	webAddr := flag.String("web", "127.0.0.1:8090", "web gateway listen address")
	mobileAddr := flag.String("mobile", "127.0.0.1:8091", "mobile gateway listen address")
	once := flag.Bool("once", false, "print the comparison and exit")
	flag.Parse()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	// The demo services, each on its own loopback port.
	products := pylon.MustNewBackend("products", pylon.BackendOptions{Targets: []string{serve(productsService())}})
	reviews := pylon.MustNewBackend("reviews", pylon.BackendOptions{Targets: []string{serve(reviewsService())}})
	orders := pylon.MustNewBackend("orders", pylon.BackendOptions{Targets: []string{serve(ordersService())}})
	defer products.Close()
	defer reviews.Close()
	defer orders.Close()

	web := newGateway(logger, webRoutes(products, reviews, orders))
	mobile := newGateway(logger, mobileRoutes(products, reviews, orders))

	webLn, err := net.Listen("tcp", *webAddr)
	if err != nil {
		log.Fatal(err)
	}
	mobileLn, err := net.Listen("tcp", *mobileAddr)
	if err != nil {
		log.Fatal(err)
	}
	webURL, mobileURL := "http://"+webLn.Addr().String(), "http://"+mobileLn.Addr().String()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var wg sync.WaitGroup
	for _, s := range []struct {
		gw *pylon.Gateway
		ln net.Listener
	}{{web, webLn}, {mobile, mobileLn}} {
		wg.Go(func() {
			if err := pylon.RunWithOptions(ctx, pylon.NewServer("", s.gw), pylon.RunOptions{Listener: s.ln, Logger: logger}); err != nil {
				log.Fatal(err)
			}
		})
	}

	fmt.Println("Pylon backend-for-frontend example")
	fmt.Printf("  web gateway:    %s\n", webURL)
	fmt.Printf("  mobile gateway: %s\n\n", mobileURL)
	fmt.Println("The same aggregated data, shaped per client:")
	for _, path := range []string{"/products/p1", "/orders/o1"} {
		w, m := size(webURL+path), size(mobileURL+path)
		fmt.Printf("  GET %-14s web %5d bytes   mobile %5d bytes   (%d%% fewer)\n", path, w, m, 100-100*m/max(w, 1))
	}
	fmt.Println("\nTry:")
	fmt.Printf("  curl -s %s/products/p1    # product, its reviews and related products\n", webURL)
	fmt.Printf("  curl -s %s/products/p1    # the same, trimmed for a phone\n", mobileURL)
	fmt.Printf("  curl -s %s/orders/o1      # order, then its products (a chained call)\n", webURL)
	fmt.Printf("  curl -s %s/orders/o1\n", mobileURL)
	fmt.Printf("  curl -si %s/products/p2   # the reviews service fails: 200, marked partial\n", webURL)
	fmt.Printf("  curl -si %s/products/nope # a missing product: 404 problem+json\n\n", webURL)

	if *once {
		stop()
	}
	wg.Wait()
}

// newGateway builds a gateway with an access log and the given routes.
func newGateway(logger *slog.Logger, routes func(gw *pylon.Gateway)) *pylon.Gateway {
	gw := pylon.New(pylon.Options{})
	gw.Use(accessLog(logger))
	routes(gw)
	if err := gw.Err(); err != nil {
		log.Fatal(err)
	}
	return gw
}

// webRoutes sends the web client everything: the product with its full
// reviews and related products, the order with its customer and items.
func webRoutes(products, reviews, orders *pylon.Backend) func(*pylon.Gateway) {
	return func(gw *pylon.Gateway) {
		opts := aggregate.Options{ErrorsMember: "_errors"}
		gw.Route("GET /products/{id}").Timeout(2 * time.Second).Handler(aggregate.MustNewWithOptions(opts,
			aggregate.Get("product", products, "/products/{id}").PassNotFound(),
			aggregate.Get("reviews", reviews, "/reviews?product={id}").Optional(),
			aggregate.Get("related", products, "/categories/{product.category}/top?exclude={id}").Optional(),
		))
		gw.Route("GET /orders/{id}").Timeout(2 * time.Second).Handler(aggregate.MustNewWithOptions(opts,
			aggregate.Get("order", orders, "/orders/{id}").PassNotFound().Merge(),
			aggregate.Get("lead_product", products, "/products/{order.items.0}").Optional(),
		))
	}
}

// mobileRoutes makes the same calls and keeps only what the app shows.
// Shaping is per call (Allow on the call) or on the merged document
// (Options.Allow), whichever reads better.
func mobileRoutes(products, reviews, orders *pylon.Backend) func(*pylon.Gateway) {
	return func(gw *pylon.Gateway) {
		gw.Route("GET /products/{id}").Timeout(2 * time.Second).Handler(aggregate.MustNewWithOptions(
			aggregate.Options{ErrorsMember: "_errors"},
			aggregate.Get("product", products, "/products/{id}").PassNotFound().
				Allow("id", "name", "price", "images.thumb").Rename("images", "thumbs"),
			aggregate.Get("reviews", reviews, "/reviews?product={id}").Optional().
				Allow("stars", "title"),
			aggregate.Get("related", products, "/categories/{product.category}/top?exclude={id}").Optional().
				Allow("id", "name"),
		))
		gw.Route("GET /orders/{id}").Timeout(2 * time.Second).Handler(aggregate.MustNewWithOptions(
			aggregate.Options{
				ErrorsMember: "_errors",
				Allow:        []string{"id", "status", "total", "eta", "lead_product.name", "lead_product.images.thumb"},
			},
			aggregate.Get("order", orders, "/orders/{id}").PassNotFound().Merge(),
			aggregate.Get("lead_product", products, "/products/{order.items.0}").Optional(),
		))
	}
}

// size fetches url and returns the size of its body.
func size(url string) int {
	res, err := http.Get(url)
	if err != nil {
		log.Fatal(err)
	}
	defer res.Body.Close()
	n, _ := io.Copy(io.Discard, res.Body)
	return int(n)
}

// serve starts h on a loopback port and returns its URL.
func serve(h http.Handler) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go http.Serve(ln, h)
	return "http://" + ln.Addr().String()
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ") // services often pretty-print; the gateway compacts
	enc.Encode(v)
}

type image struct {
	URL    string `json:"url"`
	Thumb  string `json:"thumb"`
	Width  int    `json:"width"`
	Height int    `json:"height"`
	Alt    string `json:"alt"`
}

type product struct {
	ID          string            `json:"id"`
	Name        string            `json:"name"`
	Category    string            `json:"category"`
	Price       float64           `json:"price"`
	Currency    string            `json:"currency"`
	Description string            `json:"description"`
	Specs       map[string]string `json:"specs"`
	Images      []image           `json:"images"`
}

var catalog = map[string]product{
	"p1": {ID: "p1", Name: "Brass desk lamp", Category: "lighting", Price: 89, Currency: "EUR",
		Description: strings.Repeat("A heavy brass lamp with a linen shade and a dimmer. ", 6),
		Specs:       map[string]string{"height": "45 cm", "weight": "2.1 kg", "bulb": "E27, max 40 W", "cable": "1.8 m, braided"},
		Images: []image{
			{URL: "/img/p1-1.jpg", Thumb: "/img/p1-1-t.jpg", Width: 1600, Height: 1200, Alt: "Lamp, front"},
			{URL: "/img/p1-2.jpg", Thumb: "/img/p1-2-t.jpg", Width: 1600, Height: 1200, Alt: "Lamp, side"},
			{URL: "/img/p1-3.jpg", Thumb: "/img/p1-3-t.jpg", Width: 1600, Height: 1200, Alt: "Lamp, shade detail"},
		}},
	"p2": {ID: "p2", Name: "Floor lamp", Category: "lighting", Price: 149, Currency: "EUR",
		Description: "A tall lamp.", Images: []image{{URL: "/img/p2.jpg", Thumb: "/img/p2-t.jpg", Width: 1600, Height: 1200, Alt: "Floor lamp"}}},
	"p3": {ID: "p3", Name: "Reading light", Category: "lighting", Price: 39, Currency: "EUR",
		Description: "A clip-on light.", Images: []image{{URL: "/img/p3.jpg", Thumb: "/img/p3-t.jpg", Width: 1600, Height: 1200, Alt: "Reading light"}}},
}

func productsService() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /products/{id}", func(w http.ResponseWriter, r *http.Request) {
		p, ok := catalog[r.PathValue("id")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		writeJSON(w, p)
	})
	mux.HandleFunc("GET /categories/{cat}/top", func(w http.ResponseWriter, r *http.Request) {
		top := []product{}
		for _, id := range []string{"p1", "p2", "p3"} {
			if p := catalog[id]; p.Category == r.PathValue("cat") && id != r.URL.Query().Get("exclude") {
				top = append(top, p)
			}
		}
		writeJSON(w, top)
	})
	return mux
}

type review struct {
	Stars    int    `json:"stars"`
	Title    string `json:"title"`
	Text     string `json:"text"`
	Author   string `json:"author"`
	Verified bool   `json:"verified"`
	Date     string `json:"date"`
}

func reviewsService() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("product") == "p2" {
			http.Error(w, "reviews database unavailable", http.StatusServiceUnavailable)
			return
		}
		writeJSON(w, []review{
			{5, "Lovely light", strings.Repeat("Warm, even light; the dimmer is smooth. ", 4), "Mira", true, "2026-03-02"},
			{4, "Heavy, in a good way", strings.Repeat("Does not tip over. ", 5), "Jon", true, "2026-02-11"},
			{3, "Shade creases", "The linen shade arrived creased.", "Ana", false, "2026-01-20"},
		})
	})
}

func ordersService() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /orders/{id}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") != "o1" {
			http.NotFound(w, r)
			return
		}
		writeJSON(w, map[string]any{
			"id": "o1", "status": "shipped", "total": 128, "currency": "EUR", "eta": "2026-04-03",
			"items":    []string{"p1", "p3"},
			"shipping": map[string]string{"carrier": "DHL", "tracking": "JD014600003828", "address": "Hauptstr. 1, 10115 Berlin"},
			"billing":  map[string]string{"method": "card", "last4": "4242"},
			"history":  []map[string]string{{"at": "2026-03-30", "event": "placed"}, {"at": "2026-03-31", "event": "shipped"}},
		})
	})
	return mux
}

// accessLog logs each request with what the gateway recorded about it.
func accessLog(logger *slog.Logger) pylon.Middleware {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			next.ServeHTTP(w, r)
			if info := pylon.Info(r.Context()); info.Error != "" {
				logger.Warn("request", "path", r.URL.Path, "route", info.Route, "error", info.Error)
			}
		})
	}
}
