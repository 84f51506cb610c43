// Package observe is Pylon's monitoring: Prometheus or OpenTelemetry
// metrics and OpenTelemetry tracing for a pylon.Gateway. It is a module of its own, so
// that only programs that import it compile Prometheus and OpenTelemetry.
//
// Metrics come from [NewMetrics]: its Middleware records the request
// series, by route name, method and status class, reading what every stage
// of the gateway wrote in pylon.RequestInfo (route, backend, attempts,
// upstream time, rate-limit decision, auth failure); its Transport counts
// upstream attempts by target; WatchBackends reports target health at
// scrape time, and WatchMirror the counts of a traffic.Mirror;
// requests served by a side of a traffic.Split are counted by route and
// side (RequestInfo.Split), aggregation calls and cache results from
// RequestInfo.Calls and RequestInfo.Cache; WatchBreaker follows a breaker's
// state with no hook to write, and WatchGateway creates the series of the
// routes at zero and watches their backends; BreakerStateChange and
// AggregateCall remain for breakers and aggregations of other kinds;
// Handler serves /metrics. Labels carry
// names from configuration and values from small fixed sets, never paths
// or subjects. Metric and label names follow the OpenTelemetry HTTP
// semantic conventions where one exists (http_server_request_duration_seconds,
// http_route, http_request_method), and a pylon_ prefix elsewhere.
//
// [NewOTelMetrics] makes the same Metrics over an OpenTelemetry
// MeterProvider instead of a Prometheus registry: the same methods decide
// what to record, the instruments carry OpenTelemetry names
// (http.server.request.duration, unit "s"; pylon.upstream.retries) that
// OpenTelemetry's Prometheus exporter turns back into the names above.
//
// Tracing comes from [NewTracer]: its Middleware makes a server span per
// request, continuing the W3C trace context the client sent and named
// after the route; its Transport makes a client span per upstream attempt
// and sends the trace context upstream; StartCall makes a span per
// aggregation call. No exporter is chosen here.
//
// [ServerTiming] adds an opt-in Server-Timing header with the gateway's and
// the upstreams' share of a response's time.
//
// A gateway wires them like this:
//
//	reg := prometheus.NewRegistry()
//	metrics, err := observe.NewMetrics(reg, observe.MetricsOptions{})
//	tracer := observe.NewTracer(tracerProvider, observe.TracingOptions{})
//
//	opts := pylon.BackendOptions{Targets: targets}
//	opts.Transport = tracer.Transport(metrics.Transport(pylon.NewTransport(opts)))
//	orders := pylon.MustNewBackend("orders", opts)
//	metrics.WatchBreaker(ordersGuard) // the Guard in opts, if any
//
//	gw := pylon.New(pylon.Options{})
//	gw.Use(tracer.Middleware, metrics.Middleware, middleware.RequestID, ...)
//	gw.Handle("GET /metrics", metrics.Handler())
//	// ... routes ...
//	metrics.WatchGateway(gw) // route series at zero; WatchBackends of the routed backends
//
// Backend.Close closes the idle connections of the wrapped transport: the
// wrappers forward CloseIdleConnections.
package observe
