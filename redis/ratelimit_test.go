package pylonredis_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pylon-gateway/pylon/ratelimit"
	pylonredis "github.com/pylon-gateway/pylon/redis"
)

var epoch = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// prefix returns a key prefix private to this test run.
func prefix(t testing.TB) string {
	return "pylontest:" + strings.NewReplacer("/", ":", " ", "_").Replace(t.Name()) + ":" + strconv.FormatUint(rand.Uint64(), 36) + ":"
}

func mustPrepare(t testing.TB, limits ...ratelimit.Limit) []ratelimit.Limit {
	t.Helper()
	p, err := ratelimit.PrepareLimits(limits...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func newStore(t testing.TB, c redis.Scripter, opts pylonredis.RateLimitOptions) *pylonredis.RateLimitStore {
	t.Helper()
	if opts.Prefix == "" {
		opts.Prefix = prefix(t)
	}
	s, err := pylonredis.NewRateLimitStore(c, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The Redis store makes exactly the decisions of the in-memory store.
func TestSameDecisionsAsMemoryStore(t *testing.T) {
	tests := []struct {
		name   string
		limits []ratelimit.Limit
	}{
		{"one limit", []ratelimit.Limit{ratelimit.PerSecond(10).WithBurst(3)}},
		{"two limits", []ratelimit.Limit{ratelimit.PerSecond(5), ratelimit.PerMinute(30).WithBurst(10)}},
		{"hourly", []ratelimit.Limit{ratelimit.PerHour(7).WithBurst(2)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			limits := mustPrepare(t, tt.limits...)
			rs := newStore(t, newClient(t, sharedAddr), pylonredis.RateLimitOptions{OnFailure: pylonredis.FailClosed, Timeout: time.Second})
			ms := ratelimit.NewMemoryStore(ratelimit.MemoryOptions{})
			rng := rand.New(rand.NewPCG(3, 4))
			now := epoch
			for i := 0; i < 400; i++ {
				now = now.Add(time.Duration(rng.IntN(400_000)) * time.Microsecond)
				key := "k" + strconv.Itoa(rng.IntN(3))
				got, err := rs.Allow(context.Background(), key, limits, now)
				if err != nil {
					t.Fatal(err)
				}
				want := ms.AllowAt(key, limits, now)
				if got != want {
					t.Fatalf("request %d (%s at %v):\nredis  %+v\nmemory %+v", i, key, now.Sub(epoch), got, want)
				}
			}
		})
	}
}

// Two gateway instances, each with its own client, share one Redis and are
// hammered concurrently: together they admit the configured limit, not
// twice it.
func TestSharedLimitTwoInstances(t *testing.T) {
	limit := ratelimit.PerSecond(50).WithBurst(20)
	pfx := prefix(t)
	var clock atomic.Int64 // injected time, in ns since epoch, shared by both
	now := func() time.Time { return epoch.Add(time.Duration(clock.Load())) }
	var gateways [2]http.Handler
	for i := range gateways {
		store := newStore(t, newClient(t, sharedAddr), pylonredis.RateLimitOptions{Prefix: pfx, OnFailure: pylonredis.FailClosed, Timeout: 2 * time.Second})
		gateways[i] = ratelimit.MustNewWithOptions(ratelimit.Options{
			Limits: []ratelimit.Limit{limit},
			Key:    ratelimit.ByHeader("X-API-Key", ratelimit.CaseSensitive),
			Store:  store,
			Now:    now,
		})(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	}
	// The clock moves 100ms per phase (5 requests' worth), and each phase
	// makes 40 attempts, far over what it refills.
	const phases, workers, perWorker, step = 40, 8, 5, 100 * time.Millisecond
	var admitted, errs atomic.Int64
	for phase := 0; phase < phases; phase++ {
		clock.Store(int64(phase) * int64(step))
		var wg sync.WaitGroup
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func(gw http.Handler) {
				defer wg.Done()
				for i := 0; i < perWorker; i++ {
					r := httptest.NewRequest("GET", "/", nil)
					r.Header.Set("X-API-Key", "shared-client")
					rec := httptest.NewRecorder()
					gw.ServeHTTP(rec, r)
					switch rec.Code {
					case 200:
						admitted.Add(1)
					case 429:
					default:
						errs.Add(1)
					}
				}
			}(gateways[w%2])
		}
		wg.Wait()
	}
	if errs.Load() != 0 {
		t.Fatalf("%d requests failed", errs.Load())
	}
	// The burst at t=0, then 50 per second for the 3.9s that followed.
	want := int64(20 + 5*(phases-1))
	if got := admitted.Load(); got < want-20 || got > want+20 {
		t.Fatalf("admitted %d together, want %d ± burst (one instance alone would allow the same)", got, want)
	}
	t.Logf("two instances admitted %d of %d attempts; limit allows %d", admitted.Load(), phases*workers*perWorker, want)
}

// The buckets of one request share a Cluster hash tag and carry a TTL.
func TestKeysHashTagAndTTL(t *testing.T) {
	c := newClient(t, sharedAddr)
	pfx := prefix(t)
	s := newStore(t, c, pylonredis.RateLimitOptions{Prefix: pfx, OnFailure: pylonredis.FailClosed, Timeout: time.Second})
	limits := mustPrepare(t, ratelimit.PerSecond(10).Named("fast"), ratelimit.PerHour(100).Named("slow"))
	if _, err := s.Allow(context.Background(), "ip:192.0.2.1", limits, time.Now()); err != nil {
		t.Fatal(err)
	}
	keys, err := c.Keys(context.Background(), pfx+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{pfx + "{ip:192.0.2.1}:fast": true, pfx + "{ip:192.0.2.1}:slow": true}
	if len(keys) != 2 || !want[keys[0]] || !want[keys[1]] {
		t.Fatalf("keys %v, want %v", keys, want)
	}
	for _, k := range keys {
		ttl, err := c.PTTL(context.Background(), k).Result()
		if err != nil || ttl <= 0 || ttl > 36*time.Second {
			t.Fatalf("%s: TTL %v (%v), want within (0, 36s]", k, ttl, err)
		}
	}
	if _, err := pylonredis.NewRateLimitStore(c, pylonredis.RateLimitOptions{Prefix: "bad{"}); err == nil {
		t.Fatal("prefix with a brace accepted")
	}
}

func TestClientWithoutContextTimeoutRejected(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: sharedAddr})
	defer c.Close()
	if _, err := pylonredis.NewRateLimitStore(c, pylonredis.RateLimitOptions{}); !errors.Is(err, pylonredis.ErrContextTimeoutDisabled) {
		t.Fatalf("err = %v, want ErrContextTimeoutDisabled", err)
	}
}

// countingHandler counts log records.
type countingHandler struct {
	slog.Handler
	n *atomic.Int64
}

func (h countingHandler) Handle(ctx context.Context, r slog.Record) error {
	h.n.Add(1)
	return h.Handler.Handle(ctx, r)
}

// Redis stopped or hung mid-test: each policy behaves as documented within
// the timeout, failures are counted and logged once, and decisions come
// from Redis again once it is back.
func TestOutagePolicies(t *testing.T) {
	const timeout = 50 * time.Millisecond
	const slack = 250 * time.Millisecond // scheduling under -race on a busy machine
	tests := []struct {
		policy pylonredis.FailurePolicy
		// check verifies the decisions made during the outage.
		check func(t *testing.T, ds []ratelimit.Decision, errs []error)
	}{
		{pylonredis.FailOpen, func(t *testing.T, ds []ratelimit.Decision, errs []error) {
			for i := range ds {
				if errs[i] != nil || !ds[i].Allowed || ds[i].Known {
					t.Fatalf("decision %d: %+v, %v; want allowed, undecided, no error", i, ds[i], errs[i])
				}
			}
		}},
		{pylonredis.FailClosed, func(t *testing.T, ds []ratelimit.Decision, errs []error) {
			for i := range ds {
				if !errors.Is(errs[i], pylonredis.ErrUnavailable) {
					t.Fatalf("decision %d: err %v, want ErrUnavailable", i, errs[i])
				}
			}
		}},
		{pylonredis.FallbackLocal, func(t *testing.T, ds []ratelimit.Decision, errs []error) {
			admitted := 0
			for i := range ds {
				if errs[i] != nil || !ds[i].Known {
					t.Fatalf("decision %d: %+v, %v; want a local decision", i, ds[i], errs[i])
				}
				if ds[i].Allowed {
					admitted++
				}
			}
			if admitted != 3 { // the local limiter's burst, at one instant
				t.Fatalf("local fallback admitted %d, want 3", admitted)
			}
		}},
	}
	outages := []struct {
		name          string
		begin, finish func(srv **redisServer, t *testing.T)
	}{
		{"killed", func(srv **redisServer, t *testing.T) { (*srv).stop() }, func(srv **redisServer, t *testing.T) {
			var err error
			addr := (*srv).addr
			if *srv, err = startRedis(addr); err != nil {
				t.Fatal(err)
			}
			t.Cleanup((*srv).stop)
		}},
		{"hung", func(srv **redisServer, t *testing.T) { (*srv).pause() }, func(srv **redisServer, t *testing.T) { (*srv).resume() }},
	}
	limits := mustPrepare(t, ratelimit.PerMinute(60).WithBurst(3))
	for _, o := range outages {
		for _, tt := range tests {
			t.Run(o.name+"/"+tt.policy.String(), func(t *testing.T) {
				srv := ownRedis(t)
				t.Cleanup(func() { srv.resume(); srv.stop() })
				var logs atomic.Int64
				var buf bytes.Buffer
				logger := slog.New(countingHandler{slog.NewTextHandler(&buf, nil), &logs})
				c := newClient(t, srv.addr)
				s := newStore(t, c, pylonredis.RateLimitOptions{OnFailure: tt.policy, Timeout: timeout, Logger: logger, LogInterval: time.Hour,
					FastFail: pylonredis.FastFail{Backoff: 50 * time.Millisecond}})
				ctx := context.Background()
				if d, err := s.Allow(ctx, "before", limits, epoch); err != nil || !d.Known || !d.Allowed {
					t.Fatalf("healthy: %+v, %v", d, err)
				}

				o.begin(&srv, t)
				var ds []ratelimit.Decision
				var errs []error
				for i := 0; i < 6; i++ {
					start := time.Now()
					d, err := s.Allow(ctx, "during", limits, epoch)
					if took := time.Since(start); took > timeout+slack {
						t.Fatalf("decision %d took %v, want within the %v timeout", i, took, timeout)
					}
					ds, errs = append(ds, d), append(errs, err)
				}
				tt.check(t, ds, errs)
				if s.Failures() != 6 {
					t.Fatalf("Failures() = %d, want 6", s.Failures())
				}
				if logs.Load() != 1 {
					t.Fatalf("%d failure reports, want 1 per interval:\n%s", logs.Load(), buf.String())
				}
				if strings.Contains(buf.String(), "during") {
					t.Fatalf("log holds a client key: %s", buf.String())
				}

				o.finish(&srv, t)
				// Recovered: decisions come from Redis again. Connections
				// broken by the outage may fail once more; poll briefly.
				deadline := time.Now().Add(5 * time.Second)
				for {
					f := s.Failures()
					d, err := s.Allow(ctx, "after", limits, epoch)
					if err == nil && d.Known && s.Failures() == f {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("no recovery: %+v, %v (failures %d)", d, err, s.Failures())
					}
				}
				// The key written before the outage is still counted.
				d, err := s.Allow(ctx, "before", limits, epoch)
				if err != nil || !d.Known || d.Results[0].Remaining != 1 {
					if o.name != "killed" { // a killed Redis without persistence forgets
						t.Fatalf("after recovery: %+v, %v; want 1 remaining", d, err)
					}
				}
			})
		}
	}
}
