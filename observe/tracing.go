package observe

import (
	"context"
	"net/http"
	"strconv"
	"strings"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/middleware"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// instrumentationName names the tracer Pylon asks the TracerProvider for.
const instrumentationName = "github.com/pylon-gateway/pylon/observe"

// Attribute keys Pylon adds to spans, beside the HTTP semantic conventions.
const (
	AttrBackend        = attribute.Key("pylon.backend")
	AttrTarget         = attribute.Key("pylon.target")
	AttrAttempts       = attribute.Key("pylon.upstream.attempts")
	AttrClientCanceled = attribute.Key("pylon.client_canceled")
	AttrRateLimited    = attribute.Key("pylon.rate_limited")
	AttrAuthFailure    = attribute.Key("pylon.auth_failure")
	AttrBreaker        = attribute.Key("pylon.breaker")
	AttrCache          = attribute.Key("pylon.cache")
	AttrAggregateCall  = attribute.Key("pylon.aggregate.call")
)

// TracingOptions configures [NewTracer]. Every field's zero value is a safe
// default.
type TracingOptions struct {
	// Propagator extracts the trace context from incoming requests and
	// injects it into upstream requests. Nil means W3C Trace Context
	// (traceparent, tracestate) and W3C Baggage.
	Propagator propagation.TextMapPropagator
}

// Tracer makes OpenTelemetry spans for a Gateway: a server span per request
// (Middleware), a client span per upstream attempt (Transport) and an
// internal span per aggregation call (StartCall). No exporter is set up
// here: spans go to the TracerProvider the program gives, and nowhere when
// it gives none.
type Tracer struct {
	tracer trace.Tracer
	prop   propagation.TextMapPropagator
}

// NewTracer returns a Tracer whose spans come from tp. A nil tp means
// otel.GetTracerProvider(), the global one.
func NewTracer(tp trace.TracerProvider, opts TracingOptions) *Tracer {
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	prop := opts.Propagator
	if prop == nil {
		prop = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	}
	return &Tracer{tracer: tp.Tracer(instrumentationName), prop: prop}
}

// Middleware is the middleware that makes a server span for each
// request, the child of the trace context the request carries (W3C
// traceparent and tracestate), and puts it in the request's context, where
// the Transport's client spans find their parent. Put it first in the
// Gateway's global chain.
//
// The span starts named after the method ("GET"), because the route is not
// known before routing; when the request is done it is renamed to the
// route's name, and gets http.route (the route's path pattern), the status
// code and what the gateway stages recorded in pylon.RequestInfo (backend,
// attempts, rate limiting, auth failure, breaker, cache). Responses with
// status 500 and above mark the span as an error; a client that went away
// is recorded as pylon.client_canceled, without a status code.
func (t *Tracer) Middleware(next http.Handler) http.Handler {
	return &tracingHandler{t: t, next: next}
}

type tracingHandler struct {
	t    *Tracer
	next http.Handler
}

func (h *tracingHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := h.t.prop.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	info := pylon.Info(ctx)
	if info == nil {
		info = new(pylon.RequestInfo)
		ctx = pylon.NewContext(ctx, info)
	}
	scheme := info.Scheme // the Gateway's decision, from its one trust setting
	if scheme == "" {
		scheme = "http"
		if r.TLS != nil {
			scheme = "https"
		}
	}
	attrs := []attribute.KeyValue{
		semconv.HTTPRequestMethodKey.String(method(r.Method)),
		semconv.URLPath(r.URL.Path),
		semconv.URLScheme(scheme),
		semconv.ServerAddress(r.Host),
		semconv.NetworkProtocolVersion(protoVersion(r)),
	}
	if ua := r.UserAgent(); ua != "" {
		attrs = append(attrs, semconv.UserAgentOriginal(ua))
	}
	if info.ClientIP.IsValid() {
		attrs = append(attrs, semconv.ClientAddress(info.ClientIP.String()))
	}
	ctx, span := h.t.tracer.Start(ctx, spanMethod(r.Method), trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(attrs...))
	ww := middleware.WrapWriter(w)
	completed := false
	defer func() {
		h.t.finishServer(span, r, info, ww, completed)
		span.End()
	}()
	h.next.ServeHTTP(ww, r.WithContext(ctx))
	completed = true
}

func (t *Tracer) finishServer(span trace.Span, r *http.Request, info *pylon.RequestInfo, ww middleware.ResponseWriter, completed bool) {
	if info.Route != "" {
		span.SetName(info.Route)
		span.SetAttributes(semconv.HTTPRoute(routeTemplate(info.Pattern)))
	}
	status := ww.Status()
	switch {
	case !completed:
		if !ww.WroteHeader() {
			status = http.StatusInternalServerError
		}
	case info.ClientCanceled || (!ww.WroteHeader() && !ww.Hijacked() && r.Context().Err() == context.Canceled):
		status = 0
		span.SetAttributes(AttrClientCanceled.Bool(true))
	case ww.Hijacked() && !ww.WroteHeader():
		status = http.StatusSwitchingProtocols
	case status == 0:
		status = http.StatusOK
	}
	if status != 0 {
		span.SetAttributes(semconv.HTTPResponseStatusCode(status))
	}
	if status >= 500 {
		span.SetAttributes(semconv.ErrorTypeKey.String(strconv.Itoa(status)))
		span.SetStatus(codes.Error, "")
	}
	if info.GRPCService != "" {
		finishRPC(span, info)
	}
	if info.Backend != "" {
		span.SetAttributes(AttrBackend.String(info.Backend), AttrAttempts.Int(info.Attempts))
	}
	if info.RateLimit.Decided {
		span.SetAttributes(AttrRateLimited.Bool(!info.RateLimit.Allowed))
	}
	if info.AuthFailure != "" {
		span.SetAttributes(AttrAuthFailure.String(info.AuthFailure))
	}
	if info.Breaker != "" {
		span.SetAttributes(AttrBreaker.String(info.Breaker))
	}
	if info.Cache != "" {
		span.SetAttributes(AttrCache.String(info.Cache))
	}
}

// StartCall starts an internal span for one call of an aggregation, named
// "aggregate CALL", the child of the span in ctx; the upstream attempts the
// call makes through a Backend with the Tracer's Transport become its
// children. end ends the span, marking it as an error when err is not nil.
func (t *Tracer) StartCall(ctx context.Context, call string) (context.Context, func(err error)) {
	ctx, span := t.tracer.Start(ctx, "aggregate "+call, trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(AttrAggregateCall.String(call)))
	return ctx, func(err error) {
		if err != nil {
			span.SetStatus(codes.Error, err.Error())
			span.SetAttributes(semconv.ErrorType(err))
		}
		span.End()
	}
}

// routeTemplate returns the path part of a ServeMux pattern: "GET
// api.example.com/orders/{id}" gives "/orders/{id}".
func routeTemplate(pattern string) string {
	if i := strings.IndexByte(pattern, ' '); i >= 0 {
		pattern = strings.TrimLeft(pattern[i+1:], " \t")
	}
	if i := strings.IndexByte(pattern, '/'); i > 0 {
		pattern = pattern[i:]
	}
	return pattern
}

func protoVersion(r *http.Request) string {
	switch {
	case r.ProtoMajor == 2:
		return "2"
	case r.ProtoMajor == 3:
		return "3"
	case r.ProtoMinor == 0:
		return "1.0"
	}
	return "1.1"
}

// finishRPC names a gRPC call's server span and adds the OpenTelemetry RPC
// attributes: rpc.system.name, rpc.method ("package.Service/Method", also
// the span's name) and rpc.response.status_code; a server-side failure
// status (UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL,
// UNAVAILABLE, DATA_LOSS) marks the span as an error. A method no route
// serves, or that the upstream answered UNIMPLEMENTED, is one the client
// made up as far as the gateway knows: rpc.method is "_OTHER" with the name
// in rpc.method_original, and the span is named "grpc", as the conventions
// say, so that span names stay a bounded set.
func finishRPC(span trace.Span, info *pylon.RequestInfo) {
	full := info.GRPCService + "/" + info.GRPCMethod
	if info.Route == "" || info.HasGRPCStatus() && pylon.GRPCCode(info.GRPCStatus) == pylon.GRPCUnimplemented {
		span.SetName("grpc")
		span.SetAttributes(semconv.RPCSystemNameGRPC, semconv.RPCMethod("_OTHER"), semconv.RPCMethodOriginal(full))
	} else {
		span.SetName(full)
		span.SetAttributes(semconv.RPCSystemNameGRPC, semconv.RPCMethod(full))
	}
	if !info.HasGRPCStatus() {
		return
	}
	code := pylon.GRPCCode(info.GRPCStatus)
	span.SetAttributes(semconv.RPCResponseStatusCode(code.String()))
	switch code {
	case pylon.GRPCUnknown, pylon.GRPCDeadlineExceeded, pylon.GRPCUnimplemented, pylon.GRPCInternal, pylon.GRPCUnavailable, pylon.GRPCDataLoss:
		span.SetAttributes(semconv.ErrorTypeKey.String(code.String()))
		span.SetStatus(codes.Error, "")
	}
}
