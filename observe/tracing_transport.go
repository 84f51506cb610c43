package observe

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strconv"

	"github.com/pylon-gateway/pylon"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// Transport returns a RoundTripper that makes a client span for each round
// trip through rt, the child of the span in the request's context, and
// injects the span's trace context (W3C traceparent and tracestate,
// replacing any the client sent) into a copy of the request's header.
// Wire it as a Backend's transport, so each upstream attempt, retries
// included, gets its own span:
//
//	opts.Transport = tracer.Transport(pylon.NewTransport(opts))
//
// The span is named after the method, carries the HTTP client semantic
// convention attributes (url.full without its query), the backend and
// target from pylon.RequestInfo, and ends when the response headers
// arrive (the time RequestInfo.UpstreamDuration measures). Status 400 and
// above, and transport errors, mark it as an error.
//
// A request whose context holds no valid span (a Backend's active health
// checks) is sent as it is, untraced.
func (t *Tracer) Transport(rt http.RoundTripper) http.RoundTripper {
	if rt == nil {
		rt = http.DefaultTransport
	}
	return &tracingTransport{t: t, rt: rt}
}

type tracingTransport struct {
	t  *Tracer
	rt http.RoundTripper
}

func (tt *tracingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return tt.rt.RoundTrip(req)
	}
	u := *req.URL
	u.RawQuery, u.ForceQuery, u.Fragment, u.User = "", false, "", nil
	host, port := u.Hostname(), u.Port()
	attrs := []attribute.KeyValue{
		semconv.HTTPRequestMethodKey.String(method(req.Method)),
		semconv.URLFull(u.String()),
		semconv.ServerAddress(host),
	}
	if p, err := strconv.Atoi(port); err == nil {
		attrs = append(attrs, semconv.ServerPort(p))
	} else if u.Scheme == "https" {
		attrs = append(attrs, semconv.ServerPort(443))
	} else {
		attrs = append(attrs, semconv.ServerPort(80))
	}
	if info := pylon.Info(ctx); info != nil && info.Backend != "" {
		attrs = append(attrs, AttrBackend.String(info.Backend), AttrTarget.String(info.Target))
	}
	ctx, span := tt.t.tracer.Start(ctx, spanMethod(req.Method), trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
	defer span.End()

	out := req.WithContext(ctx)
	out.Header = req.Header.Clone()
	if out.Header == nil {
		out.Header = make(http.Header)
	}
	tt.t.prop.Inject(ctx, propagation.HeaderCarrier(out.Header))

	res, err := tt.rt.RoundTrip(out)
	if err != nil {
		span.SetAttributes(semconv.ErrorType(err))
		span.SetStatus(codes.Error, errorKind(err))
		return nil, err
	}
	span.SetAttributes(semconv.HTTPResponseStatusCode(res.StatusCode))
	if res.StatusCode >= 400 {
		span.SetAttributes(semconv.ErrorTypeKey.String(strconv.Itoa(res.StatusCode)))
		span.SetStatus(codes.Error, "")
	}
	return res, nil
}

// errorKind describes a transport error without its addresses.
func errorKind(err error) string {
	var ne net.Error
	var oe *net.OpError
	switch {
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.As(err, &oe) && oe.Op == "dial":
		return "connect failed"
	}
	return "round trip failed"
}

// CloseIdleConnections closes the idle connections of the wrapped
// transport, when it has a CloseIdleConnections method, so that
// Backend.Close reaches them through the wrapper.
func (tt *tracingTransport) CloseIdleConnections() {
	if c, ok := tt.rt.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// CloseIdleConnectionsTo closes the wrapped transport's idle connections to
// u: only u's when it has a CloseIdleConnectionsTo method, else all of them
// when it has CloseIdleConnections (a Backend calls it for a drained
// target).
func (tt *tracingTransport) CloseIdleConnectionsTo(u *url.URL) {
	switch c := tt.rt.(type) {
	case interface{ CloseIdleConnectionsTo(*url.URL) }:
		c.CloseIdleConnectionsTo(u)
	case interface{ CloseIdleConnections() }:
		c.CloseIdleConnections()
	}
}
