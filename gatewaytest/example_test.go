package gatewaytest_test

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/gatewaytest"
	"github.com/pylon-gateway/pylon/middleware"
)

// newGateway is the wiring under test: GET /orders/{id} is proxied to the
// orders backend, with request IDs; a bad ID is a 400 problem.
func newGateway(t gatewaytest.TB, orders string) *pylon.Gateway {
	backend := pylon.MustNewBackend("orders", pylon.BackendOptions{Targets: []string{orders}})
	t.Cleanup(func() { backend.Close() })
	gw := pylon.New(pylon.Options{})
	gw.Use(middleware.RequestID)
	gw.Route("GET /orders/{id}").Use(numericID).To(backend)
	if err := gw.Err(); err != nil {
		t.Fatalf("%v", err)
	}
	return gw
}

func numericID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := strconv.Atoi(r.PathValue("id")); err != nil {
			pylon.Error(w, r, http.StatusBadRequest, "order id must be a number")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// testOrdersRoute is what a team writes as func TestOrdersRoute(t *testing.T).
func testOrdersRoute(t gatewaytest.TB) {
	orders := gatewaytest.NewBackend(t, gatewaytest.Response{Body: `{"id":7}`})
	gw := newGateway(t, orders.URL)

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
