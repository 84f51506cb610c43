package idempotency_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/middleware/idempotency"
)

// A POST retried with the same Idempotency-Key is answered from the first
// response, marked Idempotent-Replayed.
func Example() {
	calls := 0
	orders := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls++
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, "order %d", calls)
	})
	gw := pylon.New(pylon.Options{})
	gw.Route("POST /orders").Use(idempotency.New(idempotency.Options{Required: true})).Handler(orders)
	srv := httptest.NewServer(gw)
	defer srv.Close()

	for range 2 {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/orders", strings.NewReader(`{"item":"p1"}`))
		req.Header.Set("Idempotency-Key", `"8e03978e-40d5-43e8-bc93-6894a57f9324"`)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			fmt.Println(err)
			return
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		fmt.Printf("%d %s replayed=%q\n", res.StatusCode, body, res.Header.Get("Idempotent-Replayed"))
	}
	// Output:
	// 201 order 1 replayed=""
	// 201 order 1 replayed="true"
}
