package pylonredis_test

import (
	"context"
	"errors"
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

// TestIdempotencyStoreClaimTokens: against a real redis-server, a claim is
// renewed, ended or completed only with its own token: a request whose
// claim expired (deleted here) while it ran, and was taken by another,
// neither releases nor overwrites the other's claim, nor the response stored
// after it.
func TestIdempotencyStoreClaimTokens(t *testing.T) {
	client := newClient(t, sharedAddr)
	prefix := "test:idemtok:" + strconv.FormatInt(time.Now().UnixNano(), 36) + ":"
	s, err := pylonredis.NewIdempotencyStore(client, pylonredis.IdempotencyStoreOptions{Prefix: prefix, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	e1 := &idempotency.Entry{Fingerprint: "fp", Status: 201, Body: []byte("first")}
	e2 := &idempotency.Entry{Fingerprint: "fp", Status: 201, Body: []byte("second")}
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	want := func(what string, err, want error) {
		t.Helper()
		if !errors.Is(err, want) {
			t.Errorf("%s: %v, want %v", what, err, want)
		}
	}
	begin := func(key, token string) (*idempotency.Entry, error) {
		return s.Begin(ctx, key, token, "fp", time.Minute)
	}
	pttl := func(key string) time.Duration {
		t.Helper()
		d, err := client.PTTL(ctx, prefix+key).Result()
		must("PTTL", err)
		return d
	}

	_, err = begin("k", "t1")
	must("Begin t1", err)
	must("expire t1", client.Del(ctx, prefix+"k").Err())
	_, err = begin("k", "t2")
	must("Begin t2 after t1's claim expired", err)

	must("Release t1", s.Release(ctx, "k", "t1"))
	_, err = begin("k", "t3")
	want("Begin after t1's Release (t2's claim ended?)", err, idempotency.ErrInFlight)
	want("Extend t1", s.Extend(ctx, "k", "t1", time.Minute), idempotency.ErrClaimLost)
	want("Complete t1", s.Complete(ctx, "k", "t1", e1, time.Hour), idempotency.ErrClaimLost)
	_, err = begin("k", "t3")
	want("Begin after t1's Complete (t2's claim overwritten?)", err, idempotency.ErrInFlight)

	must("PEXPIRE", client.PExpire(ctx, prefix+"k", time.Second).Err())
	must("Extend t2", s.Extend(ctx, "k", "t2", time.Minute))
	if d := pttl("k"); d < 50*time.Second {
		t.Errorf("after Extend the claim lives %v more, want about a minute", d)
	}

	must("Complete t2", s.Complete(ctx, "k", "t2", e2, time.Hour))
	want("Complete t1 over a stored response", s.Complete(ctx, "k", "t1", e1, time.Hour), idempotency.ErrClaimLost)
	want("Extend t2 of a stored response", s.Extend(ctx, "k", "t2", time.Minute), idempotency.ErrClaimLost)
	must("Release t2", s.Release(ctx, "k", "t2"))
	got, err := begin("k", "t3")
	must("Begin t3", err)
	if got == nil || string(got.Body) != "second" {
		t.Fatalf("stored response = %+v, want t2's", got)
	}
	if d := pttl("k"); d < 50*time.Minute {
		t.Errorf("the response is stored for %v more, want about its TTL of an hour", d)
	}

	// A free key (the claim expired, nobody took it) is claimed again by
	// Extend, and stored by Complete.
	_, err = begin("f", "t1")
	must("Begin f", err)
	must("expire", client.Del(ctx, prefix+"f").Err())
	must("Extend of a free key", s.Extend(ctx, "f", "t1", time.Minute))
	_, err = begin("f", "t2")
	want("Begin after Extend claimed the free key", err, idempotency.ErrInFlight)
	must("expire", client.Del(ctx, prefix+"f").Err())
	must("Complete of a free key", s.Complete(ctx, "f", "t1", e1, time.Hour))
	if got, _ := begin("f", "t2"); got == nil {
		t.Error("Complete did not store in a free key")
	}
}

// TestIdempotencyClaimRenewedAcrossGateways: two gateways share one real
// redis-server with a LockTimeout of 150ms; a request that runs three
// times as long keeps its claim (renewed every 50ms), so its duplicate on
// the other gateway, sent after the first lock would have expired, gets 409
// and does not run; the answer is then replayed there.
func TestIdempotencyClaimRenewedAcrossGateways(t *testing.T) {
	var calls atomic.Int64
	arrived, hold := make(chan struct{}, 1), make(chan struct{})
	up := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 { // the first is held; a duplicate that runs is not
			arrived <- struct{}{}
			<-hold
		}
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, "order")
	})
	prefix := "test:idemrenew:" + strconv.FormatInt(time.Now().UnixNano(), 36) + ":"
	var urls [2]string
	for i := range urls {
		store, err := pylonredis.NewIdempotencyStore(newClient(t, sharedAddr), pylonredis.IdempotencyStoreOptions{Prefix: prefix, Timeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		gw := pylon.New(pylon.Options{})
		gw.Route("POST /orders").Use(idempotency.New(idempotency.Options{Store: store, LockTimeout: 150 * time.Millisecond})).Handler(up)
		srv := httptest.NewServer(gw)
		t.Cleanup(srv.Close)
		urls[i] = srv.URL + "/orders"
	}
	post := func(i int) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, urls[i], strings.NewReader("a"))
		req.Header.Set("Idempotency-Key", "k1")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			return 0, ""
		}
		defer res.Body.Close()
		_, _ = io.Copy(io.Discard, res.Body)
		return res.StatusCode, res.Header.Get("Idempotent-Replayed")
	}
	done := make(chan int, 1)
	go func() { st, _ := post(0); done <- st }()
	<-arrived
	// Real Redis expires real time: for three lock times the claim must
	// stay in Redis, checked every 10ms (without renewal it would be gone
	// after the first 150ms).
	rc := newClient(t, sharedAddr)
	held := time.Now()
	tick := time.NewTicker(10 * time.Millisecond)
	for time.Since(held) < 450*time.Millisecond {
		<-tick.C
		keys, err := rc.Keys(context.Background(), prefix+"*").Result()
		if err != nil || len(keys) == 0 {
			t.Fatalf("after %v the claim is gone from Redis (%v)", time.Since(held), err)
		}
	}
	tick.Stop()
	if st, _ := post(1); st != http.StatusConflict {
		t.Errorf("duplicate after the first lock's time: %d, want 409 (the claim was renewed)", st)
	}
	close(hold)
	if st := <-done; st != http.StatusCreated {
		t.Errorf("first: %d", st)
	}
	if st, rep := post(1); st != http.StatusCreated || rep != "true" {
		t.Errorf("after: %d replayed=%q", st, rep)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("upstream ran %d times, want 1", n)
	}
}
