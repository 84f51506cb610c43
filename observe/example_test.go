package observe_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/observe"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

func ExampleNewMetrics() {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "order "+r.URL.Path)
	}))
	defer upstream.Close()

	reg := prometheus.NewRegistry()
	metrics, err := observe.NewMetrics(reg, observe.MetricsOptions{})
	if err != nil {
		panic(err)
	}
	opts := pylon.BackendOptions{Targets: []string{upstream.URL}}
	transport := pylon.NewTransport(opts)
	defer transport.CloseIdleConnections()
	opts.Transport = metrics.Transport(transport)
	orders := pylon.MustNewBackend("orders", opts)
	defer orders.Close()
	metrics.WatchBackends(orders)

	gw := pylon.New(pylon.Options{})
	gw.Use(metrics.Middleware)
	gw.Route("GET /orders/{id}").Name("order").To(orders)
	gw.Handle("GET /metrics", metrics.Handler())

	for _, path := range []string{"/orders/1", "/orders/2", "/nowhere"} {
		gw.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", path, nil))
	}
	rec := httptest.NewRecorder()
	gw.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for line := range strings.SplitSeq(rec.Body.String(), "\n") {
		if strings.HasPrefix(line, "http_server_request_duration_seconds_count") ||
			strings.HasPrefix(line, "pylon_target_healthy") {
			fmt.Println(strings.ReplaceAll(line, upstream.URL, "UPSTREAM"))
		}
	}
	// Output:
	// http_server_request_duration_seconds_count{http_request_method="GET",http_response_status_class="2xx",http_route="order"} 2
	// http_server_request_duration_seconds_count{http_request_method="GET",http_response_status_class="4xx",http_route="unmatched"} 1
	// pylon_target_healthy{backend="orders",target="UPSTREAM"} 1
}

func ExampleNewTracer() {
	seen := make(chan string, 1)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Get("Traceparent")[3:35] // the trace ID
	}))
	defer upstream.Close()

	// The program chooses the exporter; this one keeps spans in memory.
	exporter := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exporter))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	tracer := observe.NewTracer(tp, observe.TracingOptions{})

	opts := pylon.BackendOptions{Targets: []string{upstream.URL}}
	transport := pylon.NewTransport(opts)
	defer transport.CloseIdleConnections()
	opts.Transport = tracer.Transport(transport)
	orders := pylon.MustNewBackend("orders", opts)
	defer orders.Close()

	gw := pylon.New(pylon.Options{})
	gw.Use(tracer.Middleware)
	gw.Route("GET /orders/{id}").Name("order").To(orders)

	r := httptest.NewRequest("GET", "/orders/1", nil)
	r.Header.Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	gw.ServeHTTP(httptest.NewRecorder(), r)

	for _, s := range exporter.GetSpans() {
		fmt.Println(s.SpanKind, s.Name, s.SpanContext.TraceID())
	}
	fmt.Println("upstream saw trace", <-seen)
	// Output:
	// client GET 4bf92f3577b34da6a3ce929d0e0e4736
	// server order 4bf92f3577b34da6a3ce929d0e0e4736
	// upstream saw trace 4bf92f3577b34da6a3ce929d0e0e4736
}

func ExampleServerTiming() {
	gw := pylon.New(pylon.Options{})
	gw.Use(observe.ServerTiming)
	gw.Handle("GET /hello", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "hello")
	}))
	rec := httptest.NewRecorder()
	gw.ServeHTTP(rec, httptest.NewRequest("GET", "/hello", nil))
	timing := rec.Header().Get("Server-Timing")
	fmt.Println(timing[:strings.IndexByte(timing, '=')+1] + "...")
	// Output: gateway;dur=...
}
