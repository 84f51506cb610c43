package traffic

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pylon-gateway/pylon"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// upstream starts a loopback server that answers after delay, or fails as
// told: "500" answers 500, "reset" closes the connection unanswered.
func upstream(t *testing.T, delay time.Duration, fail string) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(delay) // the upstream's service time, not a wait for an event
		switch fail {
		case "500":
			w.WriteHeader(http.StatusInternalServerError)
		case "reset":
			c, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				c.Close()
			}
		default:
			io.WriteString(w, "ok")
		}
	}))
	t.Cleanup(s.Close)
	return s
}

// latencies sends n GET requests from c concurrent clients to url and
// returns their latencies, sorted; any request that fails fails the test.
func latencies(t *testing.T, url string, n, c int) []time.Duration {
	t.Helper()
	tr := &http.Transport{MaxIdleConnsPerHost: c}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	out := make([]time.Duration, n)
	var next atomic.Int64
	var failed atomic.Int64
	var wg sync.WaitGroup
	for range c {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				start := time.Now()
				resp, err := client.Get(url)
				if err != nil {
					failed.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				out[i] = time.Since(start)
				if resp.StatusCode != http.StatusOK {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	require.Zero(t, failed.Load(), "primary requests failed")
	slices.Sort(out)
	return out
}

func pct(d []time.Duration, p float64) time.Duration { return d[int(float64(len(d)-1)*p)] }

// TestMirrorPrimaryLatency is the mirroring load figure: 2,000 requests
// from 8 concurrent clients over loopback through a Gateway whose primary
// upstream takes 2 ms, with no mirror, with a mirror to a shadow ten times
// slower (20 ms), and with a mirror to a shadow that answers 500 or resets
// the connection. The primary's p99 must stay within a loose bound of the
// unmirrored one (3× + 5 ms: a shadow that slowed the primary would add
// its 20 ms to every request); the figures are logged.
func TestMirrorPrimaryLatency(t *testing.T) {
	if testing.Short() {
		t.Skip("load figure; skipped in -short")
	}
	const n, c = 2000, 8
	primaryUp := upstream(t, 2*time.Millisecond, "")
	primary := pylon.MustNewBackend("primary", pylon.BackendOptions{Targets: []string{primaryUp.URL}})
	defer primary.Close()

	run := func(name string, shadowUp *httptest.Server) (p50, p99 time.Duration) {
		gw := pylon.New(pylon.Options{})
		var m *Mirror
		var sb *pylon.Backend
		if shadowUp != nil {
			sb = pylon.MustNewBackend("shadow", pylon.BackendOptions{Targets: []string{shadowUp.URL}})
			var err error
			// Room for every shadow request in flight (20 ms × ~4,000/s), so
			// that all are mirrored rather than dropped.
			m, err = NewMirror(sb, MirrorOptions{MaxConcurrent: 256})
			require.NoError(t, err)
			gw.Use(m.Middleware)
		}
		gw.Route("GET /").To(primary)
		require.NoError(t, gw.Err())
		front := httptest.NewServer(gw)
		latencies(t, front.URL, 200, c) // warm up connections
		d := latencies(t, front.URL, n, c)
		front.Close()
		if m != nil {
			m.Close()
			sb.Close()
			st := m.Stats()
			t.Logf("%-22s p50 %6.2f ms  p99 %6.2f ms  (mirrored %d, dropped %d)", name, ms(pct(d, .5)), ms(pct(d, .99)), st.Mirrored, st.Dropped)
			assert.NotZero(t, st.Mirrored)
		} else {
			t.Logf("%-22s p50 %6.2f ms  p99 %6.2f ms", name, ms(pct(d, .5)), ms(pct(d, .99)))
		}
		return pct(d, .5), pct(d, .99)
	}
	_, base99 := run("no mirror", nil)
	bound := 3*base99 + 5*time.Millisecond
	for _, tc := range []struct {
		name  string
		delay time.Duration
		fail  string
	}{
		{"shadow 10× slower", 20 * time.Millisecond, ""},
		{"shadow answers 500", 2 * time.Millisecond, "500"},
		{"shadow resets", 2 * time.Millisecond, "reset"},
	} {
		_, p99 := run(tc.name, upstream(t, tc.delay, tc.fail))
		assert.LessOrEqual(t, p99, bound, fmt.Sprintf("%s: primary p99 %v over 3× the unmirrored p99 + 5 ms", tc.name, p99))
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
