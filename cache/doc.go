// Package cache is an HTTP response cache for the gateway: a middleware for
// a route, a group or the whole gateway that keeps backend responses as a
// shared cache per RFC 9111, in memory (bounded in bytes, least recently
// used evicted first) or in any [Store] (the nested module
// github.com/pylon-gateway/pylon/redis has one for Redis, shared by
// replicas).
//
//	c := cache.MustNew(cache.Options{MaxBytes: 256 << 20, DefaultTTL: 30 * time.Second})
//	defer c.Close()
//	gw.Route("GET /products/{id}").Use(c.Middleware).To(products)
//
// # What is stored
//
// GET responses with a status the cache understands, freshness from
// s-maxage, max-age or Expires (with Date and Age, RFC 9111 §4.2), or
// Options.DefaultTTL when the backend says nothing. Not stored: no-store (in
// the request or the response), private, Vary: *, responses setting cookies
// (unless Options.AllowSetCookie), responses with trailers, bodies over
// Options.MaxObjectSize (streamed through, never buffered whole), and
// responses to requests carrying credentials unless they say public,
// s-maxage or must-revalidate (§3.5), or Options.PerSubject keys them by the
// authenticated subject. A request carries credentials when it has an
// Authorization header or an authentication middleware admitted it
// (pylon.RequestInfo.Authenticated), even one that removed the header. Place
// the cache after authentication; a Gateway reports the other order as a
// configuration error, and a cache that finds itself before an
// authentication anyway never stores what that authentication admitted. HEAD is answered from a stored GET response.
// Requests with Range, If-Range, If-Match or If-Unmodified-Since, upgrade
// requests, and requests Options.Bypass selects are forwarded untouched. A
// successful POST, PUT, PATCH or DELETE invalidates the stored response for
// its URL (§4.4).
//
// # Serving
//
// A fresh response is served with Age and Cache-Status (RFC 9211), and
// conditional requests (If-None-Match, If-Modified-Since) are answered 304
// from it. A stale one is revalidated with the backend using its ETag and
// Last-Modified; a 304 refreshes it. Within stale-while-revalidate it is
// served at once while one background request per key refreshes it; within
// stale-if-error it is served when the backend answers 5xx, which includes
// a breaker's 503 when the breaker is inside the cache (a Backend Guard, or
// breaker middleware after the cache in the chain). no-cache and
// must-revalidate responses are never served stale. Client request
// directives are honoured unless Options.IgnoreRequestDirectives.
//
// Concurrent misses on one key make one backend request: the first request
// fetches, streaming to its client, and the others wait for it and are
// served the stored result (Cache-Status "collapsed"). When the response
// cannot be shared, the waiters fetch on their own, and the URL skips
// coalescing for Options.PassTTL.
//
// # Keys
//
// The primary key is
//
//	"GET " + scheme + "://" + host + escaped path [+ "?" + query] [+ key headers]
//
// where the query is normalized: parameters sorted by name (values of one
// name keep their order), restricted by Options.QueryParams or
// Options.IgnoreQueryParams, kept in their original encoding; a query that
// does not parse bypasses the cache. The scheme and host are the ones the
// Gateway decided (pylon.Options.Trust) and the upstream is sent in
// X-Forwarded-Proto and X-Forwarded-Host, never a forwarding header as the
// client sent it: http and https clients behind a TLS-terminating proxy
// never share a redirect, and an untrusted client cannot store a response
// under another scheme's key. Key headers are Options.KeyHeaders. Options.Key may rewrite the primary
// key. With Options.PerSubject the subject is appended, and when a response
// names headers in Vary, each combination of their values gets its own
// entry. [Cache.Key] returns a request's primary key; [Cache.Purge] removes
// it with all its variants and subjects; [Cache.PurgePrefix] removes every
// key with a prefix, for an admin route.
//
// # Unkeyed input
//
// A request header or parameter that changes the backend's response but is
// not in the key lets one client poison the entry every other client is
// served. The rule: what the backend sees on a request that may be stored
// is what the key holds. Query parameters left out of the key are removed
// from fill requests; headers origins are known to reflect (X-Forwarded-Host,
// X-Original-URL and the others in [DefaultStripHeaders]) are removed; every
// other header the backend uses to shape a response must be named by the
// backend in Vary or listed in Options.KeyHeaders.
package cache
