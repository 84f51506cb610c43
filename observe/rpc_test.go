package observe_test

import (
	"context"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/observe"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// An upstream that ends its gRPC calls NOT_FOUND, in the trailers.
func grpcUpstream(t *testing.T) *httptest.Server {
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Trailer", "Grpc-Status")
		w.WriteHeader(http.StatusOK)
		w.Header().Set("Grpc-Status", "5")
	}))
	up.EnableHTTP2 = true
	up.StartTLS()
	t.Cleanup(up.Close)
	return up
}

func TestRPCSemanticConventions(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	reg := prometheus.NewRegistry()
	m, err := observe.NewMetrics(reg, observe.MetricsOptions{})
	if err != nil {
		t.Fatal(err)
	}
	up := grpcUpstream(t)
	roots := x509.NewCertPool()
	roots.AddCert(up.Certificate())
	b := pylon.MustNewBackend("svc", pylon.BackendOptions{Targets: []string{up.URL}, TLS: pylon.UpstreamTLS{RootCAs: roots}})
	t.Cleanup(func() { _ = b.Close() })
	gw := pylon.New(pylon.Options{})
	gw.Use(m.Middleware, observe.NewTracer(tp, observe.TracingOptions{}).Middleware)
	gw.Route("/pkg.Svc/").Name("svc").To(b)

	for _, path := range []string{"/pkg.Svc/Get", "/other.Svc/Call"} {
		r := httptest.NewRequest("POST", path, strings.NewReader("\x00\x00\x00\x00\x00"))
		r.Header.Set("Content-Type", "application/grpc")
		r.Proto, r.ProtoMajor = "HTTP/2.0", 2
		gw.ServeHTTP(httptest.NewRecorder(), r)
	}

	spans := exp.GetSpans()
	if len(spans) < 2 {
		t.Fatalf("%d spans", len(spans))
	}
	byName := map[string]tracetest.SpanStub{}
	for _, s := range spans {
		byName[s.Name] = s
	}
	get, ok := byName["pkg.Svc/Get"]
	if !ok {
		t.Fatalf("no span named pkg.Svc/Get in %v", byName)
	}
	attrs := map[attribute.Key]string{}
	for _, a := range get.Attributes {
		attrs[a.Key] = a.Value.String()
	}
	if attrs["rpc.system.name"] != "grpc" || attrs["rpc.method"] != "pkg.Svc/Get" || attrs["rpc.response.status_code"] != "NOT_FOUND" {
		t.Errorf("attributes %v", attrs)
	}
	if get.Status.Code == codes.Error {
		t.Error("NOT_FOUND is not a server error")
	}
	// A method no route serves is not named after the client's path
	// (span names would be unbounded): _OTHER, with the path's name kept.
	other, ok := byName["grpc"]
	if !ok {
		t.Fatalf("no span named grpc for the unrouted call in %v", byName)
	}
	oattrs := map[attribute.Key]string{}
	for _, a := range other.Attributes {
		oattrs[a.Key] = a.Value.String()
	}
	if oattrs["rpc.method"] != "_OTHER" || oattrs["rpc.method_original"] != "other.Svc/Call" {
		t.Errorf("unrouted call's attributes %v", oattrs)
	}
	if other.Status.Code != codes.Error {
		t.Errorf("UNIMPLEMENTED (no route) is a server error: %v", other.Status)
	}

	if n, _ := testutil.GatherAndCount(reg, "rpc_server_call_duration_seconds"); n != 2 {
		t.Errorf("%d rpc series, want 2 (svc NOT_FOUND, unmatched UNIMPLEMENTED)", n)
	}
	mfs, _ := reg.Gather()
	var labels []string
	for _, mf := range mfs {
		if mf.GetName() != "rpc_server_call_duration_seconds" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			var l []string
			for _, lp := range mt.GetLabel() {
				l = append(l, lp.GetName()+"="+lp.GetValue())
			}
			labels = append(labels, strings.Join(l, ","))
		}
	}
	want := []string{
		"http_route=svc,rpc_response_status_code=NOT_FOUND,rpc_system_name=grpc",
		"http_route=" + observe.RouteUnmatched + ",rpc_response_status_code=UNIMPLEMENTED,rpc_system_name=grpc",
	}
	if strings.Join(labels, "|") != strings.Join(want, "|") {
		t.Errorf("labels %v, want %v", labels, want)
	}
}

// A method the conventions do not know names an HTTP span "HTTP": span
// names stay a bounded set whatever methods clients make up.
func TestSpanNameOfUnknownMethod(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	gw := pylon.New(pylon.Options{})
	gw.Use(observe.NewTracer(tp, observe.TracingOptions{}).Middleware)
	gw.Route("GET /x").Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	for _, m := range []string{"FOO1", "BAR2", "GET"} {
		gw.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(m, "/nowhere", nil))
	}
	var names []string
	for _, s := range exp.GetSpans() {
		names = append(names, s.Name)
	}
	if strings.Join(names, ",") != "HTTP,HTTP,GET" {
		t.Errorf("span names %v, want HTTP, HTTP, GET", names)
	}
}
