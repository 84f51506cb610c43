package observe_test

import (
	"net/http"
	"net/url"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/observe"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// idleCounter is a RoundTripper that counts CloseIdleConnections calls.
type idleCounter struct{ closes, closesTo atomic.Int32 }

func (c *idleCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	return http.DefaultTransport.RoundTrip(r)
}
func (c *idleCounter) CloseIdleConnections()           { c.closes.Add(1) }
func (c *idleCounter) CloseIdleConnectionsTo(*url.URL) { c.closesTo.Add(1) }

// TestBackendCloseThroughWrappers checks that Backend.Close reaches the idle
// connections of a transport wrapped as the package documentation shows.
func TestBackendCloseThroughWrappers(t *testing.T) {
	m, err := observe.NewMetrics(prometheus.NewRegistry(), observe.MetricsOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider()
	t.Cleanup(func() { _ = tp.Shutdown(t.Context()) })
	tracer := observe.NewTracer(tp, observe.TracingOptions{})

	inner := &idleCounter{}
	b, err := pylon.NewBackend("b", pylon.BackendOptions{
		Targets:   []string{"http://127.0.0.1:1"},
		Transport: tracer.Transport(m.Transport(inner)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if got := inner.closes.Load(); got != 1 {
		t.Errorf("CloseIdleConnections reached the wrapped transport %d times, want 1", got)
	}

	// A drained target's connections alone, through both wrappers.
	rt := tracer.Transport(m.Transport(inner))
	rt.(interface{ CloseIdleConnectionsTo(*url.URL) }).CloseIdleConnectionsTo(&url.URL{Scheme: "http", Host: "x"})
	if got := inner.closesTo.Load(); got != 1 {
		t.Errorf("CloseIdleConnectionsTo reached the wrapped transport %d times, want 1", got)
	}
}
