package pylonredis_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/middleware/idempotency"
	pylonredis "github.com/pylon-gateway/pylon/redis"
)

// TestIdempotencyAcrossGateways runs two gateway instances sharing one real
// redis-server: a retry that reaches the other instance is replayed, a
// duplicate there while the first is in flight gets 409, a different body
// 422, and a 5xx is not stored.
func TestIdempotencyAcrossGateways(t *testing.T) {
	var calls atomic.Int64
	hold := make(chan struct{})
	arrived := make(chan struct{}, 1)
	var status atomic.Int64
	up := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		if r.Header.Get("X-Hold") != "" {
			arrived <- struct{}{}
			<-hold
		}
		st := int(status.Load())
		if st == 0 {
			st = http.StatusCreated
		}
		w.WriteHeader(st)
		_, _ = io.WriteString(w, "order "+strconv.FormatInt(n, 10))
	})
	prefix := "test:idem:" + strconv.FormatInt(time.Now().UnixNano(), 36) + ":"
	var urls [2]string
	for i := range urls {
		store, err := pylonredis.NewIdempotencyStore(newClient(t, sharedAddr), pylonredis.IdempotencyStoreOptions{Prefix: prefix, Timeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		gw := pylon.New(pylon.Options{})
		gw.Route("POST /orders").Use(idempotency.New(idempotency.Options{Store: store, Required: true})).Handler(up)
		srv := httptest.NewServer(gw)
		t.Cleanup(srv.Close)
		urls[i] = srv.URL + "/orders"
	}
	post := func(i int, key, body string, hdr ...string) (int, string, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, urls[i], strings.NewReader(body))
		if key != "" {
			req.Header.Set("Idempotency-Key", key)
		}
		if len(hdr) > 0 {
			req.Header.Set(hdr[0], "1")
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			return 0, "", ""
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b), res.Header.Get("Idempotent-Replayed")
	}

	if st, body, _ := post(0, "k1", "a"); st != 201 || body != "order 1" {
		t.Fatalf("first: %d %q", st, body)
	}
	if st, body, rep := post(1, "k1", "a"); st != 201 || body != "order 1" || rep != "true" {
		t.Fatalf("replay on the other gateway: %d %q %q", st, body, rep)
	}
	if st, _, _ := post(1, "k1", "b"); st != http.StatusUnprocessableEntity {
		t.Errorf("different body: %d", st)
	}
	if st, _, _ := post(0, "", "a"); st != http.StatusBadRequest {
		t.Errorf("missing key: %d", st)
	}

	done := make(chan int, 1)
	go func() { st, _, _ := post(0, "k2", "a", "X-Hold"); done <- st }()
	<-arrived
	if st, _, _ := post(1, "k2", "a"); st != http.StatusConflict {
		t.Errorf("concurrent duplicate on the other gateway: %d", st)
	}
	close(hold)
	if st := <-done; st != 201 {
		t.Errorf("held first: %d", st)
	}

	status.Store(502)
	post(0, "k3", "a")
	status.Store(0)
	before := calls.Load()
	if st, _, rep := post(1, "k3", "a"); st != 201 || rep != "" || calls.Load() != before+1 {
		t.Errorf("retry after a 5xx: %d replayed=%q", st, rep)
	}
}
