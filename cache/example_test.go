package cache_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/cache"
)

// A cached route in front of a backend: the first request is forwarded and
// stored, the second is served from the cache with Age and Cache-Status.
func Example() {
	products := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		fmt.Fprint(w, `{"id":42}`)
	}))
	defer products.Close()
	backend := pylon.MustNewBackend("products", pylon.BackendOptions{Targets: []string{products.URL}})
	defer backend.Close()

	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC) // a fixed clock keeps the output stable
	c := cache.MustNew(cache.Options{MaxBytes: 64 << 20, Now: func() time.Time { return now }})
	defer c.Close()

	gw := pylon.New(pylon.Options{})
	gw.Route("GET /products/{id}").Use(c.Middleware).To(backend)
	front := httptest.NewServer(gw)
	defer front.Close()

	for range 2 {
		res, err := http.Get(front.URL + "/products/42")
		if err != nil {
			panic(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		fmt.Printf("%s | Age %q | %s\n", body, res.Header.Get("Age"), res.Header.Get("Cache-Status"))
	}
	// Output:
	// {"id":42} | Age "" | pylon; fwd=uri-miss; stored
	// {"id":42} | Age "0" | pylon; hit; ttl=60
}

// An admin route purges cached responses by URL prefix. Expose it only on
// an internal listener or behind authentication.
func ExampleCache_PurgePrefix() {
	c := cache.MustNew(cache.Options{DefaultTTL: time.Minute})
	defer c.Close()
	origin := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "catalog") })
	cached := c.Middleware(origin)

	admin := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := c.PurgePrefix(r.Context(), "GET http://shop.example/catalog/")
		if err != nil {
			pylon.Error(w, r, http.StatusServiceUnavailable, "The cache could not be purged.")
			return
		}
		fmt.Fprintf(w, "purged %d\n", n)
	})

	for _, p := range []string{"/catalog/1", "/catalog/2", "/about"} {
		cached.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "http://shop.example"+p, nil))
	}
	w := httptest.NewRecorder()
	admin.ServeHTTP(w, httptest.NewRequest("POST", "/admin/purge", nil))
	fmt.Print(w.Body.String())
	// Output:
	// purged 2
}

// Key shows the key a request is stored under: method, scheme, host, path
// and the sorted query.
func ExampleCache_Key() {
	c := cache.MustNew(cache.Options{IgnoreQueryParams: []string{"utm_source"}})
	defer c.Close()
	r := httptest.NewRequest("GET", "http://API.example.com/search?q=go&page=2&utm_source=mail", nil)
	fmt.Println(c.Key(r))
	// Output:
	// GET http://api.example.com/search?page=2&q=go
}
