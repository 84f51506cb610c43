package pylonredis_test

import (
	"fmt"
	"log"
	"net/http"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/breaker"
	"github.com/pylon-gateway/pylon/cache"
	pylonredis "github.com/pylon-gateway/pylon/redis"
)

// Every replica of the gateway builds the same breaker on the same Redis:
// a trip seen by one replica stops the others calling the backend too,
// within about the breaker's SyncInterval.
func ExampleNewBreakerStore() {
	rdb := goredis.NewClient(&goredis.Options{
		Addr:                  "localhost:6379",
		ContextTimeoutEnabled: true, // required: the store's Timeout bounds each call
	})
	defer rdb.Close()

	store, err := pylonredis.NewBreakerStore(rdb, pylonredis.BreakerStoreOptions{Timeout: 50 * time.Millisecond})
	if err != nil {
		log.Fatal(err)
	}
	orders, err := breaker.New(breaker.Settings{
		Name:         "orders",
		FailureRatio: 0.5,
		MinRequests:  20,
		OpenDuration: 30 * time.Second,
		Store:        store, // Redis down: each replica decides on its own
	})
	if err != nil {
		log.Fatal(err)
	}
	defer orders.Close()
	_ = orders.Middleware // route.Use(orders.Middleware)
}

// NewBreakerStore (as NewCacheStore and NewRateLimitStore) refuses a client
// whose context timeouts are off: its Timeout would do nothing.
func ExampleNewBreakerStore_contextTimeout() {
	rdb := goredis.NewClient(&goredis.Options{Addr: "localhost:6379"})
	defer rdb.Close()
	_, err := pylonredis.NewBreakerStore(rdb, pylonredis.BreakerStoreOptions{})
	fmt.Println(err)
	// Output: pylonredis: the redis client must be created with ContextTimeoutEnabled: true
}

// Gateway replicas share cached responses through one Redis.
func ExampleCacheStore() {
	client := goredis.NewClient(&goredis.Options{Addr: "localhost:6379", ContextTimeoutEnabled: true})
	defer client.Close()
	store, err := pylonredis.NewCacheStore(client, pylonredis.CacheStoreOptions{Prefix: "shop:cache:"})
	if err != nil {
		log.Fatal(err)
	}
	c := cache.MustNew(cache.Options{
		Store:        store,
		StaleIfError: 5 * time.Minute, // serve stale while the backend is down
	})
	defer c.Close()

	gw := pylon.New(pylon.Options{})
	gw.Route("GET /catalog/").Use(c.Middleware).Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=30")
		fmt.Fprint(w, "catalog")
	}))
	_ = gw
}
