package pylon

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRetryNotSentPastDeadline: a retry that the route's remaining deadline
// cannot fit (backoff + TryTimeout) is not sent; the client gets the
// upstream's 503 at once, not a 504 after a useless attempt.
func TestRetryNotSentPastDeadline(t *testing.T) {
	var hits atomic.Int64
	h := func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	u1, u2 := upstream(t, h), upstream(t, h)
	for _, tc := range []struct {
		name     string
		timeout  time.Duration
		wantHits int64
	}{
		{"no deadline retries", 0, 2},
		{"deadline too short", 100 * time.Millisecond, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hits.Store(0)
			g := New(Options{})
			r := g.Route("/")
			if tc.timeout > 0 {
				r.Timeout(tc.timeout)
			}
			r.To(backend(t, BackendOptions{
				Targets: []string{u1.URL, u2.URL}, Retries: 1, RetryOnStatus: true,
				RetryBackoff: time.Millisecond, TryTimeout: 200 * time.Millisecond,
			}))
			gw := httptest.NewServer(g)
			defer gw.Close()
			began := time.Now()
			res, err := http.Get(gw.URL + "/x")
			require.NoError(t, err)
			res.Body.Close()
			assert.Equal(t, http.StatusServiceUnavailable, res.StatusCode)
			assert.Equal(t, tc.wantHits, hits.Load())
			if tc.timeout > 0 {
				assert.Less(t, time.Since(began), tc.timeout, "answered before the deadline")
			}
		})
	}
}

// TestDialRetryNotSentPastDeadline: the same for a connection error, answered
// 502 at once.
func TestDialRetryNotSentPastDeadline(t *testing.T) {
	refused := closedAddr(t)
	g := New(Options{})
	g.Route("/").Timeout(100 * time.Millisecond).To(backend(t, BackendOptions{
		Targets: []string{refused, refused + "/b"}, Retries: 3,
		RetryBackoff: time.Millisecond, TryTimeout: 500 * time.Millisecond,
	}))
	gw := httptest.NewServer(g)
	defer gw.Close()
	res, err := http.Get(gw.URL + "/x")
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, http.StatusBadGateway, res.StatusCode)
}

// TestDeadlineHeader: each attempt carries its remaining deadline in the
// named header, computed per attempt, and the client's value never passes.
func TestDeadlineHeader(t *testing.T) {
	var got [2]string
	var n atomic.Int64
	u := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		i := n.Add(1) - 1
		if i < 2 {
			got[i] = r.Header.Get("X-Deadline-Ms")
		}
		if i == 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	g := New(Options{})
	g.Route("/").Timeout(2 * time.Second).To(backend(t, BackendOptions{
		Targets: []string{u.URL, u.URL + "/b"}, Retries: 1, RetryOnStatus: true,
		RetryBackoff: 100 * time.Millisecond, RetryMaxBackoff: 100 * time.Millisecond,
		DeadlineHeader: "x-deadline-ms",
	}))
	gw := httptest.NewServer(g)
	defer gw.Close()
	req, _ := http.NewRequest("GET", gw.URL+"/x", nil)
	req.Header.Set("X-Deadline-Ms", "999999")
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode)
	first, err := strconv.Atoi(got[0])
	require.NoError(t, err, "first attempt's header %q", got[0])
	second, err := strconv.Atoi(got[1])
	require.NoError(t, err, "second attempt's header %q", got[1])
	assert.LessOrEqual(t, first, 2000)
	assert.Greater(t, first, 1500)
	assert.Less(t, second, first, "computed per attempt")

	// Without a deadline no header goes upstream, not even the client's.
	n.Store(1) // answer 200 at once
	got[1] = "unset"
	g2 := New(Options{})
	g2.Route("/").To(backend(t, BackendOptions{Targets: []string{u.URL}, DeadlineHeader: "X-Deadline-Ms"}))
	gw2 := httptest.NewServer(g2)
	defer gw2.Close()
	req, _ = http.NewRequest("GET", gw2.URL+"/x", nil)
	req.Header.Set("X-Deadline-Ms", "999999")
	res, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, "", got[1])
}
