package gatewaytest_test

import (
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/gatewaytest"
	"github.com/pylon-gateway/pylon/middleware"
)

// newGateway is the wiring under test: GET /orders/{id} is proxied to the
// orders backend, with request IDs; a bad ID is a 400 problem.
func newGateway(orders string) http.Handler {
	target, _ := url.Parse(orders)
	proxy := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) { r.SetURL(target) }}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /orders/{id}", func(w http.ResponseWriter, r *http.Request) {
		if _, err := strconv.Atoi(r.PathValue("id")); err != nil {
			pylon.Error(w, r, http.StatusBadRequest, "order id must be a number")
			return
		}
		proxy.ServeHTTP(w, r)
	})
	return middleware.RequestID(mux)
}

// testOrdersRoute is what a team writes as func TestOrdersRoute(t *testing.T).
func testOrdersRoute(t gatewaytest.TB) {
	orders := gatewaytest.NewBackend(t, gatewaytest.Response{Body: `{"id":7}`})
	gw := newGateway(orders.URL)

	res := gatewaytest.Get(t, gw, "/orders/7", "X-Request-Id", "req-1")
	gatewaytest.AssertStatus(t, res, http.StatusOK)
	gatewaytest.AssertBody(t, res, `{"id":7}`)
	if got := orders.Last(t); got.Path != "/orders/7" || got.Header.Get("X-Request-Id") != "req-1" {
		t.Errorf("upstream got %s with ID %q", got.Path, got.Header.Get("X-Request-Id"))
	}

	res = gatewaytest.Get(t, gw, "/orders/seven", "X-Request-Id", "req-2")
	gatewaytest.AssertProblem(t, res, pylon.Problem{Status: 400, RequestID: "req-2"})
	if orders.Count() != 1 {
		t.Errorf("a bad request reached the backend")
	}
}

func Example() {
	t := &exampleT{}
	testOrdersRoute(t)
	t.cleanup()
	fmt.Println("failed:", t.failed)
	// Output: failed: false
}

// exampleT stands in for *testing.T so the example runs as documentation.
type exampleT struct {
	failed   bool
	cleanups []func()
}

func (t *exampleT) Helper()                      {}
func (t *exampleT) Cleanup(f func())             { t.cleanups = append(t.cleanups, f) }
func (t *exampleT) Errorf(f string, args ...any) { t.failed = true; fmt.Printf(f+"\n", args...) }
func (t *exampleT) Fatalf(f string, args ...any) { t.Errorf(f, args...); panic("fatal") }
func (t *exampleT) cleanup() {
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
}
