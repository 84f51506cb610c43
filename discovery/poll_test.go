package discovery

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pylon-gateway/pylon"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// scripted answers Resolve from a list, one answer per call.
type scripted struct {
	mu   sync.Mutex
	left []answer
}

type answer struct {
	res Result
	err error
}

func (s *scripted) Resolve(context.Context) (Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.left[0]
	if len(s.left) > 1 {
		s.left = s.left[1:]
	}
	return a.res, a.err
}

func TestPollWaitsFollowTTLWithinBounds(t *testing.T) {
	one := []pylon.Endpoint{{URL: "http://10.0.0.1"}}
	errDown := errors.New("down")
	src := &scripted{left: []answer{
		{res: Result{Endpoints: one}},                       // no TTL: Interval
		{res: Result{Endpoints: one, TTL: 2 * time.Second}}, // within bounds
		{res: Result{Endpoints: one, TTL: time.Nanosecond}}, // TTL 0: MinInterval
		{res: Result{Endpoints: one, TTL: 24 * time.Hour}},  // MaxInterval
		{err: errDown}, // Interval, reported
		{res: Result{Endpoints: one, TTL: 10 * time.Second}},
	}}
	p := Poll(src, PollOptions{Interval: 30 * time.Second, MinInterval: time.Second, MaxInterval: time.Minute, Jitter: 0.2}).(*poller)
	waits := make(chan time.Duration)
	tick := make(chan time.Time)
	p.after = func(d time.Duration) <-chan time.Time { waits <- d; return tick }

	ctx, cancel := context.WithCancel(context.Background())
	var updates, reports int
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.Watch(ctx, func([]pylon.Endpoint) { updates++ }, func(err error) {
			assert.ErrorIs(t, err, errDown)
			reports++
		})
	}()
	for i, want := range []time.Duration{30 * time.Second, 2 * time.Second, time.Second, time.Minute, 30 * time.Second, 10 * time.Second} {
		got := <-waits
		assert.True(t, got <= want && got >= want*8/10, "wait %d: %v, want %v less at most 20%% jitter", i, got, want)
		if i < 5 {
			tick <- time.Time{}
		}
	}
	cancel()
	<-done
	assert.Equal(t, 5, updates)
	assert.Equal(t, 1, reports, "one report per failed refresh")
}

func TestPollDefaults(t *testing.T) {
	p := Poll(&scripted{}, PollOptions{Jitter: -1}).(*poller)
	assert.Equal(t, 30*time.Second, p.wait(0, nil))
	assert.Equal(t, time.Second, p.wait(time.Nanosecond, nil))
	assert.Equal(t, 5*time.Minute, p.wait(time.Hour, nil))
	assert.Equal(t, 30*time.Second, p.wait(time.Hour, errors.New("x")))
}

// pushed is a Source that sends the sets it is given.
type pushed chan []pylon.Endpoint

func (p pushed) Watch(ctx context.Context, update func([]pylon.Endpoint), report func(error)) {
	for {
		select {
		case <-ctx.Done():
			return
		case eps := <-p:
			if eps == nil {
				report(errors.New("registry down"))
				continue
			}
			update(eps)
		}
	}
}

func TestKeep(t *testing.T) {
	b, err := pylon.NewBackend("orders", pylon.BackendOptions{Targets: []string{"http://10.0.0.1"}})
	require.NoError(t, err)
	defer b.Close()
	src := make(pushed)
	applied := make(chan []pylon.Endpoint, 8)
	k := Keep(b, src, Options{OnUpdate: func(eps []pylon.Endpoint) { applied <- eps }})
	defer k.Stop()

	set := []pylon.Endpoint{{URL: "http://10.0.0.3"}, {URL: "http://10.0.0.2", Weight: 2}, {URL: "http://10.0.0.2", Weight: 1}}
	src <- set
	got := <-applied
	assert.Equal(t, []pylon.Endpoint{{URL: "http://10.0.0.2", Weight: 3}, {URL: "http://10.0.0.3"}}, got, "sorted, duplicates merged")
	assert.Equal(t, got, k.Endpoints())

	src <- []pylon.Endpoint{{URL: "http://10.0.0.3"}, {URL: "http://10.0.0.2", Weight: 3}} // the same set
	src <- []pylon.Endpoint{}                                                              // empty: ignored
	src <- nil                                                                             // an error: reported
	src <- []pylon.Endpoint{{URL: "ftp://bad"}}                                            // refused
	src <- []pylon.Endpoint{{URL: "http://10.0.0.4"}}
	got = <-applied
	assert.Equal(t, []pylon.Endpoint{{URL: "http://10.0.0.4"}}, got, "only changes are applied")
	assert.Len(t, applied, 0)
	assert.NoError(t, k.Err())
	assert.Equal(t, []string{"http://10.0.0.4"}, urlsOf(b))

	src <- []pylon.Endpoint{}
	src <- []pylon.Endpoint{{URL: "http://10.0.0.4"}} // sync: the empty set was handled
	assert.Equal(t, []string{"http://10.0.0.4"}, urlsOf(b), "an empty set keeps the last good one")
	k.Stop()
	k.Stop() // idempotent

	k = Keep(b, src, Options{AllowEmpty: true})
	src <- []pylon.Endpoint{}
	src <- []pylon.Endpoint{} // sync
	k.Stop()
	assert.Empty(t, b.Targets(), "AllowEmpty empties the backend")
}

// lockedBuffer is a log sink the Keeper's goroutine writes while the test
// reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestKeepFeedsABackendBuiltEmpty: "point a Backend at a DNS name" needs no
// placeholder target. A Backend built with no Targets answers 503 with
// Retry-After through a Gateway while the source fails or finds nothing
// (there is no good set to keep yet, and the logs say so), serves the first
// set found, and then keeps it through an empty answer.
func TestKeepFeedsABackendBuiltEmpty(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "orders") }))
	t.Cleanup(up.Close)
	b, err := pylon.NewBackend("orders", pylon.BackendOptions{})
	require.NoError(t, err)
	defer b.Close()
	gw := pylon.New(pylon.Options{})
	gw.Route("/orders/").To(b)
	require.NoError(t, gw.Err())
	front := httptest.NewServer(gw)
	t.Cleanup(front.Close)
	get := func() (*http.Response, string) {
		t.Helper()
		res, err := http.Get(front.URL + "/orders/1")
		require.NoError(t, err)
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		require.NoError(t, err)
		return res, string(body)
	}

	src := make(pushed)
	applied := make(chan []pylon.Endpoint, 4)
	logs := &lockedBuffer{}
	k := Keep(b, src, Options{Logger: slog.New(slog.NewTextHandler(logs, nil)), OnUpdate: func(eps []pylon.Endpoint) { applied <- eps }})
	defer k.Stop()

	src <- nil                // the first refresh fails
	src <- []pylon.Endpoint{} // then the name has no record
	waitFor(t, "the empty answer", func() bool { return errors.Is(k.Err(), ErrEmpty) })
	res, body := get()
	assert.Equal(t, http.StatusServiceUnavailable, res.StatusCode)
	assert.Equal(t, pylon.ProblemContentType, res.Header.Get("Content-Type"))
	assert.Equal(t, "1", res.Header.Get("Retry-After"))
	assert.NotContains(t, body, "pylon:")
	assert.Nil(t, k.Endpoints(), "no set applied yet")
	assert.NotContains(t, logs.String(), "last good set", "there is none yet")
	assert.Contains(t, logs.String(), "no targets")

	src <- []pylon.Endpoint{{URL: up.URL}}
	assert.Equal(t, []pylon.Endpoint{{URL: up.URL}}, <-applied)
	res, body = get()
	assert.Equal(t, http.StatusOK, res.StatusCode)
	assert.Equal(t, "orders", body)

	src <- []pylon.Endpoint{}              // an empty answer now keeps the last good set
	src <- []pylon.Endpoint{{URL: up.URL}} // sync: the empty set was handled
	res, _ = get()
	assert.Equal(t, http.StatusOK, res.StatusCode)
	assert.Len(t, applied, 0, "nothing else applied")
}
