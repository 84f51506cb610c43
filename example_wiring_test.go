package pylon_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"time"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/breaker"
	"github.com/pylon-gateway/pylon/cache"
	"github.com/pylon-gateway/pylon/gatewaytest/jwttest"
	"github.com/pylon-gateway/pylon/middleware"
	"github.com/pylon-gateway/pylon/middleware/jwtauth"
	"github.com/pylon-gateway/pylon/ratelimit"
)

// The wiring of the README: a global chain, a group behind JWT
// authentication, a rate-limited route with a deadline, and a rewrite.
func Example_wiring() {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "orders service: %s", r.URL.Path)
	}))
	defer upstream.Close()
	idp := jwttest.NewIssuer()
	defer idp.Close()
	verifier, err := jwtauth.New(context.Background(), jwtauth.Options{
		JWKS: idp.JWKS(), Issuer: idp.URL, Audience: []string{jwttest.DefaultAudience}, Algorithms: []string{"RS256"},
	})
	if err != nil {
		panic(err)
	}
	defer verifier.Close()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))

	orders := pylon.MustNewBackend("orders", pylon.BackendOptions{
		Targets:  []string{upstream.URL},
		Balancer: pylon.LeastRequests(),
		Retries:  2,
	})
	defer orders.Close()

	ordersBreaker := breaker.MustNew(breaker.Settings{Name: "orders"})
	responses := cache.MustNew(cache.Options{})
	defer responses.Close()

	gw := pylon.New(pylon.Options{
		Trust: pylon.Trust{Proxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}},
	})
	gw.Use(middleware.RequestID, middleware.Recover(logger), middleware.AccessLog(logger))
	api := gw.Group("/api/v1", jwtauth.Require(verifier))
	api.Route("GET /orders/{id}").
		Use(ratelimit.MustNew(ratelimit.BySubject, ratelimit.PerSecond(10)), ordersBreaker.Middleware, responses.Middleware).
		Timeout(2 * time.Second).
		To(orders)
	gw.Route("GET /v2/items/{id}").Rewrite("/items/{id}").To(orders)
	if err := gw.Err(); err != nil {
		panic(err)
	}

	token := idp.Mint(map[string]any{"sub": "alice"})
	for _, c := range []struct{ path, token string }{
		{"/api/v1/orders/7", token},
		{"/api/v1/orders/7", ""},
		{"/v2/items/42", ""},
	} {
		req := httptest.NewRequest("GET", c.path, nil)
		req.Header.Set("X-Request-Id", "req-1")
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		rec := httptest.NewRecorder()
		gw.ServeHTTP(rec, req)
		fmt.Println(rec.Code, strings.TrimSpace(rec.Body.String()))
	}
	// Output:
	// 200 orders service: /api/v1/orders/7
	// 401 {"title":"Unauthorized","status":401,"request_id":"req-1"}
	// 200 orders service: /items/42
}
