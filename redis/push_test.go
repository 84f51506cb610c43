package pylonredis

import (
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/pylon-gateway/pylon/breaker"
)

// pushPair is one trial: a breaker on replica a's store that trips, and
// one of the same name on replica b's store, which must learn it by push.
// b never syncs on its own (SyncInterval 1h), so only a push can tell it.
func pushTrial(t *testing.T, sa, sb *BreakerStore, name string) time.Duration {
	t.Helper()
	opened := make(chan time.Time, 1)
	set := breaker.Settings{Name: name, ConsecutiveFailures: 1, OpenDuration: time.Hour}
	a := sharedBreaker(t, sa, set)
	setB := set
	setB.SyncInterval = time.Hour
	setB.OnStateChange = func(_ string, _, to breaker.State) {
		if to == breaker.StateOpen {
			select {
			case opened <- time.Now():
			default:
			}
		}
	}
	b := sharedBreaker(t, sb, setB)
	defer a.Close()
	defer b.Close()
	hb := b.Middleware(newCounter(200))
	// b has made its first Sync (it knows the closed state, generation 0).
	waitFor(t, "b's first sync", time.Second, func() bool { w, _ := send(hb); return w.Code == 200 })

	ha := a.Middleware(newCounter(502))
	start := time.Now()
	send(ha)
	select {
	case at := <-opened:
		if w, info := send(hb); w.Code != http.StatusServiceUnavailable || info.Breaker != "open" {
			t.Fatalf("%s: b told open but answers %d (%s)", name, w.Code, info.Breaker)
		}
		return at.Sub(start)
	case <-time.After(2 * time.Second):
		t.Fatalf("%s: the trip did not reach b within 2s", name)
		return 0
	}
}

// An open state is pushed to the other replica: over many trips, p99 within
// 100ms (the bound) and typically a few ms.
func TestBreakerPushLatency(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
	network, addr := breakerRedis(t)
	prefix := breakerPrefix()
	sa := mustBreakerStore(t, breakerClient(t, network, addr), BreakerStoreOptions{Prefix: prefix})
	sb := mustBreakerStore(t, breakerClient(t, network, addr), BreakerStoreOptions{Prefix: prefix})
	// One breaker keeps b's subscription up across trials, as in a gateway.
	keep := sharedBreaker(t, sb, breaker.Settings{Name: "keep"})
	waitFor(t, "subscription", 2*time.Second, func() bool { return sb.subscriptions() >= 1 })
	const trials = 200
	lat := make([]time.Duration, 0, trials)
	for i := range trials {
		lat = append(lat, pushTrial(t, sa, sb, fmt.Sprintf("push%d", i)))
	}
	keep.Close()
	slices.Sort(lat)
	p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
	t.Logf("trip to the other replica's open state, %d trials: p50 %v, p99 %v, max %v", trials, p50, p99, lat[len(lat)-1])
	if p99 > 100*time.Millisecond {
		t.Fatalf("p99 %v, want within 100ms", p99)
	}
}

// A subscription lost with Redis (killed and restarted) comes back by
// itself, and pushes reach the other replica again.
func TestBreakerPushSurvivesRestart(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
	sock := filepath.Join(t.TempDir(), "redis.sock")
	stop := restartableRedis(t, sock)
	ca, cb := breakerClient(t, "unix", sock), breakerClient(t, "unix", sock)
	prefix := breakerPrefix()
	sa := mustBreakerStore(t, ca, BreakerStoreOptions{Prefix: prefix})
	sb := mustBreakerStore(t, cb, BreakerStoreOptions{Prefix: prefix})
	keep := sharedBreaker(t, sb, breaker.Settings{Name: "keep"})
	defer keep.Close()
	waitFor(t, "subscription", 2*time.Second, func() bool { return sb.subscriptions() >= 1 })
	pushTrial(t, sa, sb, "before")

	stop()
	restarted := time.Now()
	stop = restartableRedis(t, sock)
	defer stop()
	waitFor(t, "resubscription", 10*time.Second, func() bool { return sb.subscriptions() >= 2 })
	t.Logf("subscription back %v after the restart began", time.Since(restarted).Round(time.Millisecond))
	for _, c := range []*goredis.Client{ca, cb} {
		healthy(t, c)
	}
	waitFor(t, "stores out of fast fail", 3*time.Second, func() bool {
		ctx := context.Background()
		_, ea := sa.Sync(ctx, "probe", breaker.SyncRequest{Policy: breaker.SharedPolicy{Buckets: 1, Window: time.Second, MaxRequests: 1}})
		_, eb := sb.Sync(ctx, "probe", breaker.SyncRequest{Policy: breaker.SharedPolicy{Buckets: 1, Window: time.Second, MaxRequests: 1}})
		return ea == nil && eb == nil
	})
	took := pushTrial(t, sa, sb, "after")
	t.Logf("after the restart, the trip reached the other replica in %v", took)
	if took > 100*time.Millisecond {
		t.Fatalf("push after restart took %v, want within 100ms", took)
	}
}

// healthy pings c until it answers five times in a row, so that the
// connections broken by a restart are out of its pool.
func healthy(t *testing.T, c *goredis.Client) {
	t.Helper()
	ok := 0
	waitFor(t, "client healthy", 5*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if c.Ping(ctx).Err() != nil {
			ok = 0
			return false
		}
		ok++
		return ok >= 5
	})
}

// restartableRedis starts a redis-server on the unix socket sock, waits
// until it answers, and returns a stop that kills it and waits for its exit
// (also run at the end of the test).
func restartableRedis(t *testing.T, sock string) (stop func()) {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server not found (apt-get install redis-server): %v", err)
	}
	cmd := exec.Command(bin, "--port", "0", "--unixsocket", sock, "--save", "", "--appendonly", "no", "--dir", filepath.Dir(sock))
	if err := cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	stop = func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
		<-exited
	}
	t.Cleanup(stop)
	c := goredis.NewClient(&goredis.Options{Network: "unix", Addr: sock, MaxRetries: -1})
	defer c.Close()
	waitFor(t, "redis-server ready", 10*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return c.Ping(ctx).Err() == nil
	})
	return stop
}
