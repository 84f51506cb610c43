// Package pylonredis holds the Redis-backed stores of Pylon, for gateways
// that run as several replicas and must share state: [RateLimitStore] shares
// rate limits, [BreakerStore] shares circuit breaker state and [CacheStore]
// shares cached responses, and [HighRateStore] shares rate limits too high
// for a round trip per request (local admission against a batch allowance,
// counts synced in batches, with a stated error bound). Breaker stores push
// each change of state to the other replicas by pub/sub. It lives in the nested module
// github.com/pylon-gateway/pylon/redis, so that only programs that import it
// compile go-redis; the package is named pylonredis so that it does not
// shadow go-redis's own package redis.
//
// Every store takes a go-redis client built with ContextTimeoutEnabled:
// true (the constructors refuse one without, see ErrContextTimeoutDisabled)
// and bounds each call by its own Timeout.
//
// What each store does when Redis is:
//
//   - slow: a call waits at most the store's Timeout, then the store applies
//     its failure policy (rate limits: FallbackLocal, FailOpen or
//     FailClosed; cache: a miss; breaker: each replica decides with its
//     local breaker, and no request ever waits for a breaker sync);
//   - down: the same, and after FastFail.After failures in a row the store
//     stops calling Redis for FastFail.Backoff, applying its policy at once,
//     until a probe succeeds (see [FastFail]); failures are logged once per
//     LogInterval and counted by each store's Failures method;
//   - failing over (Sentinel's failover client, or a Cluster master): calls
//     fail, and the policy applies, until the client has found the new
//     master; what was written to the old master and not replicated is lost
//     (a rate-limit bucket refills, a cache entry is fetched again);
//   - a Cluster (a *redis.ClusterClient): the buckets of one rate-limited
//     request share a slot, the rate-limit script is loaded on every node
//     when the store is created, each breaker is one key, and
//     CacheStore.DeletePrefix scans every master and deletes key by key.
//
// HighRateStore, while Redis is slow or down, admits up to Quota divided by
// the replica count per window in each replica, and sends the counts when
// Redis answers again. A BreakerStore's pub/sub subscription lost with its
// connection is re-established by go-redis; the changes missed meanwhile
// reach the breakers with their next sync.
package pylonredis
