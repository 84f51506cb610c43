package pylonredis

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/cache"
)

// cacheRedis returns a client to a Redis for one test: PYLON_REDIS_ADDR
// when set, else a redis-server of the test's own on a unix socket in
// t.TempDir(), killed on cleanup. A missing redis-server fails the test.
func cacheRedis(t testing.TB) *goredis.Client {
	t.Helper()
	if tt, ok := t.(*testing.T); ok {
		tt.Cleanup(func() { goleak.VerifyNone(tt) }) // runs last
	}
	var opts *goredis.Options
	if addr := os.Getenv("PYLON_REDIS_ADDR"); addr != "" {
		opts = &goredis.Options{Addr: addr, ContextTimeoutEnabled: true}
	} else {
		bin, err := exec.LookPath("redis-server")
		if err != nil {
			t.Fatalf("redis-server not found (install it, or set PYLON_REDIS_ADDR): %v", err)
		}
		sock := filepath.Join(t.TempDir(), "redis.sock")
		cmd := exec.Command(bin, "--port", "0", "--unixsocket", sock, "--save", "", "--appendonly", "no")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })
		opts = &goredis.Options{Network: "unix", Addr: sock, ContextTimeoutEnabled: true}
	}
	c := goredis.NewClient(opts)
	t.Cleanup(func() { _ = c.Close() })
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis did not answer PING: %v", err)
		}
		<-time.After(10 * time.Millisecond) // poll interval
	}
	return c
}

// mustCache returns a CacheStore on client, failing the test on error.
func mustCache(t testing.TB, client goredis.UniversalClient, opts CacheStoreOptions) *CacheStore {
	t.Helper()
	s, err := NewCacheStore(client, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func cachePrefix(t testing.TB) string { return "pylon:test:" + t.Name() + ":" }

func TestCacheStoreRoundTrip(t *testing.T) {
	client := cacheRedis(t)
	s := mustCache(t, client, CacheStoreOptions{Prefix: cachePrefix(t)})
	c := cache.MustNew(cache.Options{Store: s})
	defer c.Close()
	var calls atomic.Int64
	h := c.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Vary", "Accept")
		w.Header().Add("X-Multi", "a")
		w.Header().Add("X-Multi", "b")
		fmt.Fprint(w, "body for "+r.Header.Get("Accept"))
	}))
	for i, tc := range []struct{ accept, status string }{
		{"a", "pylon; fwd=uri-miss"}, {"a", "pylon; hit"}, {"b", "pylon; fwd=vary-miss"}, {"b", "pylon; hit"},
	} {
		r := httptest.NewRequest("GET", "/x?b=1&a=2", nil)
		r.Header.Set("Accept", tc.accept)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Body.String() != "body for "+tc.accept || !strings.HasPrefix(w.Header().Get("Cache-Status"), tc.status) ||
			strings.Join(w.Header().Values("X-Multi"), ",") != "a,b" {
			t.Fatalf("request %d: %q %q %q", i, w.Body, w.Header().Get("Cache-Status"), w.Header().Values("X-Multi"))
		}
	}
	if calls.Load() != 2 {
		t.Fatalf("backend calls = %d", calls.Load())
	}
	ttl := client.PTTL(context.Background(), cachePrefix(t)+"GET http://example.com/x?a=2&b=1").Val()
	if ttl <= 0 || ttl > time.Hour {
		t.Fatalf("marker TTL = %v", ttl)
	}
}

func TestCacheStoreSharedByReplicas(t *testing.T) {
	client := cacheRedis(t)
	var calls atomic.Int64
	origin := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Cache-Control", "max-age=60")
		fmt.Fprint(w, "shared")
	})
	replica := func() http.Handler {
		c := cache.MustNew(cache.Options{Store: mustCache(t, client, CacheStoreOptions{Prefix: cachePrefix(t)})})
		t.Cleanup(func() { _ = c.Close() })
		return c.Middleware(origin)
	}
	a, b := replica(), replica()
	wa := httptest.NewRecorder()
	a.ServeHTTP(wa, httptest.NewRequest("GET", "/p", nil))
	wb := httptest.NewRecorder()
	b.ServeHTTP(wb, httptest.NewRequest("GET", "/p", nil))
	if wb.Body.String() != "shared" || !strings.Contains(wb.Header().Get("Cache-Status"), "hit") || calls.Load() != 1 {
		t.Fatalf("replica b: %q %q calls %d", wb.Body, wb.Header().Get("Cache-Status"), calls.Load())
	}
	// A POST through replica b invalidates for both.
	b.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("POST", "/p", nil))
	a.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/p", nil))
	if calls.Load() != 3 {
		t.Fatalf("after POST: calls %d, want 3", calls.Load())
	}
}

func TestCacheStoreTTLAndPurge(t *testing.T) {
	client := cacheRedis(t)
	ctx := context.Background()
	s := mustCache(t, client, CacheStoreOptions{Prefix: cachePrefix(t), ScanCount: 2})
	c := cache.MustNew(cache.Options{Store: s, DefaultTTL: time.Minute})
	defer c.Close()
	h := c.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, r.URL.Path) }))
	for _, p := range []string{"/o/1", "/o/2", "/o/[3]", "/u/1"} {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "http://h"+p, nil))
	}
	ttl := client.PTTL(ctx, cachePrefix(t)+"GET http://h/o/1").Val()
	if ttl <= 0 || ttl > time.Minute {
		t.Fatalf("TTL = %v, want within the default 1m", ttl)
	}
	n, err := c.PurgePrefix(ctx, "GET http://h/o/")
	if err != nil || n != 3 {
		t.Fatalf("PurgePrefix = %d, %v", n, err)
	}
	if err := c.Purge(ctx, "GET http://h/u/1"); err != nil {
		t.Fatal(err)
	}
	if keys := client.Keys(ctx, cachePrefix(t)+"*").Val(); len(keys) != 0 {
		t.Fatalf("keys left: %q", keys)
	}
	// A corrupt value is a miss, not an error.
	client.Set(ctx, cachePrefix(t)+"GET http://h/bad", "garbage", time.Minute)
	if e, err := s.Get(ctx, "GET http://h/bad"); e != nil || err != nil {
		t.Fatalf("corrupt value: %v, %v", e, err)
	}
}

func TestCacheStoreRedisDownBypasses(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	// A client to an address where nothing listens: every operation fails.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	client := goredis.NewClient(&goredis.Options{Addr: addr, MaxRetries: -1, DialTimeout: 100 * time.Millisecond, ContextTimeoutEnabled: true})
	defer client.Close()
	c := cache.MustNew(cache.Options{Store: mustCache(t, client, CacheStoreOptions{})})
	defer c.Close()
	h := c.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		fmt.Fprint(w, "still served")
	}))
	for _, m := range []string{"GET", "GET", "POST"} {
		r := httptest.NewRequest(m, "/x", nil)
		info := &pylon.RequestInfo{}
		r = r.WithContext(pylon.NewContext(r.Context(), info))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != 200 || w.Body.String() != "still served" {
			t.Fatalf("%s: %d %q", m, w.Code, w.Body)
		}
		if m == "GET" && (info.Cache != cache.StatusBypass || !strings.Contains(w.Header().Get("Cache-Status"), "store-unavailable")) {
			t.Fatalf("GET: info %q, Cache-Status %q", info.Cache, w.Header().Get("Cache-Status"))
		}
	}
}

func TestCacheStoreLargeEntry(t *testing.T) {
	client := cacheRedis(t)
	// A 3 MiB SET takes a while on a loaded machine: the store's time
	// limit (100 ms by default) is not what this test is about.
	c := cache.MustNew(cache.Options{Store: mustCache(t, client, CacheStoreOptions{Prefix: cachePrefix(t), Timeout: 10 * time.Second}), MaxObjectSize: 4 << 20})
	defer c.Close()
	body := strings.Repeat("z", 3<<20)
	h := c.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		io.WriteString(w, body)
	}))
	for i := range 2 {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", "/big", nil))
		if w.Body.String() != body {
			t.Fatalf("request %d: %d bytes", i, w.Body.Len())
		}
		if i == 1 && !strings.Contains(w.Header().Get("Cache-Status"), "hit") {
			t.Fatalf("not a hit: %q", w.Header().Get("Cache-Status"))
		}
	}
}

// BenchmarkCacheStoreHit serves a stored 1 KiB response from Redis (one
// GET round trip over a unix socket, plus decoding).
func BenchmarkCacheStoreHit(b *testing.B) {
	client := cacheRedis(b)
	c := cache.MustNew(cache.Options{Store: mustCache(b, client, CacheStoreOptions{Prefix: "pylon:bench:"})})
	defer c.Close()
	body := strings.Repeat("x", 1024)
	h := c.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=3600")
		io.WriteString(w, body)
	}))
	r := httptest.NewRequest("GET", "/bench", nil)
	h.ServeHTTP(httptest.NewRecorder(), r)
	b.ReportAllocs()
	for b.Loop() {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Body.Len() != 1024 {
			b.Fatal("not served")
		}
	}
}
