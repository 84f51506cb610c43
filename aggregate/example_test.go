package aggregate_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/aggregate"
)

// service starts a demo upstream answering body and returns a Backend for it.
func service(name, body string) (*pylon.Backend, func()) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, body)
	}))
	b := pylon.MustNewBackend(name, pylon.BackendOptions{Targets: []string{srv.URL}})
	return b, func() { b.Close(); srv.Close() }
}

func fetch(url string) {
	res, err := http.Get(url)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if p := res.Header.Get("Pylon-Partial"); p != "" {
		fmt.Println(res.StatusCode, "partial:", p)
	} else {
		fmt.Println(res.StatusCode)
	}
	fmt.Print(string(body))
}

// An order summary from three backends: the customer call waits for the
// order (it needs its customer_id), the payment call runs alongside and is
// optional.
func Example() {
	orders, stop1 := service("orders", `{"id":"42","customer_id":"c7","items":[{"sku":"A1","qty":2}]}`)
	defer stop1()
	customers, stop2 := service("customers", `{"id":"c7","name":"Ada","email":"ada@example.com"}`)
	defer stop2()
	payments, stop3 := service("payments", `{"status":"paid"}`)
	defer stop3()

	gw := pylon.New(pylon.Options{})
	gw.Route("GET /orders/{id}/summary").Handler(aggregate.MustNew(
		aggregate.Get("order", orders, "/orders/{id}").Deny("customer_id"),
		aggregate.Get("customer", customers, "/customers/{order.customer_id}").Allow("name"),
		aggregate.Get("payment", payments, "/payments?order={id}").Optional(),
	))
	srv := httptest.NewServer(gw)
	defer srv.Close()

	fetch(srv.URL + "/orders/42/summary")
	// Output:
	// 200
	// {"order":{"id":"42","items":[{"sku":"A1","qty":2}]},"customer":{"name":"Ada"},"payment":{"status":"paid"}}
}

// An optional call that fails leaves a 200 answer marked partial.
func ExampleOptions_errorsMember() {
	orders, stop1 := service("orders", `{"id":"42"}`)
	defer stop1()
	broken, stop2 := service("reviews", `<html>oops</html>`)
	defer stop2()

	h := aggregate.MustNewWithOptions(aggregate.Options{ErrorsMember: "_errors"},
		aggregate.Get("order", orders, "/orders/{id}").Merge(),
		aggregate.Get("reviews", broken, "/reviews?order={id}").Optional(),
	)
	mux := http.NewServeMux()
	mux.Handle("GET /orders/{id}", h)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	fetch(srv.URL + "/orders/42")
	// Output:
	// 200 partial: reviews
	// {"id":"42","_errors":{"reviews":"invalid response"}}
}

// Two aggregates share their calls and shape the merged document for two
// clients: the mobile one keeps fewer fields.
func ExampleOptions_allow() {
	products, stop := service("products", `{"id":"p1","name":"Lamp","description":"A long text","images":[{"url":"/1.jpg","w":1200},{"url":"/2.jpg","w":1200}]}`)
	defer stop()

	product := aggregate.Get("product", products, "/products/{id}")
	web := aggregate.MustNew(product)
	mobile := aggregate.MustNewWithOptions(aggregate.Options{
		Allow:  []string{"product.id", "product.name", "product.images.url"},
		Rename: map[string]string{"product.images": "thumbs"},
	}, product)

	mux := http.NewServeMux()
	mux.Handle("GET /web/products/{id}", web)
	mux.Handle("GET /mobile/products/{id}", mobile)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	fetch(srv.URL + "/web/products/p1")
	fetch(srv.URL + "/mobile/products/p1")
	// Output:
	// 200
	// {"product":{"id":"p1","name":"Lamp","description":"A long text","images":[{"url":"/1.jpg","w":1200},{"url":"/2.jpg","w":1200}]}}
	// 200
	// {"product":{"id":"p1","name":"Lamp","thumbs":[{"url":"/1.jpg"},{"url":"/2.jpg"}]}}
}

// NewWithOptions reports a misconfiguration as an error; MustNew panics.
func ExampleNewWithOptions() {
	h := http.NotFoundHandler()
	_, err := aggregate.NewWithOptions(aggregate.Options{},
		aggregate.Get("a", h, "/a/{b.id}"),
		aggregate.Get("b", h, "/b/{a.id}"),
	)
	fmt.Println(err)
	// Output:
	// aggregate: call "a": dependency cycle: a -> b -> a
}
