// Package ratelimit limits how many requests a client may make in a period
// of time, to protect backends from overload and abuse and share capacity
// fairly.
//
// [New] and [NewWithOptions] return a func(http.Handler) http.Handler
// middleware for a route, a group or a whole gateway. Requests are counted
// per client key ([ByIP], [ByHeader], [BySubject], [ByRoute], [Compose])
// against one or several limits ([Limit]) that must all pass (say 10 per second and
// 1000 per hour), with per-key overrides. Over a limit the client gets 429
// Too Many Requests as an application/problem+json document with
// Retry-After, and responses carry the RateLimit-Policy and RateLimit
// header fields of draft-ietf-httpapi-ratelimit-headers-11.
//
// A request the key function finds no key for is never let through
// unlimited. By default ([MissingKeyDefault]) the key function decides: a
// limit keyed by the authenticated subject refuses it (401 Unauthorized
// with a WWW-Authenticate challenge, or 403 Forbidden when the request was
// authenticated but names no subject), and any other limit (ByIP on a unix
// socket, ByHeader without the header) counts it in one shared bucket,
// [AnonymousKey]. Options.MissingKey chooses another policy.
//
// Limits are enforced with GCRA (the generic cell rate algorithm, a token
// bucket kept as a single timestamp). It is implemented here rather than
// with golang.org/x/time/rate's Limiter, because the same few lines of
// arithmetic run in the Redis store's Lua script, so that one replica and
// many make the same decisions; a bucket takes 8 bytes of state instead of a
// Limiter's 80; and several limits can be checked and then committed
// together. The tests check the decisions against x/time/rate's Limiter
// with the same rate and burst, and [Limit.Rate] converts a Limit to an
// x/time/rate Limit.
//
// Buckets live in a [Store]: [MemoryStore] (bounded, sharded, no allocation
// per decision) for one process, or the Redis store of the nested module
// github.com/pylon-gateway/pylon/redis for several replicas. Every decision
// takes the current time as an argument, so tests inject time instead of
// sleeping.
package ratelimit
