package pylon_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/pylon-gateway/pylon"
)

// A gateway in front of one backend, both served over loopback as a test
// would: the route rewrites the path, and an unknown path gets a 404
// problem document.
func Example() {
	orders := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "order service saw %s", r.URL.Path)
	}))
	defer orders.Close()

	backend := pylon.MustNewBackend("orders", pylon.BackendOptions{Targets: []string{orders.URL}})
	defer backend.Close()

	gw := pylon.New(pylon.Options{})
	gw.Route("GET /v2/orders/{id}").Rewrite("/orders/{id}").Timeout(2 * time.Second).To(backend)
	if err := gw.Err(); err != nil {
		panic(err)
	}
	front := httptest.NewServer(gw)
	defer front.Close()

	res, _ := http.Get(front.URL + "/v2/orders/42")
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	fmt.Println(res.StatusCode, string(body))

	res, _ = http.Get(front.URL + "/nowhere")
	body, _ = io.ReadAll(res.Body)
	res.Body.Close()
	fmt.Println(res.StatusCode, res.Header.Get("Content-Type"))
	fmt.Print(string(body))
	// Output:
	// 200 order service saw /orders/42
	// 404 application/problem+json
	// {"title":"Not Found","status":404,"detail":"No route matches this request."}
}

// Routes lists the route table, for printing at start-up or asserting in a
// test.
func ExampleGateway_Routes() {
	users := pylon.MustNewBackend("users", pylon.BackendOptions{Targets: []string{"http://10.0.0.7:8080"}})
	defer users.Close()

	gw := pylon.New(pylon.Options{})
	api := gw.Group("/api/v1")
	api.Route("GET /users/{id}").Name("user").Header("X-Api-Version", "2").To(users)
	api.Route("GET /users/{id}").Name("user-v1").To(users)
	gw.Handle("GET /healthz", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))

	for _, r := range gw.Routes() {
		fmt.Println(r.Name, "|", r.Pattern, "|", r.Matchers, "|", r.Target)
	}
	// Output:
	// user | GET /api/v1/users/{id} | [header X-Api-Version=2] | backend users
	// user-v1 | GET /api/v1/users/{id} | [] | backend users
	// GET /healthz | GET /healthz | [] | handler http.HandlerFunc
}

// WriteProblem is the one error writer: every package answers errors with
// it, so clients always get RFC 9457 problem documents.
func ExampleWriteProblem() {
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/", nil)
	rec.Header().Set("Retry-After", "3")
	pylon.WriteProblem(rec, req, pylon.Problem{Status: http.StatusServiceUnavailable, Detail: "Try again shortly."})
	fmt.Println(rec.Code, rec.Header().Get("Content-Type"), rec.Header().Get("Retry-After"))
	fmt.Print(rec.Body.String())
	// Output:
	// 503 application/problem+json 3
	// {"title":"Service Unavailable","status":503,"detail":"Try again shortly."}
}
