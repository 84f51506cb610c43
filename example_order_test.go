package pylon_test

import (
	"fmt"
	"net/http"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/middleware/apikey"
	"github.com/pylon-gateway/pylon/ratelimit"
)

// A per-subject rate limit placed before the authentication that gives
// requests their subject is a configuration error, reported by Err (and so
// by Run) before the gateway serves.
func ExampleGateway_Err_chainOrder() {
	auth := apikey.Require(apikey.Static(map[string]string{"k1": "alice"}))
	limit := ratelimit.MustNew(ratelimit.BySubject, ratelimit.PerSecond(10))
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})

	gw := pylon.New(pylon.Options{})
	gw.Route("GET /orders").Use(limit, auth).Handler(ok) // the wrong order
	fmt.Println(gw.Err())

	gw = pylon.New(pylon.Options{})
	gw.Route("GET /orders").Use(auth, limit).Handler(ok)
	fmt.Println(gw.Err())
	// Output:
	// pylon: route "GET /orders": ratelimit (keyed by subject) runs before apikey.Require: no request has a subject yet; move it after the authentication
	// <nil>
}

// A middleware of your own that authenticates declares it with WithStage,
// so that the Gateway checks the order of caches and per-subject limits
// around it too.
func ExampleWithStage() {
	myAuth := func(next http.Handler) http.Handler {
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("X-Session") == "" {
				pylon.Error(w, r, http.StatusUnauthorized, "")
				return
			}
			info := pylon.Info(r.Context())
			info.Subject, info.Auth = "from-session", "session"
			next.ServeHTTP(w, r)
		})
		return pylon.WithStage(h, pylon.Stage{Name: "myAuth", Roles: pylon.RoleAuthenticate})
	}
	limit := ratelimit.MustNew(ratelimit.BySubject, ratelimit.PerSecond(10))
	gw := pylon.New(pylon.Options{})
	gw.Use(limit)
	gw.Route("GET /me").Use(myAuth).Handler(http.NotFoundHandler())
	fmt.Println(gw.Err())
	// Output:
	// pylon: route "GET /me": ratelimit (keyed by subject) runs before myAuth: no request has a subject yet; move it after the authentication
}
