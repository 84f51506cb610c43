package pylonredis_test

import (
	"context"
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/pylon-gateway/pylon/middleware/idempotency"
	"github.com/pylon-gateway/pylon/ratelimit"
	pylonredis "github.com/pylon-gateway/pylon/redis"
)

// A rate limit shared by every replica that uses the same Redis. (The
// example runs on an in-process miniredis so that it is self-contained; in
// production the client points at Redis or Redis Cluster.)
func ExampleRateLimitStore() {
	mr, err := miniredis.Run()
	if err != nil {
		panic(err)
	}
	defer mr.Close()
	client := redis.NewClient(&redis.Options{
		Addr:                  mr.Addr(),
		ContextTimeoutEnabled: true, // required: the store's Timeout bounds each call
	})
	defer client.Close()

	store, err := pylonredis.NewRateLimitStore(client, pylonredis.RateLimitOptions{
		Timeout:   50 * time.Millisecond,
		OnFailure: pylonredis.FallbackLocal, // limit per replica while Redis is away
	})
	if err != nil {
		panic(err)
	}
	limits, err := ratelimit.PrepareLimits(ratelimit.PerSecond(10).WithBurst(2))
	if err != nil {
		panic(err)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := 0; i < 3; i++ {
		d, err := store.Allow(context.Background(), "ip:192.0.2.1", limits, now)
		fmt.Println(d.Allowed, d.Results[0].Remaining, d.RetryAfter(), err)
	}
	fmt.Println(store.Key("ip:192.0.2.1", limits[0].Name))

	// The store plugs into the middleware:
	_ = ratelimit.MustNewWithOptions(ratelimit.Options{Limits: limits, Store: store})
	// Output:
	// true 1 0s <nil>
	// true 0 0s <nil>
	// false 0 100ms <nil>
	// pylon:rl:{ip:192.0.2.1}:10-per-1s
}

// Idempotency keys shared by every replica through Redis.
func ExampleNewIdempotencyStore() {
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379", ContextTimeoutEnabled: true})
	defer client.Close()
	store, err := pylonredis.NewIdempotencyStore(client, pylonredis.IdempotencyStoreOptions{})
	if err != nil {
		panic(err)
	}
	_ = idempotency.New(idempotency.Options{Store: store, Required: true})
}

// A high-rate limit: decisions from memory, counts sent to Redis in
// batches, with the error bound of [pylonredis.HighRateStore]. (On an
// in-process miniredis, as above.)
func ExampleHighRateStore() {
	mr, err := miniredis.Run()
	if err != nil {
		panic(err)
	}
	defer mr.Close()
	client := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
	defer client.Close()

	store, err := pylonredis.NewHighRateStore(client, pylonredis.HighRateOptions{SyncInterval: 50 * time.Millisecond})
	if err != nil {
		panic(err)
	}
	defer store.Close() // stops its goroutine, sends what is pending
	limits, err := ratelimit.PrepareLimits(ratelimit.PerSecond(3))
	if err != nil {
		panic(err)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := 0; i < 4; i++ {
		d, err := store.Allow(context.Background(), "ip:192.0.2.1", limits, now)
		fmt.Println(d.Allowed, err)
	}
	fmt.Println("replicas:", store.Replicas())
	// Output:
	// true <nil>
	// true <nil>
	// true <nil>
	// false <nil>
	// replicas: 1
}
