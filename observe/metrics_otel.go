package observe

import (
	"context"
	"fmt"
	"strconv"
	"sync"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// meterName is the instrumentation scope of the instruments NewOTelMetrics
// makes.
const meterName = "github.com/pylon-gateway/pylon/observe"

// otelKeys maps the Prometheus label names that are not also the
// OpenTelemetry attribute keys; the others (backend, target, result,
// breaker, state, from, to, reason, call, outcome, side, mirror,
// limit) are the same.
var otelKeys = map[string]string{
	"http_route":                 "http.route",
	"http_request_method":        "http.request.method",
	"http_response_status_class": "http.response.status_class",
	"http_response_status_code":  "http.response.status_code",
	"rpc_system_name":            "rpc.system.name",
	"rpc_response_status_code":   "rpc.response.status_code",
}

// NewOTelMetrics creates the metrics of [Metrics] as OpenTelemetry
// instruments of a meter from mp (scope
// "github.com/pylon-gateway/pylon/observe"), recorded by the same
// Middleware, Transport and Watch methods. A nil mp means
// otel.GetMeterProvider(). It fails, wrapping [ErrRegister], when an
// instrument or its callback cannot be created.
//
// Instruments carry OpenTelemetry names, from which an OpenTelemetry
// Prometheus exporter derives exactly the Prometheus names of NewMetrics:
// dots become underscores, the unit adds its suffix ("s" _seconds, "By"
// _bytes; a unit in braces such as "{request}" adds none), and counters
// add _total. So http.server.request.duration (histogram, "s") is
// http_server_request_duration_seconds, pylon.upstream.retries (counter)
// is pylon_upstream_retries_total, pylon.breaker.state (gauge) is
// pylon_breaker_state. Attribute keys are the label names with dots
// (http.route, http.request.method, http.response.status_class or, with
// MetricsOptions.StatusCodes, the integer http.response.status_code,
// rpc.system.name, rpc.response.status_code); the others are the same.
// The HTTP and RPC instruments are OpenTelemetry's semantic-convention
// ones; MetricsOptions' buckets become explicit bucket boundaries and
// ConstLabels attributes of every measurement.
//
// What differs from NewMetrics: Handler serves 404, since the
// MeterProvider's readers export the measurements; a histogram series
// appears with its first measurement (WatchGateway still creates the
// retry counters at zero and watches the backends); counters are never
// deleted, so the attempt series of a target removed from a backend stay
// (the SDK's cardinality limit bounds them). http.server.active_requests
// is an asynchronous up-down counter, and the target, mirror, limit and breaker
// state instruments are asynchronous too, read at each collection.
func NewOTelMetrics(mp metric.MeterProvider, opts MetricsOptions) (*Metrics, error) {
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	meter := mp.Meter(meterName)
	m := &Metrics{opts: opts}
	var base []attribute.KeyValue
	for k, v := range opts.ConstLabels {
		base = append(base, attribute.String(k, v))
	}
	var errs []error
	check := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	hist := func(name, unit, help string, b []float64, labels ...string) histVec {
		h, err := meter.Float64Histogram(name, metric.WithUnit(unit), metric.WithDescription(help),
			metric.WithExplicitBucketBoundaries(b...))
		check(err)
		return &otelHist{h: h, attrs: newOTelAttrs(base, labels)}
	}
	newCounter := func(name, unit, help string, labels ...string) counterVec {
		c, err := meter.Int64Counter(name, metric.WithUnit(unit), metric.WithDescription(help))
		check(err)
		return &otelCounter{c: c, attrs: newOTelAttrs(base, labels)}
	}
	durB := orDefault(opts.DurationBuckets, defaultDurationBuckets)
	gwB := orDefault(opts.GatewayBuckets, defaultGatewayBuckets)
	sizeB := orDefault(opts.SizeBuckets, defaultSizeBuckets)
	status := "http_response_status_class"
	if opts.StatusCodes {
		status = "http_response_status_code"
	}
	reqLabels := []string{"http_route", "http_request_method", status}

	m.duration = hist("http.server.request.duration", "s",
		"Duration of requests served by the gateway, from arrival to the end of the response.", durB, reqLabels...)
	m.reqSize = hist("http.server.request.body.size", "By",
		"Declared size (Content-Length) of request bodies.", sizeB, reqLabels...)
	m.respSize = hist("http.server.response.body.size", "By",
		"Size of response bodies written to clients.", sizeB, reqLabels...)
	m.gateway = hist("pylon.gateway.duration", "s",
		"Time the gateway spent on a request up to the response header, minus the time spent waiting for upstreams.", gwB, "http_route")
	m.upstream = hist("pylon.upstream.duration", "s",
		"Time spent waiting for upstream response headers, summed over a request's attempts.", durB, "http_route", "backend")
	m.retries = newCounter("pylon.upstream.retries", "{retry}", "Upstream attempts beyond the first.", "backend")
	m.attempts = newCounter("pylon.upstream.attempts", "{attempt}",
		"Upstream attempts by target and result (status class, error or canceled).", "backend", "target", "result")
	m.rlimit = newCounter("pylon.ratelimit.decisions", "{decision}", "Rate limiter decisions.", "http_route", "result")
	m.auth = newCounter("pylon.auth.failures", "{request}", "Requests refused by authentication or authorization.", "http_route", "reason")
	m.aggCalls = newCounter("pylon.aggregate.calls", "{call}", "Aggregation calls by outcome.", "http_route", "call", "outcome")
	m.cacheReq = newCounter("pylon.cache.requests", "{request}", "Requests by response cache result (RequestInfo.Cache).", "http_route", "result")
	m.rpc = hist("rpc.server.call.duration", "s",
		"Duration of gRPC calls served by the gateway, by gRPC status.", durB, "http_route", "rpc_system_name", "rpc_response_status_code")
	m.brTrans = newCounter("pylon.breaker.transitions", "{transition}", "Circuit breaker state changes.", "breaker", "from", "to")
	m.split = newCounter("pylon.split.requests", "{request}", "Requests served by each side of a traffic split (RequestInfo.Split).", "http_route", "side")
	brState := &otelGauge{attrs: newOTelAttrs(base, []string{"breaker", "state"}), v: map[attribute.Distinct]otelPoint{}}
	m.brState = brState
	m.targets = &targetCollector{}
	m.mirrors = &mirrorCollector{}
	m.limits = &limitCollector{}

	active, err := meter.Int64ObservableUpDownCounter("http.server.active_requests",
		metric.WithUnit("{request}"), metric.WithDescription("Requests being served."))
	check(err)
	brStateG, err := meter.Float64ObservableGauge("pylon.breaker.state",
		metric.WithUnit("1"), metric.WithDescription("1 for the circuit breaker's current state, 0 for the others."))
	check(err)
	healthy, err := meter.Int64ObservableGauge("pylon.target.healthy", metric.WithUnit("1"),
		metric.WithDescription("1 when the upstream target is eligible for requests, 0 when health checks or outlier detection took it out."))
	check(err)
	ejections, err := meter.Int64ObservableCounter("pylon.target.ejections", metric.WithUnit("{ejection}"),
		metric.WithDescription("Times outlier detection ejected the upstream target."))
	check(err)
	tInflight, err := meter.Int64ObservableGauge("pylon.target.in_flight_requests", metric.WithUnit("{request}"),
		metric.WithDescription("Requests outstanding on the upstream target."))
	check(err)
	mirrored, err := meter.Int64ObservableCounter("pylon.mirror.requests", metric.WithUnit("{request}"),
		metric.WithDescription("Sampled requests of each traffic mirror by result: mirrored, dropped (shadow saturated), too_large (body over the limit) or incomplete (body not read whole by the primary)."))
	check(err)
	limitObs := make([]metric.Int64Observable, len(limitSeriesList))
	for i, ls := range limitSeriesList {
		unit, desc := metric.WithUnit("{request}"), metric.WithDescription(ls.help)
		if ls.counter {
			limitObs[i], err = meter.Int64ObservableCounter(ls.otel, unit, desc)
		} else {
			limitObs[i], err = meter.Int64ObservableGauge(ls.otel, unit, desc)
		}
		check(err)
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w: %w", ErrRegister, errs[0])
	}
	baseSet := metric.WithAttributeSet(attribute.NewSet(base...))
	targetAttrs := newOTelAttrs(base, []string{"backend", "target"})
	mirrorAttrs := newOTelAttrs(base, []string{"mirror", "result"})
	limitAttrs := newOTelAttrs(base, []string{"limit"})
	_, err = meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(active, m.inflight.Load(), baseSet)
		brState.observe(func(v float64, opt metric.MeasurementOption) { o.ObserveFloat64(brStateG, v, opt) })
		m.targets.each(func(backend, target string, ok bool, ej uint64, inflight int) {
			opt := targetAttrs.option(backend, target)
			h := int64(0)
			if ok {
				h = 1
			}
			o.ObserveInt64(healthy, h, opt)
			o.ObserveInt64(ejections, int64(ej), opt)
			o.ObserveInt64(tInflight, int64(inflight), opt)
		})
		m.mirrors.each(func(name, result string, n uint64) {
			o.ObserveInt64(mirrored, int64(n), mirrorAttrs.option(name, result))
		})
		m.limits.each(func(name string, i int, v float64) {
			o.ObserveInt64(limitObs[i], int64(v), limitAttrs.option(name))
		})
		return nil
	}, append([]metric.Observable{active, brStateG, healthy, ejections, tInflight, mirrored}, limitObsAny(limitObs)...)...)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRegister, err)
	}
	m.init()
	return m, nil
}

// limitObsAny returns obs as metric.Observables, for RegisterCallback.
func limitObsAny(obs []metric.Int64Observable) []metric.Observable {
	out := make([]metric.Observable, len(obs))
	for i, o := range obs {
		out[i] = o
	}
	return out
}

// otelAttrs turns label values, in the order of the labels, into a
// measurement option carrying them as attributes, besides the constant
// ones.
type otelAttrs struct {
	base []attribute.KeyValue
	keys []string
}

func newOTelAttrs(base []attribute.KeyValue, labels []string) otelAttrs {
	keys := make([]string, len(labels))
	for i, l := range labels {
		keys[i] = l
		if k, ok := otelKeys[l]; ok {
			keys[i] = k
		}
	}
	return otelAttrs{base: base, keys: keys}
}

func (a otelAttrs) set(values ...string) attribute.Set {
	kvs := make([]attribute.KeyValue, 0, len(a.base)+len(a.keys))
	kvs = append(kvs, a.base...)
	for i, k := range a.keys {
		if k == "http.response.status_code" {
			if n, err := strconv.Atoi(values[i]); err == nil {
				kvs = append(kvs, attribute.Int(k, n))
				continue
			}
		}
		kvs = append(kvs, attribute.String(k, values[i]))
	}
	return attribute.NewSet(kvs...)
}

func (a otelAttrs) option(values ...string) metric.MeasurementOption {
	return metric.WithAttributeSet(a.set(values...))
}

// otelHist is a histVec over an OpenTelemetry histogram. Its series are
// cached by Metrics, so that the attribute set is made once per series.
type otelHist struct {
	h     metric.Float64Histogram
	attrs otelAttrs
}

func (v *otelHist) with(values ...string) observer {
	return otelObserver{h: v.h, opt: v.attrs.option(values...)}
}

type otelObserver struct {
	h   metric.Float64Histogram
	opt metric.MeasurementOption
}

func (o otelObserver) Observe(v float64) { o.h.Record(context.Background(), v, o.opt) }

// otelCounter is a counterVec over an OpenTelemetry counter.
type otelCounter struct {
	c     metric.Int64Counter
	attrs otelAttrs
}

func (v *otelCounter) with(values ...string) counter {
	return otelCount{c: v.c, opt: v.attrs.option(values...)}
}

func (v *otelCounter) delete(...string) {}

type otelCount struct {
	c   metric.Int64Counter
	opt metric.MeasurementOption
}

func (c otelCount) Inc()          { c.c.Add(context.Background(), 1, c.opt) }
func (c otelCount) Add(v float64) { c.c.Add(context.Background(), int64(v), c.opt) }

// otelGauge is a gaugeVec whose values are kept here and reported by an
// asynchronous gauge, so that a series can be deleted.
type otelGauge struct {
	attrs otelAttrs
	mu    sync.Mutex
	v     map[attribute.Distinct]otelPoint
}

type otelPoint struct {
	opt metric.MeasurementOption
	v   float64
}

func (g *otelGauge) set(v float64, values ...string) {
	s := g.attrs.set(values...)
	k := s.Equivalent()
	g.mu.Lock()
	defer g.mu.Unlock()
	p, ok := g.v[k]
	if !ok {
		p.opt = metric.WithAttributeSet(s)
	}
	p.v = v
	g.v[k] = p
}

func (g *otelGauge) delete(values ...string) {
	s := g.attrs.set(values...)
	k := s.Equivalent()
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.v, k)
}

func (g *otelGauge) observe(f func(float64, metric.MeasurementOption)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, p := range g.v {
		f(p.v, p.opt)
	}
}
