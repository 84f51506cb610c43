package observe_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/observe"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

const (
	remoteTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	remoteSpan  = "00f067aa0ba902b7"
	traceparent = "00-" + remoteTrace + "-" + remoteSpan + "-01"
)

type tracingFixture struct {
	exp    *tracetest.InMemoryExporter
	tracer *observe.Tracer
	gw     *pylon.Gateway
	srv    *httptest.Server

	mu   sync.Mutex
	seen []trace.SpanContext // the trace context each upstream request carried
}

func newTracingFixture(t *testing.T, targets func(up string) []string) *tracingFixture {
	t.Helper()
	f := &tracingFixture{exp: tracetest.NewInMemoryExporter()}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(f.exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	f.tracer = observe.NewTracer(tp, observe.TracingOptions{})

	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := propagation.TraceContext{}.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		f.mu.Lock()
		f.seen = append(f.seen, trace.SpanContextFromContext(ctx))
		f.mu.Unlock()
		if r.URL.Path == "/fail" {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(up.Close)

	opts := pylon.BackendOptions{Targets: targets(up.URL), Retries: 1, RetryBackoff: -1}
	tr := pylon.NewTransport(opts)
	t.Cleanup(tr.CloseIdleConnections)
	opts.Transport = f.tracer.Transport(tr)
	b, err := pylon.NewBackend("orders", opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })

	f.gw = pylon.New(pylon.Options{})
	f.gw.Use(f.tracer.Middleware)
	f.gw.Route("GET /orders/{id}").Name("order").To(b)
	f.gw.Route("GET /fail").Name("fail").To(b)
	f.srv = httptest.NewServer(f.gw)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *tracingFixture) get(t *testing.T, path string, hdr http.Header) int {
	t.Helper()
	req, _ := http.NewRequest("GET", f.srv.URL+path, nil)
	for k, v := range hdr {
		req.Header[k] = v
	}
	res, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	_ = res.Body.Close()
	return res.StatusCode
}

func spansOf(spans tracetest.SpanStubs, kind trace.SpanKind) []tracetest.SpanStub {
	var out []tracetest.SpanStub
	for _, s := range spans {
		if s.SpanKind == kind {
			out = append(out, s)
		}
	}
	return out
}

func attr(s tracetest.SpanStub, key attribute.Key) attribute.Value {
	for _, a := range s.Attributes {
		if a.Key == key {
			return a.Value
		}
	}
	return attribute.Value{}
}

func TestTracingPropagatesAcrossUpstream(t *testing.T) {
	f := newTracingFixture(t, func(up string) []string { return []string{up} })
	if code := f.get(t, "/orders/42", http.Header{"Traceparent": {traceparent}}); code != 200 {
		t.Fatalf("status %d", code)
	}
	spans := f.exp.GetSpans()
	servers, clients := spansOf(spans, trace.SpanKindServer), spansOf(spans, trace.SpanKindClient)
	if len(servers) != 1 || len(clients) != 1 {
		t.Fatalf("got %d server and %d client spans, want 1 and 1", len(servers), len(clients))
	}
	srv, cli := servers[0], clients[0]

	if got := srv.SpanContext.TraceID().String(); got != remoteTrace {
		t.Errorf("server span trace ID %s, want the client's %s", got, remoteTrace)
	}
	if got := srv.Parent.SpanID().String(); got != remoteSpan || !srv.Parent.IsRemote() {
		t.Errorf("server span parent %s (remote %v), want remote %s", got, srv.Parent.IsRemote(), remoteSpan)
	}
	if cli.Parent.SpanID() != srv.SpanContext.SpanID() || cli.SpanContext.TraceID() != srv.SpanContext.TraceID() {
		t.Errorf("client span is not the server span's child")
	}
	f.mu.Lock()
	seen := f.seen
	f.mu.Unlock()
	if len(seen) != 1 || seen[0].TraceID().String() != remoteTrace || seen[0].SpanID() != cli.SpanContext.SpanID() {
		t.Errorf("upstream saw trace context %v, want trace %s with the client span %s as parent",
			seen, remoteTrace, cli.SpanContext.SpanID())
	}

	for _, tc := range []struct {
		span tracetest.SpanStub
		key  attribute.Key
		want attribute.Value
	}{
		{srv, "http.route", attribute.StringValue("/orders/{id}")},
		{srv, "http.request.method", attribute.StringValue("GET")},
		{srv, "url.path", attribute.StringValue("/orders/42")},
		{srv, "http.response.status_code", attribute.IntValue(200)},
		{srv, observe.AttrBackend, attribute.StringValue("orders")},
		{srv, observe.AttrAttempts, attribute.IntValue(1)},
		{cli, "http.request.method", attribute.StringValue("GET")},
		{cli, "http.response.status_code", attribute.IntValue(200)},
		{cli, observe.AttrBackend, attribute.StringValue("orders")},
	} {
		t.Run(string(tc.key), func(t *testing.T) {
			if got := attr(tc.span, tc.key); got != tc.want {
				t.Errorf("%s span %s = %v, want %v", tc.span.Name, tc.key, got.String(), tc.want.String())
			}
		})
	}
	if srv.Name != "order" || cli.Name != "GET" {
		t.Errorf("span names %q and %q, want the route name and the method", srv.Name, cli.Name)
	}
}

func TestTracingRetryAndErrors(t *testing.T) {
	f := newTracingFixture(t, func(up string) []string { return []string{deadAddr(t), up} })
	// The first attempt goes to the dead target, the retry to the live one:
	// one client span each, both children of the one server span, a new
	// trace since the client sent none.
	if code := f.get(t, "/orders/1", nil); code != 200 {
		t.Fatalf("status %d", code)
	}
	spans := f.exp.GetSpans()
	servers, clients := spansOf(spans, trace.SpanKindServer), spansOf(spans, trace.SpanKindClient)
	if len(servers) != 1 || len(clients) != 2 {
		t.Fatalf("got %d server and %d client spans, want 1 and 2", len(servers), len(clients))
	}
	if servers[0].Parent.IsValid() {
		t.Errorf("server span has a parent without a traceparent")
	}
	for i, c := range clients {
		if c.Parent.SpanID() != servers[0].SpanContext.SpanID() {
			t.Errorf("client span %d is not the server span's child", i)
		}
	}
	if clients[0].Status.Code != codes.Error || clients[1].Status.Code != codes.Unset {
		t.Errorf("client span statuses %v, %v; want Error then Unset", clients[0].Status, clients[1].Status)
	}
	if got := attr(servers[0], observe.AttrAttempts); got != attribute.IntValue(2) {
		t.Errorf("attempts = %v, want 2", got.String())
	}

	f.exp.Reset()
	if code := f.get(t, "/fail", nil); code != http.StatusBadGateway {
		t.Fatalf("status %d", code)
	}
	srv := spansOf(f.exp.GetSpans(), trace.SpanKindServer)[0]
	if srv.Status.Code != codes.Error || attr(srv, "error.type") != attribute.StringValue("502") {
		t.Errorf("a 502 server span: status %v, error.type %v", srv.Status, attr(srv, "error.type").String())
	}

	f.exp.Reset()
	if code := f.get(t, "/nowhere", nil); code != http.StatusNotFound {
		t.Fatalf("status %d", code)
	}
	srv = spansOf(f.exp.GetSpans(), trace.SpanKindServer)[0]
	if srv.Name != "GET" || attr(srv, "http.route").Type() != attribute.EMPTY || srv.Status.Code != codes.Unset {
		t.Errorf("unmatched request span: name %q, http.route %v, status %v", srv.Name, attr(srv, "http.route").String(), srv.Status)
	}
}

func TestTracerStartCall(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	tr := observe.NewTracer(tp, observe.TracingOptions{})

	root, span := tp.Tracer("test").Start(context.Background(), "root")
	for _, err := range []error{nil, errors.New("payment: timeout")} {
		_, end := tr.StartCall(root, "payment")
		end(err)
	}
	span.End()
	spans := exp.GetSpans()
	if len(spans) != 3 {
		t.Fatalf("%d spans, want 3", len(spans))
	}
	for i, s := range spans[:2] {
		if s.Name != "aggregate payment" || s.Parent.SpanID() != span.SpanContext().SpanID() {
			t.Errorf("call span %d: name %q, parent %v", i, s.Name, s.Parent.SpanID())
		}
	}
	if spans[0].Status.Code != codes.Unset || spans[1].Status.Code != codes.Error {
		t.Errorf("statuses %v, %v; want Unset then Error", spans[0].Status, spans[1].Status)
	}
}
