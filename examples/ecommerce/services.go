package main

import (
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"time"
)

// The three services behind the gateway. Each is a plain net/http handler
// served on a loopback port of its own, as it would be in a process of its
// own; none of them knows about tokens, rate limits or the other services.

type product struct {
	ID       string  `json:"id"`
	Name     string  `json:"name"`
	Price    float64 `json:"price"`
	Currency string  `json:"currency"`
	Stock    int     `json:"stock"`
}

var catalog = map[string]product{
	"p1": {ID: "p1", Name: "Brass desk lamp", Price: 89, Currency: "EUR", Stock: 12},
	"p2": {ID: "p2", Name: "Linen lamp shade", Price: 29, Currency: "EUR", Stock: 40},
	"p3": {ID: "p3", Name: "Reading light", Price: 39, Currency: "EUR", Stock: 0},
}

// maxBatch bounds the ids one batch request of the products service reads.
const maxBatch = 50

// productsService answers GET /products/{id} and the batch lookup
// GET /products?ids=p1,p3 (in the order asked, unknown ids left out).
func productsService() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", healthz)
	mux.HandleFunc("GET /products/{id}", func(w http.ResponseWriter, r *http.Request) {
		p, ok := catalog[r.PathValue("id")]
		if !ok {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such product"})
			return
		}
		writeJSON(w, http.StatusOK, p)
	})
	mux.HandleFunc("GET /products", func(w http.ResponseWriter, r *http.Request) {
		found := []product{}
		for i, id := range strings.Split(r.URL.Query().Get("ids"), ",") {
			if i == maxBatch {
				break
			}
			if p, ok := catalog[id]; ok {
				found = append(found, p)
			}
		}
		writeJSON(w, http.StatusOK, found)
	})
	return mux
}

type item struct {
	ProductID string `json:"product_id"`
	Quantity  int    `json:"quantity"`
}

type order struct {
	ID       string  `json:"id"`
	Customer string  `json:"customer"`
	Status   string  `json:"status"`
	Items    []item  `json:"items"`
	Total    float64 `json:"total"`
	Currency string  `json:"currency"`
	// ProductIDs lists the items' products, comma separated, in the form
	// the products service's batch lookup takes.
	ProductIDs string `json:"product_ids"`
}

var orderBook = map[string]order{
	"o1": {ID: "o1", Customer: "alice", Status: "shipped", Total: 167, Currency: "EUR",
		Items: []item{{"p1", 1}, {"p3", 2}}, ProductIDs: "p1,p3"},
	"o2": {ID: "o2", Customer: "alice", Status: "placed", Total: 58, Currency: "EUR",
		Items: []item{{"p2", 2}}, ProductIDs: "p2"},
}

// ordersService answers GET /orders/{id}.
func ordersService() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", healthz)
	mux.HandleFunc("GET /orders/{id}", func(w http.ResponseWriter, r *http.Request) {
		o, ok := orderBook[r.PathValue("id")]
		if !ok {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such order"})
			return
		}
		writeJSON(w, http.StatusOK, o)
	})
	return mux
}

type payment struct {
	Order    string  `json:"order"`
	Status   string  `json:"status"`
	Amount   float64 `json:"amount"`
	Currency string  `json:"currency"`
	Method   string  `json:"method"`
}

var ledger = map[string]payment{
	"o1": {Order: "o1", Status: "captured", Amount: 167, Currency: "EUR", Method: "card"},
	"o2": {Order: "o2", Status: "authorized", Amount: 58, Currency: "EUR", Method: "paypal"},
}

// brokenOrder is the order id whose payment lookup always fails with 500:
// the switch that lets a curl loop trip the payments circuit breaker.
const brokenOrder = "broken"

// paymentsService answers GET /payments/{order}; it fails with 500 for the
// order "broken".
func paymentsService() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", healthz)
	mux.HandleFunc("GET /payments/{order}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("order")
		if id == brokenOrder {
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "card processor unavailable"})
			return
		}
		p, ok := ledger[id]
		if !ok {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "no payment for this order"})
			return
		}
		writeJSON(w, http.StatusOK, p)
	})
	return mux
}

func healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// serve serves h on a new loopback port and returns its URL and a function
// that stops it and waits for it to end.
func serve(h http.Handler) (url string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	return "http://" + ln.Addr().String(), func() {
		_ = srv.Close()
		<-done
	}, nil
}
