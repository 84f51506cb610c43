package pylonredis

import (
	"context"
	"log/slog"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/pylon-gateway/pylon/breaker"
	"github.com/pylon-gateway/pylon/ratelimit"
)

// countLogs counts the records logged through it.
type countLogs struct {
	slog.Handler
	n *atomic.Int64
}

func (h countLogs) Enabled(context.Context, slog.Level) bool { return true }

func (h countLogs) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		h.n.Add(1)
	}
	return nil
}

// Every store, with Redis frozen or killed: the first failures cost at
// most the timeout, then the store fails fast (p50 within 1ms) and logs
// once; once Redis is back, the store calls it again within one probe
// interval.
func TestFastFail(t *testing.T) {
	const timeout = 30 * time.Millisecond
	const backoff = 200 * time.Millisecond
	const slack = 100 * time.Millisecond // scheduling under -race on a busy machine
	ff := FastFail{After: 3, Backoff: backoff}
	limits, err := ratelimit.PrepareLimits(ratelimit.PerSecond(1000))
	if err != nil {
		t.Fatal(err)
	}
	stores := []struct {
		name string
		make func(c *goredis.Client, log *slog.Logger) (op func() error, down func() bool, failures func() uint64)
	}{
		{"ratelimit", func(c *goredis.Client, log *slog.Logger) (func() error, func() bool, func() uint64) {
			s, err := NewRateLimitStore(c, RateLimitOptions{Timeout: timeout, OnFailure: FailClosed, FastFail: ff, Logger: log, LogInterval: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			return func() error {
				_, err := s.Allow(context.Background(), "k", limits, time.Now())
				return err
			}, s.Down, s.Failures
		}},
		{"cache", func(c *goredis.Client, log *slog.Logger) (func() error, func() bool, func() uint64) {
			s, err := NewCacheStore(c, CacheStoreOptions{Timeout: timeout, FastFail: ff, Logger: log, LogInterval: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			return func() error {
				_, err := s.Get(context.Background(), "k")
				return err
			}, s.Down, s.Failures
		}},
		{"breaker", func(c *goredis.Client, log *slog.Logger) (func() error, func() bool, func() uint64) {
			s := mustBreakerStore(t, c, BreakerStoreOptions{Timeout: timeout, FastFail: ff, Logger: log, LogInterval: time.Hour})
			pol := breaker.SharedPolicy{ConsecutiveFailures: 5, Window: time.Second, Buckets: 1, OpenDuration: time.Second, MaxRequests: 1}
			return func() error {
				_, err := s.Sync(context.Background(), "b", breaker.SyncRequest{Policy: pol})
				return err
			}, s.Down, s.Failures
		}},
	}
	for _, outage := range []string{"frozen", "killed"} {
		for _, st := range stores {
			t.Run(outage+"/"+st.name, func(t *testing.T) {
				proc, sock := breakerRedisProc(t)
				var logs atomic.Int64
				c := goredis.NewClient(&goredis.Options{Network: "unix", Addr: sock, ContextTimeoutEnabled: true,
					MaxRetries: -1, DialTimeout: timeout})
				t.Cleanup(func() { c.Close() })
				op, down, failures := st.make(c, slog.New(countLogs{slog.DiscardHandler, &logs}))
				if err := op(); err != nil {
					t.Fatalf("healthy: %v", err)
				}
				if outage == "frozen" {
					_ = proc.Signal(syscall.SIGSTOP)
				} else {
					_ = proc.Kill()
					_, _ = proc.Wait()
				}
				for i := range 3 {
					start := time.Now()
					if err := op(); err == nil {
						t.Fatalf("failure %d: no error", i)
					}
					if took := time.Since(start); took > timeout+slack {
						t.Fatalf("failure %d took %v, want within the %v timeout", i, took, timeout)
					}
				}
				if !down() {
					t.Fatal("not failing fast after 3 failures")
				}
				lat := make([]time.Duration, 0, 200)
				for range 200 {
					start := time.Now()
					if err := op(); err == nil {
						t.Fatal("no error while down")
					}
					lat = append(lat, time.Since(start))
				}
				slices.Sort(lat)
				p50 := lat[len(lat)/2]
				t.Logf("outage p50 %v, p99 %v", p50, lat[len(lat)*99/100])
				if p50 > time.Millisecond {
					t.Fatalf("p50 %v during the outage, want within 1ms", p50)
				}
				if failures() < 203 {
					t.Fatalf("Failures() = %d, want at least 203", failures())
				}
				back := time.Now()
				if outage == "frozen" {
					_ = proc.Signal(syscall.SIGCONT)
				} else {
					redisOnSocket(t, sock)
					back = time.Now()
				}
				waitFor(t, "recovery", 5*time.Second, func() bool { return op() == nil })
				took := time.Since(back)
				t.Logf("recovered %v after Redis came back (probe interval %v)", took, backoff)
				// A restarted Redis may wait for go-redis's own dial
				// breaker too: after PoolSize failed dials it dials again
				// once a second.
				want := backoff + timeout + slack
				if outage == "killed" {
					want += time.Second
				}
				if took > want {
					t.Fatalf("recovery took %v, want within %v (one probe interval is %v)", took, want, backoff)
				}
				if down() {
					t.Fatal("still failing fast after recovery")
				}
				if logs.Load() != 1 {
					t.Fatalf("%d failure reports, want 1 per interval", logs.Load())
				}
			})
		}
	}
}
