package idempotency_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/middleware/idempotency"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// clock is a settable time.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	return c.now
}

// TestMemoryStoreClaimTokens: a claim is ended, renewed or completed only
// with its own token. A request whose claim expired while it ran, and was
// taken by another, neither releases nor overwrites the other's claim, nor
// the response stored after it.
func TestMemoryStoreClaimTokens(t *testing.T) {
	c := &clock{now: time.Unix(0, 0)}
	s := idempotency.NewMemoryStore(idempotency.MemoryOptions{Now: c.Now})
	ctx := t.Context()
	e1 := &idempotency.Entry{Fingerprint: "fp", Status: 201, Body: []byte("first")}
	e2 := &idempotency.Entry{Fingerprint: "fp", Status: 201, Body: []byte("second")}

	_, err := s.Begin(ctx, "k", "t1", "fp", time.Minute)
	require.NoError(t, err)
	c.Add(2 * time.Minute) // t1's claim expired
	_, err = s.Begin(ctx, "k", "t2", "fp", time.Minute)
	require.NoError(t, err, "an expired claim is taken")

	require.NoError(t, s.Release(ctx, "k", "t1"))
	_, err = s.Begin(ctx, "k", "t3", "fp", time.Minute)
	assert.ErrorIs(t, err, idempotency.ErrInFlight, "t1's Release ended t2's claim")
	assert.ErrorIs(t, s.Extend(ctx, "k", "t1", time.Minute), idempotency.ErrClaimLost)
	assert.ErrorIs(t, s.Complete(ctx, "k", "t1", e1, time.Hour), idempotency.ErrClaimLost)
	_, err = s.Begin(ctx, "k", "t3", "fp", time.Minute)
	assert.ErrorIs(t, err, idempotency.ErrInFlight, "t1's Complete ended t2's claim")

	c.Add(50 * time.Second)
	require.NoError(t, s.Extend(ctx, "k", "t2", time.Minute))
	c.Add(50 * time.Second) // past the first lock, within the renewed one
	_, err = s.Begin(ctx, "k", "t3", "fp", time.Minute)
	assert.ErrorIs(t, err, idempotency.ErrInFlight, "renewed")

	require.NoError(t, s.Complete(ctx, "k", "t2", e2, time.Hour))
	assert.ErrorIs(t, s.Complete(ctx, "k", "t1", e1, time.Hour), idempotency.ErrClaimLost, "a stored response is not overwritten")
	assert.ErrorIs(t, s.Extend(ctx, "k", "t2", time.Minute), idempotency.ErrClaimLost, "a stored response is not claimed")
	require.NoError(t, s.Release(ctx, "k", "t2"))
	got, err := s.Begin(ctx, "k", "t3", "fp", time.Minute)
	require.NoError(t, err)
	require.NotNil(t, got, "Release removed a stored response")
	assert.Equal(t, "second", string(got.Body))

	// A free key (the claim expired, nobody took it) is claimed again by
	// Extend, and stored by Complete.
	_, err = s.Begin(ctx, "f", "t1", "fp", time.Minute)
	require.NoError(t, err)
	c.Add(2 * time.Minute)
	require.NoError(t, s.Extend(ctx, "f", "t1", time.Minute))
	_, err = s.Begin(ctx, "f", "t2", "fp", time.Minute)
	assert.ErrorIs(t, err, idempotency.ErrInFlight)
	c.Add(2 * time.Minute)
	require.NoError(t, s.Complete(ctx, "f", "t1", e1, time.Hour))
	got, _ = s.Begin(ctx, "f", "t2", "fp", time.Minute)
	require.NotNil(t, got)
}

// fakeTimer is a renewal timer that fires when the test says so.
type fakeTimer struct {
	d time.Duration
	f func()

	mu      sync.Mutex
	armed   bool
	stopped bool
}

func (t *fakeTimer) Stop() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	was := t.armed
	t.armed, t.stopped = false, true
	return was
}

func (t *fakeTimer) Reset(d time.Duration) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	was := t.armed
	t.armed, t.d = true, d
	return was
}

func (t *fakeTimer) isArmed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.armed
}

// fire runs the timer's function as its expiry would, and reports whether
// it was armed.
func (t *fakeTimer) fire() bool {
	t.mu.Lock()
	armed := t.armed
	t.armed = false
	t.mu.Unlock()
	if armed {
		t.f()
	}
	return armed
}

// TestClaimRenewedWhileRunning: a request that runs longer than
// LockTimeout keeps its claim, renewed every LockTimeout/3: a duplicate
// after the first lock would have expired still gets 409 and does not
// run, and the first answer is stored and replayed. The store's clock and
// the renewal timer are the test's.
func TestClaimRenewedWhileRunning(t *testing.T) {
	c := &clock{now: time.Unix(0, 0)}
	timers := make(chan *fakeTimer, 4)
	restore := idempotency.SetAfterFunc(func(d time.Duration, f func()) idempotency.Timer {
		ft := &fakeTimer{d: d, f: f, armed: true}
		timers <- ft
		return ft
	})
	store := idempotency.NewMemoryStore(idempotency.MemoryOptions{Now: c.Now})
	var calls atomic.Int64
	arrived, hold := make(chan struct{}), make(chan struct{})
	up := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 { // the first is held; a duplicate that runs is not
			arrived <- struct{}{}
			<-hold
		}
		w.WriteHeader(http.StatusCreated)
	})
	url := newGateway(t, up, idempotency.Options{Store: store, LockTimeout: time.Minute})
	restore()

	done := make(chan answer, 1)
	go func() { done <- post(t, url, "alice", "k", "x") }()
	<-arrived
	ft := <-timers
	for range 3 { // 150s in all, 2.5 times the lock
		assert.Equal(t, 20*time.Second, ft.d, "renewed every LockTimeout/3")
		c.Add(50 * time.Second)
		require.True(t, ft.fire(), "the timer is started, and again after each renewal")
	}
	dup := post(t, url, "alice", "k", "x")
	assert.Equal(t, http.StatusConflict, dup.status, "the duplicate ran while the first still did")
	assert.Equal(t, int64(1), calls.Load())

	close(hold)
	assert.Equal(t, http.StatusCreated, (<-done).status)
	ft.mu.Lock()
	assert.True(t, ft.stopped, "renewals stopped with the request")
	ft.mu.Unlock()
	assert.False(t, ft.fire())
	after := post(t, url, "alice", "k", "x")
	assert.Equal(t, "true", after.header.Get("Idempotent-Replayed"))
	assert.Equal(t, int64(1), calls.Load())
	select {
	case <-timers:
		t.Error("a 409 or a replay renewed a claim")
	default:
	}
}

// TestClaimLostStopsRenewing: a request whose claim expired (not renewed
// in time: its store out of reach, say) and was taken by a duplicate stops
// renewing once it finds the other's claim, and neither ends that claim
// nor stores its own answer over it: the key stays the duplicate's, whose
// answer is the one stored.
func TestClaimLostStopsRenewing(t *testing.T) {
	c := &clock{now: time.Unix(0, 0)}
	timers := make(chan *fakeTimer, 4)
	restore := idempotency.SetAfterFunc(func(d time.Duration, f func()) idempotency.Timer {
		ft := &fakeTimer{d: d, f: f, armed: true}
		timers <- ft
		return ft
	})
	store := idempotency.NewMemoryStore(idempotency.MemoryOptions{Now: c.Now})
	var calls atomic.Int64
	arrived := make(chan struct{})
	holds := []chan struct{}{make(chan struct{}), make(chan struct{})}
	up := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		arrived <- struct{}{}
		<-holds[n-1]
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, "order "+strconv.FormatInt(n, 10))
	})
	logs := &logRecords{}
	gw := pylon.New(pylon.Options{})
	gw.Route("POST /orders").Use(authAs, idempotency.New(idempotency.Options{
		Store: store, LockTimeout: time.Minute, Logger: slog.New(logs),
	})).Handler(up)
	require.NoError(t, gw.Err())
	srv := httptest.NewServer(gw)
	t.Cleanup(srv.Close)
	restore()
	url := srv.URL + "/orders"

	first, second := make(chan answer, 1), make(chan answer, 1)
	go func() { first <- post(t, url, "alice", "k", "x") }()
	<-arrived
	ft := <-timers
	c.Add(2 * time.Minute) // the first's claim was not renewed in time
	go func() { second <- post(t, url, "alice", "k", "x") }()
	<-arrived // the duplicate took the key
	<-timers

	require.True(t, ft.fire())
	assert.False(t, ft.isArmed(), "the first's renewal found the other's claim, and did not start again")
	close(holds[0])
	assert.Equal(t, "order 1", (<-first).body)
	assert.Equal(t, http.StatusConflict, post(t, url, "alice", "k", "x").status,
		"the first's end released the duplicate's claim")
	close(holds[1])
	assert.Equal(t, "order 2", (<-second).body)
	replay := post(t, url, "alice", "k", "x")
	assert.Equal(t, "true", replay.header.Get("Idempotent-Replayed"))
	assert.Equal(t, "order 2", replay.body, "the first stored its answer over the duplicate's claim")
	assert.Equal(t, int64(2), calls.Load())

	var warned []string
	for _, r := range logs.all() {
		if r["level"] == "WARN" {
			warned = append(warned, r["msg"])
		}
	}
	assert.Len(t, warned, 2, "the lost claim, and the answer not stored: %v", warned)
}
