package pylonredis

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/pylon-gateway/pylon/breaker"
	"github.com/pylon-gateway/pylon/cache"
	"github.com/pylon-gateway/pylon/ratelimit"
)

// loopbackPort returns a loopback port that was free a moment ago.
func loopbackPort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startCluster starts a Redis Cluster of n masters (no replicas) on free
// loopback ports, assigns the slots with redis-cli --cluster create, and
// waits until every node reports cluster_state:ok. The processes are
// killed when the test ends.
func startCluster(t testing.TB, n int) []string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server not found (apt-get install redis-server): %v", err)
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Fatalf("redis-cli not found (apt-get install redis-tools): %v", err)
	}
	dir := t.TempDir()
	addrs := make([]string, n)
	for i := range n {
		port, bus := loopbackPort(t), loopbackPort(t)
		addrs[i] = "127.0.0.1:" + strconv.Itoa(port)
		nd := filepath.Join(dir, strconv.Itoa(i))
		cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--cluster-port", strconv.Itoa(bus), "--bind", "127.0.0.1",
			"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(dir, fmt.Sprintf("nodes-%d.conf", i)),
			"--save", "", "--appendonly", "no", "--dir", dir, "--logfile", nd+".log")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })
	}
	for _, a := range addrs {
		c := goredis.NewClient(&goredis.Options{Addr: a, MaxRetries: -1})
		waitFor(t, "node "+a, 10*time.Second, func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			return c.Ping(ctx).Err() == nil
		})
		c.Close()
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, a := range addrs {
		c := goredis.NewClient(&goredis.Options{Addr: a})
		waitFor(t, "cluster_state:ok on "+a, 20*time.Second, func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			info, err := c.ClusterInfo(ctx).Result()
			return err == nil && strings.Contains(info, "cluster_state:ok")
		})
		c.Close()
	}
	return addrs
}

// On a real 3-master cluster: purges reach every master and never send a
// multi-slot command; the rate-limit script is on every master as soon as
// the store exists, and limits are exact per key across slots; the breaker
// store works.
func TestCluster(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
	addrs := startCluster(t, 3)
	cc := goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: addrs, ContextTimeoutEnabled: true})
	t.Cleanup(func() { cc.Close() })
	ctx := context.Background()
	waitFor(t, "client sees 3 masters", 10*time.Second, func() bool {
		var n atomic.Int32
		err := cc.ForEachMaster(ctx, func(ctx context.Context, c *goredis.Client) error { n.Add(1); return nil })
		return err == nil && n.Load() == 3 && cc.Ping(ctx).Err() == nil
	})

	t.Run("cache purge", func(t *testing.T) {
		s, err := NewCacheStore(cc, CacheStoreOptions{Prefix: "pylon:cluster:", Timeout: time.Second, ScanCount: 3})
		if err != nil {
			t.Fatal(err)
		}
		e := new(cache.Entry)
		for i := range 12 {
			if err := s.Set(ctx, fmt.Sprintf("GET /a/%d", i), e, time.Minute); err != nil {
				t.Fatal(err)
			}
			if err := s.Set(ctx, fmt.Sprintf("GET /b/%d", i), e, time.Minute); err != nil {
				t.Fatal(err)
			}
		}
		// The keys are spread over the masters.
		var spread atomic.Int32
		_ = cc.ForEachMaster(ctx, func(ctx context.Context, c *goredis.Client) error {
			if n, _ := c.DBSize(ctx).Result(); n > 0 {
				spread.Add(1)
			}
			return nil
		})
		if spread := spread.Load(); spread < 2 {
			t.Fatalf("keys on %d masters, want several", spread)
		}
		n, err := s.DeletePrefix(ctx, "GET /a/")
		if err != nil || n != 12 {
			t.Fatalf("DeletePrefix: %d, %v; want 12", n, err)
		}
		exists := func(key string) bool {
			n, err := cc.Exists(ctx, s.prefix+key).Result()
			if err != nil {
				t.Fatal(err)
			}
			return n == 1
		}
		for i := range 12 {
			if exists(fmt.Sprintf("GET /a/%d", i)) {
				t.Fatalf("entry a/%d still there after purge", i)
			}
			if !exists(fmt.Sprintf("GET /b/%d", i)) {
				t.Fatalf("entry b/%d purged too", i)
			}
		}
		if n, err := s.DeletePrefix(ctx, ""); err != nil || n != 12 {
			t.Fatalf("DeletePrefix(all): %d, %v; want 12", n, err)
		}
	})

	t.Run("rate limit", func(t *testing.T) {
		s, err := NewRateLimitStore(cc, RateLimitOptions{Prefix: "pylon:cluster:rl:", Timeout: time.Second, OnFailure: FailClosed})
		if err != nil {
			t.Fatal(err)
		}
		// Loaded on every master at start: no cold-start EVAL.
		err = cc.ForEachMaster(ctx, func(ctx context.Context, c *goredis.Client) error {
			ok, err := c.ScriptExists(ctx, gcraScript.Hash()).Result()
			if err != nil || !ok[0] {
				return fmt.Errorf("script not loaded on %s: %v", c.Options().Addr, err)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		limits, err := ratelimit.PrepareLimits(ratelimit.PerMinute(5), ratelimit.PerHour(100))
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		for k := range 12 {
			admitted := 0
			for range 8 {
				d, err := s.Allow(ctx, fmt.Sprintf("ip:198.51.100.%d", k), limits, now)
				if err != nil {
					t.Fatal(err)
				}
				if d.Allowed {
					admitted++
				}
			}
			if admitted != 5 {
				t.Fatalf("key %d: admitted %d, want exactly 5", k, admitted)
			}
		}
	})

	t.Run("breaker", func(t *testing.T) {
		s := mustBreakerStore(t, cc, BreakerStoreOptions{Prefix: "pylon:cluster:br:", Timeout: time.Second})
		pol := breaker.SharedPolicy{ConsecutiveFailures: 2, Window: time.Second, Buckets: 1, OpenDuration: time.Minute, MaxRequests: 1}
		for i := range 6 {
			name := fmt.Sprintf("b%d", i)
			st, err := s.Sync(ctx, name, breaker.SyncRequest{Policy: pol, Failures: 2, TrailingFailures: 2})
			if err != nil || st.State != breaker.StateOpen {
				t.Fatalf("%s: %+v, %v", name, st, err)
			}
		}
	})
}
