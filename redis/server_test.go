package pylonredis_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

// The tests run against a real redis-server. TestMain starts one on a free
// loopback port (with persistence off) unless PYLON_REDIS_ADDR names one,
// and kills it at the end. Outage tests start private servers of their own,
// which they stop and restart. Without redis-server the tests fail: they are
// never skipped.

const redisHint = "redis-server not found in PATH: install it (apt-get install -y redis-server)"

// sharedAddr is the address of the Redis the tests share.
var sharedAddr string

func TestMain(m *testing.M) {
	code := func() int {
		if addr := os.Getenv("PYLON_REDIS_ADDR"); addr != "" {
			sharedAddr = addr
			return m.Run()
		}
		srv, err := startRedis("")
		if err != nil {
			fmt.Fprintln(os.Stderr, "pylonredis tests:", err)
			return 1
		}
		defer srv.stop()
		sharedAddr = srv.addr
		return m.Run()
	}()
	if code == 0 {
		if err := goleak.Find(goleak.IgnoreCurrent()); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// redisServer is a redis-server process started by a test.
type redisServer struct {
	addr string
	cmd  *exec.Cmd
}

// freePort returns a loopback port that was free a moment ago.
func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port), nil
}

// startRedis starts redis-server on addr ("" for a free loopback port) and
// waits until it answers PING.
func startRedis(addr string) (*redisServer, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", redisHint, err)
	}
	var port string
	if addr == "" {
		if port, err = freePort(); err != nil {
			return nil, err
		}
		addr = "127.0.0.1:" + port
	} else if _, port, err = net.SplitHostPort(addr); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", os.TempDir(), "--loglevel", "warning")
	// Its warnings (memory overcommit, ...) are not ours to show.
	cmd.Stdout, cmd.Stderr = nil, nil
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	srv := &redisServer{addr: addr, cmd: cmd}
	if err := waitReady(addr, 10*time.Second); err != nil {
		srv.stop()
		return nil, err
	}
	return srv, nil
}

// waitReady polls PING until it succeeds or the deadline passes.
func waitReady(addr string, within time.Duration) error {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: 100 * time.Millisecond})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		err := c.Ping(ctx).Err()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("redis at %s not ready within %v: %w", addr, within, err)
		case <-tick.C:
		}
	}
}

// stop kills the server and waits for it to exit.
func (s *redisServer) stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// pause and resume freeze and thaw the server (SIGSTOP, SIGCONT): it keeps
// its connections but answers nothing, as a hung Redis does.
func (s *redisServer) pause() { s.signal(syscall.SIGSTOP) }

func (s *redisServer) resume() { s.signal(syscall.SIGCONT) }

func (s *redisServer) signal(sig syscall.Signal) {
	if s.cmd != nil {
		_ = s.cmd.Process.Signal(sig)
	}
}

// ownRedis starts a private server for one test and stops it at the end.
func ownRedis(t *testing.T) *redisServer {
	t.Helper()
	srv, err := startRedis("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.resume()
		srv.stop()
	})
	return srv
}

// newClient returns a go-redis client for addr, closed at the end of the test.
func newClient(t testing.TB, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true, DialTimeout: time.Second})
	t.Cleanup(func() { c.Close() })
	return c
}
