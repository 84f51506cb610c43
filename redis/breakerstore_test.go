package pylonredis

import (
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/breaker"
)

func TestBreakerStore(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	network, addr := breakerRedis(t)
	prefix := breakerPrefix()
	s1 := NewBreakerStore(breakerClient(t, network, addr), BreakerStoreOptions{Prefix: prefix, LockWait: 50 * time.Millisecond})
	s2 := NewBreakerStore(breakerClient(t, network, addr), BreakerStoreOptions{Prefix: prefix, LockWait: 50 * time.Millisecond})

	t.Run("absent state is nil", func(t *testing.T) {
		data, err := s1.GetData("nothing")
		if err != nil || data != nil {
			t.Fatalf("%q %v", data, err)
		}
	})
	t.Run("data is shared", func(t *testing.T) {
		if err := s1.SetData("state", []byte(`{"state":2}`)); err != nil {
			t.Fatal(err)
		}
		data, err := s2.GetData("state")
		if err != nil || string(data) != `{"state":2}` {
			t.Fatalf("%q %v", data, err)
		}
	})
	t.Run("lock is exclusive and released by its holder only", func(t *testing.T) {
		if err := s1.Lock("m"); err != nil {
			t.Fatal(err)
		}
		if err := s2.Lock("m"); !errors.Is(err, ErrBreakerLocked) {
			t.Fatalf("second Lock: %v, want ErrBreakerLocked", err)
		}
		if err := s2.Unlock("m"); err != nil { // not its lock: nothing happens
			t.Fatal(err)
		}
		if err := s2.Lock("m"); !errors.Is(err, ErrBreakerLocked) {
			t.Fatalf("lock released by a non-holder: %v", err)
		}
		if err := s1.Unlock("m"); err != nil {
			t.Fatal(err)
		}
		if err := s2.Lock("m"); err != nil {
			t.Fatalf("Lock after Unlock: %v", err)
		}
		_ = s2.Unlock("m")
	})
	t.Run("a dead holder's lock expires", func(t *testing.T) {
		short := NewBreakerStore(breakerClient(t, network, addr), BreakerStoreOptions{Prefix: prefix, LockTTL: 20 * time.Millisecond})
		if err := short.Lock("dead"); err != nil {
			t.Fatal(err)
		}
		if err := s1.Lock("dead"); err != nil { // waits up to LockWait (50ms)
			t.Fatalf("lock of a dead holder: %v", err)
		}
		_ = s1.Unlock("dead")
	})
}

type counter struct {
	hits   atomic.Int64
	status atomic.Int64
}

func (c *counter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.hits.Add(1)
	w.WriteHeader(int(c.status.Load()))
}

func send(h http.Handler) (*httptest.ResponseRecorder, *pylon.RequestInfo) {
	info := &pylon.RequestInfo{}
	r := httptest.NewRequest("GET", "/orders/1", nil)
	r = r.WithContext(pylon.NewContext(r.Context(), info))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w, info
}

// Two gateway instances, each with its own Redis client, store and
// breaker, see one state.
func TestDistributedBreakerThroughRedis(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	network, addr := breakerRedis(t)
	prefix := breakerPrefix()
	instance := func() *breaker.Breaker {
		return breaker.MustNew(breaker.Settings{
			Name:                "orders",
			ConsecutiveFailures: 3,
			OpenDuration:        50 * time.Millisecond,
			Logger:              slog.New(slog.DiscardHandler),
			Store:               NewBreakerStore(breakerClient(t, network, addr), BreakerStoreOptions{Prefix: prefix}),
		})
	}
	a, b := instance(), instance()
	upA, upB := &counter{}, &counter{}
	upA.status.Store(502)
	upB.status.Store(200)
	ha, hb := a.Middleware(upA), b.Middleware(upB)

	for range 3 {
		if w, _ := send(ha); w.Code != 502 {
			t.Fatalf("instance a: %d", w.Code)
		}
	}
	// Instance b never saw a failure, and yet refuses without calling its
	// backend.
	for range 5 {
		w, info := send(hb)
		if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" || info.Breaker != "open" {
			t.Fatalf("instance b: %d, Retry-After %q, breaker %q", w.Code, w.Header().Get("Retry-After"), info.Breaker)
		}
	}
	if upB.hits.Load() != 0 {
		t.Fatalf("instance b called its backend %d times while open", upB.hits.Load())
	}
	if w, _ := send(ha); w.Code != http.StatusServiceUnavailable || upA.hits.Load() != 3 {
		t.Fatalf("instance a while open: %d", w.Code)
	}

	// After the open period, a probe through b succeeds and closes the
	// breaker for a too.
	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		if w, _ := send(hb); w.Code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("instance b never let a probe through")
		}
		<-tick.C
	}
	upA.status.Store(200)
	if w, _ := send(ha); w.Code != 200 {
		t.Fatalf("instance a after b's probe: %d", w.Code)
	}
}

// With Redis gone, the breaker lets requests through rather than failing
// them.
func TestDistributedBreakerRedisDown(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	network, addr := breakerRedis(t)
	c := breakerClient(t, network, addr)
	br := breaker.MustNew(breaker.Settings{
		Name:   "down",
		Logger: slog.New(slog.DiscardHandler),
		Store:  NewBreakerStore(c, BreakerStoreOptions{Prefix: breakerPrefix(), Timeout: 100 * time.Millisecond}),
	})
	c.Close() // every command now fails at once
	up := &counter{}
	up.status.Store(200)
	for range 3 {
		if w, _ := send(br.Middleware(up)); w.Code != 200 {
			t.Fatalf("Redis down: %d", w.Code)
		}
	}
	if up.hits.Load() != 3 {
		t.Fatal("requests not let through")
	}
}
