package pylon

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestReadiness(t *testing.T) {
	good := upstream(t, func(w http.ResponseWriter, r *http.Request) {})
	refused := closedAddr(t)
	orders := backend(t, BackendOptions{Targets: []string{good.URL}})
	pay, err := NewBackend("payments", BackendOptions{Targets: []string{refused}, Outlier: OutlierDetection{ConsecutiveFailures: 1}})
	require.NoError(t, err)
	defer pay.Close()

	g := New(Options{})
	g.Route("/orders/").To(orders)
	g.Route("/pay/").To(pay)
	live, ready := g.Health(pay)
	g.Handle("GET /healthz", live)
	g.Handle("GET /readyz", ready)
	require.NoError(t, g.Err())

	get := func(path string) (int, readiness) {
		rec := serve(g, "GET", path)
		var body readiness
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &body))
		assert.Equal(t, "no-store", rec.Header().Get("Cache-Control"))
		return rec.Code, body
	}
	code, body := get("/readyz")
	assert.Equal(t, 200, code)
	assert.Equal(t, readiness{Status: "ready", Backends: []BackendStatus{
		{Name: "test", Healthy: 1, Targets: 1},
		{Name: "payments", Healthy: 1, Targets: 1, Critical: true},
	}}, body)

	// The critical backend's only target fails once and is ejected.
	assert.Equal(t, 502, serve(g, "GET", "/pay/x").Code)
	code, body = get("/readyz")
	assert.Equal(t, 503, code)
	assert.Equal(t, "unavailable", body.Status)

	code, _ = get("/healthz")
	assert.Equal(t, 200, code, "liveness does not depend on backends")
}

func TestReadinessFlipsWhileDraining(t *testing.T) {
	g := New(Options{})
	_, ready := g.Health()
	g.Handle("GET /readyz", ready)
	ln := listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- RunWithOptions(ctx, NewServer("", g), RunOptions{Listener: ln, DrainDelay: time.Second})
	}()
	url := "http://" + ln.Addr().String() + "/readyz"
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	status := func() int {
		res, err := client.Get(url)
		require.NoError(t, err)
		res.Body.Close()
		return res.StatusCode
	}
	require.Equal(t, 200, status())
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for status() != 503 {
		require.True(t, time.Now().Before(deadline), "readiness never reported draining")
	}
	require.NoError(t, <-done)
}

func TestHealthOnPlainRecorder(t *testing.T) {
	live, _ := New(Options{}).Health()
	rec := httptest.NewRecorder()
	live.ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
	assert.JSONEq(t, `{"status":"alive"}`, rec.Body.String())
}

func TestReadinessSetDraining(t *testing.T) {
	orders := backend(t, BackendOptions{Targets: []string{"http://127.0.0.1:1"}})
	g := New(Options{})
	g.Route("/orders/").To(orders)
	g.Route("/again/").To(orders)
	_, ready := g.Health()
	g.Handle("GET /readyz", ready)
	require.NoError(t, g.Err())
	assert.Equal(t, []*Backend{orders}, g.Backends())

	assert.Equal(t, 200, serve(g, "GET", "/readyz").Code)
	g.SetDraining(true)
	assert.True(t, g.Draining())
	rec := serve(g, "GET", "/readyz")
	assert.Equal(t, 503, rec.Code)
	assert.Contains(t, rec.Body.String(), `"status":"draining"`)
	g.SetDraining(false)
	assert.Equal(t, 200, serve(g, "GET", "/readyz").Code)
}
