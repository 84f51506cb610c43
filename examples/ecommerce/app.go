package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/admin"
	"github.com/pylon-gateway/pylon/aggregate"
	"github.com/pylon-gateway/pylon/breaker"
	"github.com/pylon-gateway/pylon/gatewaytest/jwttest"
	"github.com/pylon-gateway/pylon/middleware"
	"github.com/pylon-gateway/pylon/middleware/jwtauth"
	"github.com/pylon-gateway/pylon/observe"
	"github.com/pylon-gateway/pylon/ratelimit"
)

// The example's policies, small enough to see from a shell.
const (
	// audience is the "aud" the gateway accepts.
	audience = "pylon-shop"
	// scope is the scope every /api route requires.
	scope = "shop"
	// ratePerSecond and rateBurst are each subject's budget per route.
	ratePerSecond = 5
	rateBurst     = 5
	// breakerFailures failures in a row open the payments breaker, for
	// breakerOpen.
	breakerFailures = 3
	breakerOpen     = 10 * time.Second
)

// config is what build needs. The zero value is a quiet gateway on a free
// loopback port.
type config struct {
	// Addr is the gateway's listen address. Empty means "127.0.0.1:0".
	Addr string
	// AdminAddr is the status page's listen address, a loopback one.
	// Empty means "127.0.0.1:0".
	AdminAddr string
	// AccessLog receives one line per request. Nil means none.
	AccessLog io.Writer
	// JSONLog writes the access log as JSON. False means slog's text form.
	JSONLog bool
	// Logger receives events: breaker state changes, rejected tokens,
	// upstream errors, start and stop. Nil means none.
	Logger *slog.Logger
	// Now is the rate limiter's clock. Nil means time.Now.
	Now func() time.Time
}

// app is the running example: three services, a token issuer and the
// gateway in front of them.
type app struct {
	// URL is the gateway's base URL.
	URL string
	// Token is a token for subject alice with the "shop" scope.
	Token string
	// NoScopeToken is a valid token for subject bob without it.
	NoScopeToken string
	// ProductsURL, OrdersURL and PaymentsURL are the services' base URLs;
	// PaymentsURL is also the payments breaker's target.
	ProductsURL, OrdersURL, PaymentsURL string
	// JWKSURL is where the demo issuer publishes its keys.
	JWKSURL string
	// AdminURL is the status page's URL, on a loopback listener of its
	// own.
	AdminURL string

	gw      *pylon.Gateway
	ln      net.Listener
	admin   *admin.Server
	logger  *slog.Logger
	closers []func()
}

// build starts the services and the issuer and wires the gateway in front
// of them, listening but not yet serving (see run). Close releases it all.
func build(cfg config) (_ *app, err error) {
	a := &app{logger: cfg.Logger}
	if a.logger == nil {
		a.logger = slog.New(slog.DiscardHandler)
	}
	defer func() {
		if err != nil {
			a.Close()
		}
	}()

	// The services, each on its own loopback port.
	for _, s := range []struct {
		url *string
		h   http.Handler
	}{{&a.ProductsURL, productsService()}, {&a.OrdersURL, ordersService()}, {&a.PaymentsURL, paymentsService()}} {
		url, stop, err := serve(s.h)
		if err != nil {
			return nil, err
		}
		*s.url = url
		a.onClose(stop)
	}

	// A demo identity provider: it serves a JWKS, the gateway fetches it
	// like any remote key set, and the tokens it mints are printed.
	idp := jwttest.NewIssuer()
	a.onClose(idp.Close)
	a.JWKSURL = idp.JWKSURL
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	verifier, err := jwtauth.New(ctx, jwtauth.Options{
		JWKSURL:    idp.JWKSURL,
		Issuer:     idp.URL,
		Audience:   []string{audience},
		Algorithms: []string{"RS256", "ES256", "EdDSA"},
		Logger:     a.logger,
	})
	if err != nil {
		return nil, err
	}
	a.onClose(func() { _ = verifier.Close() })
	exp := time.Now().Add(24 * time.Hour).Unix()
	a.Token = idp.Mint(map[string]any{"sub": "alice", "aud": audience, "scope": scope + " profile", "exp": exp})
	a.NoScopeToken = idp.Mint(map[string]any{"sub": "bob", "aud": audience, "scope": "profile", "exp": exp})

	// Metrics, in a registry of the gateway's own.
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics, err := observe.NewMetrics(reg, observe.MetricsOptions{})
	if err != nil {
		return nil, err
	}

	// A breaker per payments target: three failures in a row and the
	// target is left alone for ten seconds, by the route to it and by the
	// summary's payment call alike.
	paymentsGuard, err := breaker.PerTarget(breaker.Settings{
		Name:                "payments",
		ConsecutiveFailures: breakerFailures,
		OpenDuration:        breakerOpen,
		Logger:              a.logger,
	})
	if err != nil {
		return nil, err
	}
	metrics.WatchBreaker(paymentsGuard) // pylon_breaker_state, no OnStateChange to write
	products, err := a.backend(metrics, "products", a.ProductsURL, nil)
	if err != nil {
		return nil, err
	}
	orders, err := a.backend(metrics, "orders", a.OrdersURL, nil)
	if err != nil {
		return nil, err
	}
	payments, err := a.backend(metrics, "payments", a.PaymentsURL, paymentsGuard)
	if err != nil {
		return nil, err
	}

	// The gateway. Stats feeds the status page; it comes first so that it
	// counts every request, refused ones included.
	stats := admin.NewStats(admin.StatsOptions{})
	limits := ratelimit.NewMemoryStore(ratelimit.MemoryOptions{})
	gw := pylon.New(pylon.Options{})
	gw.Use(
		stats.Middleware,
		metrics.Middleware,
		middleware.RequestID,
		middleware.Recover(a.logger),
		middleware.AccessLogWithOptions(middleware.AccessLogOptions{
			Logger: accessLogger(cfg),
			Skip:   isOperational,
		}),
	)

	// Operational endpoints, unauthenticated. Payments is not critical:
	// without it the gateway still serves products, orders and summaries.
	live, ready := gw.Health(products, orders)
	gw.Route("GET /healthz").Name("healthz").Handler(live)
	gw.Route("GET /readyz").Name("readyz").Handler(ready)
	gw.Route("GET /metrics").Name("metrics").Handler(metrics.Handler())

	// The API: a token with the "shop" scope, then a budget per subject
	// and route. The services do not know the "/api" prefix: the group
	// strips it from every route (and puts it back in Location headers).
	api := gw.Group("/api",
		jwtauth.RequireWithOptions(verifier, jwtauth.RequireOptions{
			Rules:  []jwtauth.Rule{jwtauth.Scopes(scope)},
			Logger: a.logger,
		}),
		ratelimit.MustNewWithOptions(ratelimit.Options{
			Limits: []ratelimit.Limit{ratelimit.PerSecond(ratePerSecond).WithBurst(rateBurst)},
			Key:    ratelimit.Compose(ratelimit.BySubject, ratelimit.ByRoute),
			Store:  limits,
			Now:    cfg.Now,
		}),
	).StripPrefix()
	api.Route("GET /products/{id}").Name("product").Timeout(2 * time.Second).To(products)
	api.Route("GET /orders/{id}").Name("order").Timeout(2 * time.Second).To(orders)
	api.Route("GET /payments/{order}").Name("payment").Timeout(2 * time.Second).To(payments)
	api.Route("GET /orders/{id}/summary").Name("order-summary").Timeout(2 * time.Second).
		Handler(aggregate.MustNewWithOptions(aggregate.Options{ErrorsMember: "_errors"},
			aggregate.Get("order", orders, "/orders/{id}").PassNotFound().Deny("product_ids"),
			aggregate.Get("products", products, "/products?ids={order.product_ids}"),
			aggregate.Get("payment", payments, "/payments/{id}").Optional(),
		))
	if err := gw.Err(); err != nil {
		return nil, err
	}
	// Route and backend series from start, and target health at scrape.
	metrics.WatchGateway(gw)
	a.gw = gw

	addr := cfg.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	if a.ln, err = net.Listen("tcp", addr); err != nil {
		return nil, err
	}
	a.onClose(func() { _ = a.ln.Close() })
	a.URL = "http://" + a.ln.Addr().String()

	// The status page, on a loopback listener of its own. Its actions
	// (drain a target, fail readiness, reset the breaker) are open to
	// loopback peers, which suits a demo; give a real gateway
	// admin.BasicAuth or an Authorizer of your own.
	adminAddr := cfg.AdminAddr
	if adminAddr == "" {
		adminAddr = "127.0.0.1:0"
	}
	a.admin, err = admin.Listen(adminAddr, admin.Options{
		Gateway:         gw,
		Stats:           stats,
		Backends:        []*pylon.Backend{products, orders, payments},
		Guards:          map[string]pylon.Guard{"payments": paymentsGuard},
		RateLimitStores: map[string]*ratelimit.MemoryStore{"per-subject": limits},
		Authorizer:      admin.LoopbackOnly(),
		Logger:          a.logger,
		Title:           "Pylon shop",
	})
	if err != nil {
		return nil, err
	}
	a.onClose(func() { _ = a.admin.Close() })
	a.AdminURL = a.admin.URL()
	return a, nil
}

// backend builds a Backend with active health checks and a transport that
// counts each attempt in the metrics.
func (a *app) backend(m *observe.Metrics, name, target string, guard pylon.Guard) (*pylon.Backend, error) {
	opts := pylon.BackendOptions{
		Targets:     []string{target},
		HealthCheck: pylon.HealthCheck{Path: "/healthz", Interval: 5 * time.Second},
		Guard:       guard,
		Logger:      a.logger,
	}
	opts.Transport = m.Transport(pylon.NewTransport(opts)) // b.Close closes its idle connections
	b, err := pylon.NewBackend(name, opts)
	if err != nil {
		return nil, err
	}
	a.onClose(func() { _ = b.Close() })
	return b, nil
}

// run serves the gateway and its status page until ctx ends, then drains
// them.
func (a *app) run(ctx context.Context) error {
	adminDone := make(chan error, 1)
	go func() { adminDone <- a.admin.Serve(ctx) }()
	err := pylon.RunWithOptions(ctx, pylon.NewServer("", a.gw), pylon.RunOptions{
		Listener:     a.ln,
		DrainTimeout: 5 * time.Second,
		Logger:       a.logger,
	})
	if err != nil {
		_ = a.admin.Close()
	}
	if aerr := <-adminDone; err == nil {
		err = aerr
	}
	return err
}

// Close stops everything build started, in reverse order.
func (a *app) Close() {
	for i := len(a.closers) - 1; i >= 0; i-- {
		a.closers[i]()
	}
	a.closers = nil
}

func (a *app) onClose(f func()) { a.closers = append(a.closers, f) }

func accessLogger(cfg config) *slog.Logger {
	if cfg.AccessLog == nil {
		return slog.New(slog.DiscardHandler)
	}
	if cfg.JSONLog {
		return slog.New(slog.NewJSONHandler(cfg.AccessLog, nil))
	}
	return slog.New(slog.NewTextHandler(cfg.AccessLog, nil))
}

// isOperational tells probe and scrape requests, kept out of the access log.
func isOperational(r *http.Request) bool {
	switch r.URL.Path {
	case "/healthz", "/readyz", "/metrics":
		return true
	}
	return false
}
