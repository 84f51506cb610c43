package breaker_test

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/breaker"
)

// A breaker as route middleware: after three failures in a row it answers
// 503 with Retry-After for 30 seconds, without calling the backend.
func Example() {
	calls := 0
	failing := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls++
		pylon.Error(w, r, http.StatusBadGateway, "The upstream service could not be reached.")
	})

	b := breaker.MustNew(breaker.Settings{
		Name:                "orders",
		ConsecutiveFailures: 3,
		OpenDuration:        30 * time.Second,
		Logger:              slog.New(slog.DiscardHandler),
		OnStateChange: func(name string, from, to breaker.State) {
			fmt.Printf("%s: %s -> %s\n", name, from, to)
		},
	})
	h := b.Middleware(failing)

	for range 5 {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", "/orders/1", nil))
		fmt.Println(w.Code, w.Header().Values("Retry-After"))
	}
	fmt.Println("backend calls:", calls)
	// Output:
	// 502 []
	// 502 []
	// orders: closed -> open
	// 502 []
	// 503 [30]
	// 503 [30]
	// backend calls: 3
}

// A breaker per target of a Backend: a target whose breaker is open is
// skipped for the others, and when all are open the Backend answers 503
// with Retry-After.
func ExamplePerTarget() {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer up.Close()

	orders := pylon.MustNewBackend("orders", pylon.BackendOptions{
		Targets: []string{up.URL},
		Guard: breaker.MustPerTarget(breaker.Settings{
			Name:                "orders",
			ConsecutiveFailures: 2,
			Logger:              slog.New(slog.DiscardHandler),
		}),
		Logger: slog.New(slog.DiscardHandler),
	})
	defer orders.Close()

	for range 3 {
		w := httptest.NewRecorder()
		orders.ServeHTTP(w, httptest.NewRequest("GET", "/orders/1", nil))
		fmt.Println(w.Code, w.Header().Values("Retry-After"))
	}
	// Output:
	// 503 []
	// 503 []
	// 503 [30]
}

// A breaker around an http.Client's transport: a refused request is not
// sent, and its error wraps ErrOpen.
func ExampleBreaker_Transport() {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
	}))
	defer up.Close()

	b := breaker.MustNew(breaker.Settings{ConsecutiveFailures: 1, Logger: slog.New(slog.DiscardHandler)})
	client := &http.Client{Transport: b.Transport(nil)}

	res, err := client.Get(up.URL)
	if err == nil {
		fmt.Println(res.StatusCode)
		res.Body.Close()
	}
	_, err = client.Get(up.URL)
	fmt.Println(errors.Is(err, breaker.ErrOpen))
	// Output:
	// 500
	// true
}
