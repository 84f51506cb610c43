// Package overload keeps a slow or saturated upstream from holding every
// goroutine, socket and megabyte of the gateway: it bounds how many
// requests are in flight, and sheds the excess at once with 503 (or 429 for
// one client) and Retry-After, as application/problem+json.
//
// Limits on a Backend's attempts are pylon Guards, set as
// BackendOptions.Guard (combined with a circuit breaker by pylon.Guards):
//
//   - [PerTarget]: at most MaxInFlight attempts per upstream target, with
//     an optional bounded queue (MaxQueued, MaxWait), like Envoy's
//     per-host limits; a full target is skipped for another.
//   - [PerBackend]: the same for the whole Backend, like Envoy's
//     per-cluster max_requests and max_pending_requests.
//   - [Adaptive]: a limit for the whole Backend that follows the upstream's
//     latency (a gradient limit in the style of Netflix concurrency-limits'
//     Gradient2; see [AdaptiveOptions]) and sheds what is over it instead of
//     queueing.
//
// [PerClient] is a middleware that bounds the requests in flight per client
// key (a ratelimit.KeyFunc), like Traefik's InFlightReq, answering 429.
//
// [Critical] marks a route's requests as critical: every limit keeps its
// last places (CriticalShare) for them, and a queue serves them first, so
// that shedding takes from the other routes first.
//
// Every refusal is counted ([Stats]) and recorded in RequestInfo.Shed.
// Health checks and readiness probes are never shed: a Backend's active
// health checks do not pass through its Guard, and the Gateway's probes
// (gw.Health) do not pass through routes' middleware; a PerClient limit
// used as global middleware exempts them with its Skip option.
package overload
