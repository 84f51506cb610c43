// Package pylonredis holds the Redis-backed stores of Pylon, for gateways
// that run as several replicas and must share state: [RateLimitStore] shares
// rate limits, [BreakerStore] shares circuit breaker
// state and [CacheStore] shares cached responses. It lives in the nested module
// github.com/pylon-gateway/pylon/redis, so that only programs that import it
// compile go-redis; the package is named pylonredis so that it does not
// shadow go-redis's own package redis.
package pylonredis
