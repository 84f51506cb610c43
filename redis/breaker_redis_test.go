package pylonredis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// breakerRedis returns the address of a Redis for one test: PYLON_REDIS_ADDR
// when set, else a redis-server of its own on a unix socket in a temporary
// directory, stopped when the test ends. A missing redis-server fails the
// test: the Redis code is tested against a real Redis or not at all.
func breakerRedis(t testing.TB) (network, addr string) {
	t.Helper()
	if a := os.Getenv("PYLON_REDIS_ADDR"); a != "" {
		return "tcp", a
	}
	_, addr = breakerRedisProc(t)
	return "unix", addr
}

// breakerRedisProc starts a redis-server of the test's own on a unix
// socket, whatever PYLON_REDIS_ADDR says, for tests that stop it.
func breakerRedisProc(t testing.TB) (*os.Process, string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "redis.sock")
	return redisOnSocket(t, sock), sock
}

// redisOnSocket starts a redis-server on the unix socket sock, waits until
// it answers PING, and kills it when the test ends.
func redisOnSocket(t testing.TB, sock string) *os.Process {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server not found (apt-get install redis-server, or set PYLON_REDIS_ADDR): %v", err)
	}
	dir := filepath.Dir(sock)
	cmd := exec.Command(bin, "--port", "0", "--unixsocket", sock, "--save", "", "--appendonly", "no", "--dir", dir)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
		<-exited
	})
	c := goredis.NewClient(&goredis.Options{Network: "unix", Addr: sock, MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return cmd.Process
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server not ready: %v", err)
		}
		<-tick.C
	}
}

// breakerClient returns a client of the test's Redis, closed at the end.
func breakerClient(t testing.TB, network, addr string) *goredis.Client {
	t.Helper()
	c := goredis.NewClient(&goredis.Options{Network: network, Addr: addr, ContextTimeoutEnabled: true})
	t.Cleanup(func() { c.Close() })
	return c
}

// breakerPrefix is a key prefix of the test's own, so that tests sharing a
// Redis (PYLON_REDIS_ADDR) do not see each other's keys.
func breakerPrefix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "pylontest:" + hex.EncodeToString(b[:]) + ":"
}
