package overload_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/overload"
)

// holdBackend is an upstream that holds every request until release is
// closed, counting arrivals.
type holdBackend struct {
	srv     *httptest.Server
	arrived atomic.Int64
	release chan struct{}
}

func newHoldBackend(t *testing.T) *holdBackend {
	h := &holdBackend{release: make(chan struct{})}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.arrived.Add(1)
		select {
		case <-h.release:
		case <-r.Context().Done():
		}
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(func() { h.open(); h.srv.Close() })
	return h
}

func (h *holdBackend) open() {
	select {
	case <-h.release:
	default:
		close(h.release)
	}
}

// waitFor polls cond until it holds or 5s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond) // polling with a deadline, not waiting blind
	}
}

type result struct {
	status int
	header http.Header
	body   string
}

// get sends a GET through srv and returns its result on a channel.
func get(t *testing.T, url string, hdr ...string) <-chan result {
	ch := make(chan result, 1)
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	go func() {
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			ch <- result{status: -1, body: err.Error()}
			return
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		ch <- result{status: res.StatusCode, header: res.Header, body: string(b)}
	}()
	return ch
}

func recv(t *testing.T, ch <-chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no answer within 10s")
		return result{}
	}
}

// checkShed checks a refusal: status, Retry-After, problem+json.
func checkShed(t *testing.T, r result, status int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status = %d, want %d (%s)", r.status, status, r.body)
	}
	if r.header.Get("Retry-After") == "" {
		t.Errorf("no Retry-After")
	}
	if ct := r.header.Get("Content-Type"); ct != pylon.ProblemContentType {
		t.Errorf("Content-Type = %q", ct)
	}
	var p pylon.Problem
	if err := json.Unmarshal([]byte(r.body), &p); err != nil || p.Status != status {
		t.Errorf("problem = %+v, %v", p, err)
	}
}

// gateway serves one route GET /x to a Backend over targets with guard g,
// with mws on the route, and returns its URL.
func gateway(t *testing.T, g pylon.Guard, targets []string, mws ...pylon.Middleware) (*pylon.Gateway, string) {
	t.Helper()
	b := pylon.MustNewBackend("up", pylon.BackendOptions{Targets: targets, Guard: g, Balancer: pylon.LeastRequests(),
		Outlier: pylon.OutlierDetection{ConsecutiveFailures: -1}})
	t.Cleanup(func() { b.Close() })
	gw := pylon.New(pylon.Options{})
	gw.Route("GET /x").Use(mws...).To(b)
	gw.Route("GET /critical").Use(append([]pylon.Middleware{overload.Critical}, mws...)...).To(b)
	if err := gw.Err(); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw)
	t.Cleanup(srv.Close)
	return gw, srv.URL
}
