package observe

import (
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Label values used when the real value is unknown or outside the bounded
// set a label accepts.
const (
	// RouteUnmatched is the http_route label of requests no route matched
	// (404, 405, and requests refused before routing).
	RouteUnmatched = "unmatched"
	// LabelOther replaces a label value outside its fixed set (an unknown
	// auth failure reason, breaker state or status code class).
	LabelOther = "other"
)

// authReasons is the fixed set of pylon.RequestInfo.AuthFailure codes
// counted under their own name by pylon_auth_failures_total; any other code
// is counted as "other", so that a label value never comes from a client.
// cacheResults is the fixed set of RequestInfo.Cache statuses (package
// cache's Status constants) counted under their own name by
// pylon_cache_requests_total; any other is counted as "other".
var cacheResults = []string{"hit", "stale", "revalidated", "miss", "collapsed", "bypass"}

// aggOutcomes is the fixed set of pylon.CallInfo.Outcome values.
var aggOutcomes = []string{"ok", "timeout", "skipped", "error"}

var authReasons = []string{
	"missing_token", "invalid_token", "expired", "revoked", "unknown_key",
	"insufficient_scope", "missing_key", "invalid_key", "unavailable",
}

// ErrRegister is wrapped by the error NewMetrics returns when a collector
// cannot be registered (most often: registered twice with one registry).
var ErrRegister = errors.New("observe: cannot register metrics")

// ErrNilRegistry is returned by NewMetrics for a Registerer that is a nil
// pointer (a *prometheus.Registry variable never assigned), which would
// otherwise panic at the first registration. An untyped nil is
// prometheus.DefaultRegisterer.
var ErrNilRegistry = errors.New("observe: nil registry pointer")

// MetricsOptions configures [NewMetrics]. Every field's zero value is a safe
// default.
type MetricsOptions struct {
	// DurationBuckets are the bucket bounds, in seconds, of the request and
	// upstream duration histograms. Nil means the OpenTelemetry HTTP
	// semantic-convention buckets (5ms to 10s).
	DurationBuckets []float64
	// GatewayBuckets are the bucket bounds, in seconds, of the gateway time
	// histogram. Nil means 50µs to 1s, finer than DurationBuckets since a
	// gateway's own time is usually well under a millisecond.
	GatewayBuckets []float64
	// SizeBuckets are the bucket bounds, in bytes, of the body size
	// histograms. Nil means powers of 4 from 64 B to 16 MiB.
	SizeBuckets []float64
	// StatusCodes labels request series by the exact status code
	// (http_response_status_code="404") instead of its class
	// (http_response_status_class="4xx"). False means the class, which
	// keeps the number of series small.
	StatusCodes bool
	// ConstLabels are added to every metric (for example the gateway's
	// name when several run in one process). Nil means none.
	ConstLabels prometheus.Labels
}

var (
	defaultDurationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}
	defaultGatewayBuckets  = []float64{0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1}
	defaultSizeBuckets     = prometheus.ExponentialBuckets(64, 4, 10) // 64 B .. 16 MiB
)

// Metrics records Prometheus metrics about the requests a Gateway serves,
// its upstream attempts, its backends' targets, its circuit breakers, rate
// limits, authentication failures and aggregation calls. Build it once with
// [NewMetrics], or with [NewOTelMetrics] for OpenTelemetry instruments of
// the same names; all methods are safe for concurrent use.
//
// Every label value comes from configuration (route, backend, target,
// breaker and aggregation call names) or from a small fixed set (methods,
// status classes, results, reasons); never from a request's path, query or
// subject, so the number of series does not grow with traffic.
//
// The series, their labels and where each comes from:
//
//	http_server_request_duration_seconds   histogram  http_route, http_request_method, http_response_status_class
//	http_server_request_body_size_bytes    histogram  same labels (declared Content-Length; chunked bodies are not observed)
//	http_server_response_body_size_bytes   histogram  same labels
//	http_server_active_requests            gauge      (none)
//	pylon_gateway_duration_seconds         histogram  http_route
//	pylon_upstream_duration_seconds        histogram  http_route, backend
//	pylon_upstream_retries_total           counter    backend
//	pylon_upstream_attempts_total          counter    backend, target, result   (Transport)
//	pylon_target_healthy                   gauge      backend, target           (WatchBackends)
//	pylon_target_ejections_total           counter    backend, target           (WatchBackends)
//	pylon_target_in_flight_requests        gauge      backend, target           (WatchBackends)
//	pylon_breaker_state                    gauge      breaker, state            (WatchBreaker)
//	pylon_breaker_transitions_total        counter    breaker, from, to         (WatchBreaker)
//	pylon_limit_in_flight, _queued, _limit gauge      limit                     (WatchLimit)
//	pylon_limit_admitted_total, _waited_total, _shed_total, _critical_shed_total
//	                                       counter    limit                     (WatchLimit)
//	pylon_ratelimit_decisions_total        counter    http_route, result
//	pylon_auth_failures_total              counter    http_route, reason
//	pylon_aggregate_calls_total            counter    http_route, call, outcome (RequestInfo.Calls)
//	pylon_cache_requests_total             counter    http_route, result        (RequestInfo.Cache)
//	rpc_server_call_duration_seconds       histogram  http_route, rpc_system_name, rpc_response_status_code (gRPC and gRPC-Web calls)
//
// rpc_server_call_duration_seconds follows OpenTelemetry's rpc.server.call.duration;
// rpc.method, which a client chooses, is on the server span (Tracer), not
// a label. rpc_response_status_code is the call's gRPC status name ("OK",
// "UNAVAILABLE"), the upstream's or the gateway's own.
//
// The request count is the _count series of
// http_server_request_duration_seconds, as in OpenTelemetry. With
// MetricsOptions.StatusCodes the status label is http_response_status_code.
type Metrics struct {
	opts     MetricsOptions
	gatherer prometheus.Gatherer

	duration histVec
	reqSize  histVec
	respSize histVec
	inflight atomic.Int64 // read by http_server_active_requests
	gateway  histVec
	upstream histVec
	retries  counterVec
	attempts counterVec
	rlimit   counterVec
	auth     counterVec
	aggCalls counterVec
	cacheReq counterVec
	rpc      histVec
	brState  gaugeVec
	brTrans  counterVec
	targets  *targetCollector
	split    counterVec
	mirrors  *mirrorCollector
	limits   *limitCollector

	series   cache[seriesKey, *series]
	routes   cache[routeKey, *routeSeries]
	authC    cache[routeKey, counter]
	rlimitC  cache[routeKey, counter]
	splitC   cache[routeKey, counter]
	attemptC cache[attemptKey, counter]
	rpcC     cache[routeKey, observer]
	aggC     cache[attemptKey, counter] // route, call, outcome
	cacheC   cache[routeKey, counter]

	brMu sync.Mutex // serializes breaker state changes
}

// NewMetrics creates the metrics and registers them with reg. A nil reg
// means prometheus.DefaultRegisterer. It fails, wrapping [ErrRegister], when
// a metric cannot be registered (for example when reg already holds one of
// the same name), and with [ErrNilRegistry] for a nil pointer such as a
// (*prometheus.Registry)(nil).
func NewMetrics(reg prometheus.Registerer, opts MetricsOptions) (*Metrics, error) {
	if reg == nil {
		reg = prometheus.DefaultRegisterer
	}
	if v := reflect.ValueOf(reg); v.Kind() == reflect.Pointer && v.IsNil() {
		return nil, ErrNilRegistry
	}
	m := &Metrics{opts: opts}
	if g, ok := reg.(prometheus.Gatherer); ok {
		m.gatherer = g
	} else {
		m.gatherer = prometheus.DefaultGatherer
	}
	durB := orDefault(opts.DurationBuckets, defaultDurationBuckets)
	gwB := orDefault(opts.GatewayBuckets, defaultGatewayBuckets)
	sizeB := orDefault(opts.SizeBuckets, defaultSizeBuckets)
	cl := opts.ConstLabels
	status := "http_response_status_class"
	if opts.StatusCodes {
		status = "http_response_status_code"
	}
	reqLabels := []string{"http_route", "http_request_method", status}

	hist := func(name, help string, b []float64, labels ...string) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: b, ConstLabels: cl}, labels)
	}
	newCounter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: cl}, labels)
	}
	duration := hist("http_server_request_duration_seconds",
		"Duration of requests served by the gateway, from arrival to the end of the response.", durB, reqLabels...)
	reqSize := hist("http_server_request_body_size_bytes",
		"Declared size (Content-Length) of request bodies.", sizeB, reqLabels...)
	respSize := hist("http_server_response_body_size_bytes",
		"Size of response bodies written to clients.", sizeB, reqLabels...)
	// An atomic add per request instead of a Gauge's compare-and-swap
	// loop on a float, which retries when cores serve requests at once.
	active := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "http_server_active_requests",
		Help: "Requests being served.", ConstLabels: cl}, func() float64 { return float64(m.inflight.Load()) })
	gateway := hist("pylon_gateway_duration_seconds",
		"Time the gateway spent on a request up to the response header, minus the time spent waiting for upstreams.", gwB, "http_route")
	upstream := hist("pylon_upstream_duration_seconds",
		"Time spent waiting for upstream response headers, summed over a request's attempts.", durB, "http_route", "backend")
	retries := newCounter("pylon_upstream_retries_total", "Upstream attempts beyond the first.", "backend")
	attempts := newCounter("pylon_upstream_attempts_total",
		"Upstream attempts by target and result (status class, error or canceled).", "backend", "target", "result")
	rlimit := newCounter("pylon_ratelimit_decisions_total", "Rate limiter decisions.", "http_route", "result")
	auth := newCounter("pylon_auth_failures_total", "Requests refused by authentication or authorization.", "http_route", "reason")
	aggCalls := newCounter("pylon_aggregate_calls_total", "Aggregation calls by outcome.", "http_route", "call", "outcome")
	cacheReq := newCounter("pylon_cache_requests_total", "Requests by response cache result (RequestInfo.Cache).", "http_route", "result")
	rpc := hist("rpc_server_call_duration_seconds",
		"Duration of gRPC calls served by the gateway, by gRPC status.", durB, "http_route", "rpc_system_name", "rpc_response_status_code")
	brState := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pylon_breaker_state",
		Help: "1 for the circuit breaker's current state, 0 for the others.", ConstLabels: cl}, []string{"breaker", "state"})
	brTrans := newCounter("pylon_breaker_transitions_total", "Circuit breaker state changes.", "breaker", "from", "to")
	split := newCounter("pylon_split_requests_total", "Requests served by each side of a traffic split (RequestInfo.Split).", "http_route", "side")
	m.mirrors = newMirrorCollector(cl)
	m.targets = newTargetCollector(cl)
	m.limits = newLimitCollector(cl)

	for _, c := range []prometheus.Collector{duration, reqSize, respSize, active, gateway,
		upstream, retries, attempts, rlimit, auth, aggCalls, cacheReq, rpc, brState, brTrans, m.targets, split, m.mirrors, m.limits} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrRegister, err)
		}
	}

	m.duration, m.reqSize, m.respSize = promHist{duration}, promHist{reqSize}, promHist{respSize}
	m.gateway, m.upstream, m.rpc = promHist{gateway}, promHist{upstream}, promHist{rpc}
	m.retries, m.attempts, m.rlimit, m.auth = promCounter{retries}, promCounter{attempts}, promCounter{rlimit}, promCounter{auth}
	m.aggCalls, m.cacheReq, m.brTrans, m.split = promCounter{aggCalls}, promCounter{cacheReq}, promCounter{brTrans}, promCounter{split}
	m.brState = promGauge{brState}
	m.init()
	return m, nil
}

// init sets up the series caches over the vectors, whichever backs them.
func (m *Metrics) init() {
	m.targets.prune = m.pruneAttempts
	m.series.make = m.newSeries
	m.routes.make = m.newRouteSeries
	m.authC.make = func(k routeKey) counter { return m.auth.with(k.route, k.other) }
	m.rpcC.make = func(k routeKey) observer { return m.rpc.with(k.route, "grpc", k.other) }
	m.rlimitC.make = func(k routeKey) counter { return m.rlimit.with(k.route, k.other) }
	m.splitC.make = func(k routeKey) counter { return m.split.with(k.route, k.other) }
	m.aggC.make = func(k attemptKey) counter {
		return m.aggCalls.with(k.backend, k.target, k.result)
	}
	m.cacheC.make = func(k routeKey) counter { return m.cacheReq.with(k.route, k.other) }
	m.attemptC.make = func(k attemptKey) counter {
		return m.attempts.with(k.backend, k.target, k.result)
	}
}

// Handler returns the handler to mount on /metrics: promhttp over the
// registry given to NewMetrics when it is also a prometheus.Gatherer (a
// *prometheus.Registry is), else over prometheus.DefaultGatherer. For
// Metrics from NewOTelMetrics it answers 404: the MeterProvider's readers
// export the measurements.
func (m *Metrics) Handler() http.Handler {
	if m.gatherer == nil {
		return http.NotFoundHandler()
	}
	return promhttp.HandlerFor(m.gatherer, promhttp.HandlerOpts{})
}

func orDefault(b, def []float64) []float64 {
	if len(b) == 0 {
		return def
	}
	return b
}

// seriesKey names one set of request series.
type seriesKey struct {
	route  string
	method string
	status int // the status code, or its class × 100 without StatusCodes
}

type series struct {
	duration, reqSize, respSize observer
}

func (m *Metrics) newSeries(k seriesKey) *series {
	var st string
	if m.opts.StatusCodes {
		st = strconv.Itoa(k.status)
	} else {
		st = statusClass(k.status)
	}
	return &series{
		duration: m.duration.with(k.route, k.method, st),
		reqSize:  m.reqSize.with(k.route, k.method, st),
		respSize: m.respSize.with(k.route, k.method, st),
	}
}

// routeKey names the series of one route and one other value (the
// backend, or an auth failure reason).
type routeKey struct {
	route string
	other string
}

type routeSeries struct {
	gateway  observer
	upstream observer // nil without a backend
	retries  counter  // nil without a backend
}

func (m *Metrics) newRouteSeries(k routeKey) *routeSeries {
	rs := &routeSeries{
		gateway: m.gateway.with(k.route),
	}
	if k.other != "" {
		rs.upstream = m.upstream.with(k.route, k.other)
		rs.retries = m.retries.with(k.other)
		rs.retries.Add(0) // an OpenTelemetry counter appears at its first Add
	}
	return rs
}

type attemptKey struct {
	backend, target, result string
}

// statusClass returns "1xx" to "5xx", or "other" for codes outside
// 100..599.
func statusClass(code int) string {
	switch code / 100 {
	case 1:
		return "1xx"
	case 2:
		return "2xx"
	case 3:
		return "3xx"
	case 4:
		return "4xx"
	case 5:
		return "5xx"
	}
	return LabelOther
}

// method returns the method as a label value: the standard methods as they
// are, any other as "_OTHER" (OpenTelemetry's convention), so that a client
// inventing methods cannot add series.
func method(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodTrace, http.MethodConnect:
		return m
	}
	return "_OTHER"
}

// spanMethod is the method part of an HTTP span's name: a known method, or
// "HTTP" for any other (OpenTelemetry HTTP conventions), so that a client
// cannot make span names without bound.
func spanMethod(m string) string {
	if m = method(m); m == "_OTHER" {
		return "HTTP"
	}
	return m
}

// maxCacheEntries bounds each series cache. Label values come from
// configuration, so real gateways stay far below it; past it, values are
// still recorded but looked up in the vector each time.
const maxCacheEntries = 1 << 14

// cache maps a label-value key to its curried series. Reads are a plain map
// lookup of an immutable map (no lock, no allocation); a miss copies the
// map under a lock. It suits keys that are few and fixed, such as route
// names.
type cache[K comparable, V any] struct {
	m    atomic.Pointer[map[K]V]
	mu   sync.Mutex
	make func(K) V
}

func (c *cache[K, V]) get(k K) V {
	if m := c.m.Load(); m != nil {
		if v, ok := (*m)[k]; ok {
			return v
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.m.Load()
	var n int
	if old != nil {
		if v, ok := (*old)[k]; ok {
			return v
		}
		n = len(*old)
	}
	v := c.make(k)
	if n >= maxCacheEntries {
		return v
	}
	nm := make(map[K]V, n+1)
	if old != nil {
		for kk, vv := range *old {
			nm[kk] = vv
		}
	}
	nm[k] = v
	c.m.Store(&nm)
	return v
}
