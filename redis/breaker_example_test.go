package pylonredis_test

import (
	"log"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/pylon-gateway/pylon/breaker"
	pylonredis "github.com/pylon-gateway/pylon/redis"
)

// Every replica of the gateway builds the same breaker on the same Redis:
// a trip seen by one replica stops the others calling the backend too.
func ExampleNewBreakerStore() {
	rdb := goredis.NewClient(&goredis.Options{Addr: "localhost:6379"})
	defer rdb.Close()

	orders, err := breaker.New(breaker.Settings{
		Name:         "orders",
		FailureRatio: 0.5,
		MinRequests:  20,
		OpenDuration: 30 * time.Second,
		Store:        pylonredis.NewBreakerStore(rdb, pylonredis.BreakerStoreOptions{}),
	})
	if err != nil {
		log.Fatal(err) // Redis unreachable at start-up
	}
	_ = orders.Middleware // route.Use(orders.Middleware)
}
