// Package cache is an HTTP response cache for the gateway: a middleware for
// a route, a group or the whole gateway that keeps backend responses as a
// shared cache per RFC 9111, in memory (bounded in bytes, least recently
// used evicted first) or in any [Store] (the nested module
// github.com/pylon-gateway/pylon/redis has one for Redis, shared by
// replicas). A store that fails never fails a request: the request is
// forwarded (Cache-Status "detail=store-unavailable") or its response is
// not stored, and the failures are logged at most once per 10 seconds,
// with the number left out since.
//
//	c := cache.MustNew(cache.Options{MaxBytes: 256 << 20, DefaultTTL: 30 * time.Second})
//	defer c.Close()
//	gw.Route("GET /products/{id}").Use(c.Middleware).To(products)
//
// # What is stored
//
// GET responses (RFC 9111 §3) with a heuristically cacheable status (200,
// 203, 204, 300, 301, 308, 404, 405, 410, 414, 501; RFC 9110 §15.1), or any
// other final status but 206 and 304 when the response has explicit
// freshness or says public; must-understand is honoured (§5.2.2.3).
// Freshness comes from s-maxage, max-age or Expires (with Date and Age,
// §4.2), else from a fraction of the Last-Modified age when
// Options.HeuristicFraction asks for heuristic freshness (§4.2.2), else
// Options.DefaultTTL. Dates are HTTP-dates exactly as RFC 9110 §5.6.7
// defines them (IMF-fixdate, and the obsolete rfc850 and asctime forms);
// an invalid Expires, or several, means already expired (§5.3), and so
// does a max-age or s-maxage repeated with different values, in
// Cache-Control or a targeted field (§4.2.1 allows the first value or
// stale; stale is the safe choice); a list-based Age counts by its first
// member (§5.1).
//
// A targeted cache-control field (RFC 9213), CDN-Cache-Control unless
// Options.TargetedFields names others (a field of the gateway's own name
// first, say), replaces Cache-Control and Expires for this cache when it
// is a valid Structured Field Dictionary (RFC 9651); an invalid one is
// ignored entirely. Targeted fields are removed from responses before they
// leave the cache unless Options.KeepTargetedFields.
//
// Not stored: no-store (in the request or the response), private, Vary: *,
// responses setting cookies (unless Options.AllowSetCookie), responses with
// trailers, interim (1xx) responses, bodies over Options.MaxObjectSize
// (streamed through, never buffered whole), and responses to requests
// carrying credentials unless they say public, s-maxage or must-revalidate
// (§3.5), or Options.PerSubject keys them by the authenticated subject. A
// request carries credentials when it has an Authorization header or an
// authentication middleware admitted it (pylon.RequestInfo.Authenticated),
// even one that removed the header. Place the cache after authentication;
// a Gateway reports the other order as a configuration error, and a cache
// that finds itself before an authentication anyway never stores what that
// authentication admitted. HEAD is answered from a stored GET response.
// A response the cache stores says so in its Cache-Status ("stored", RFC
// 9211 §2.7), whether or not it has a Content-Length; that field leaves
// with the header, before the body, so a body of unknown length that grows
// past Options.MaxObjectSize, one cut short, or a failing store can still
// leave such a response unstored. One kept for no time (a lifetime of 0
// without a validator) does not say stored.
// Requests with If-Match or If-Unmodified-Since, upgrade requests, and
// requests Options.Bypass selects are forwarded untouched, and so are GET
// and HEAD requests with content (a Content-Length other than 0, or a
// chunked body), with Cache-Status "fwd=bypass; detail=request-content":
// content in a GET has no defined semantics (RFC 9110 §9.3.1) and is not
// in the key, so a response an origin shaped from it is neither stored nor
// answered from the cache. A successful POST, PUT, PATCH or DELETE
// invalidates the stored response for its URL (§4.4).
//
// # Serving
//
// A fresh response is served with Age and Cache-Status (RFC 9211), and
// conditional requests (If-None-Match, If-Modified-Since) are answered 304
// from it. A Range request is answered from a stored complete 200 (RFC 9110
// §14): 206 for one range, 206 multipart/byteranges for several, 416 when
// none is satisfiable, the whole response when If-Range (§13.1.5: a strong
// ETag, or the date of a strong Last-Modified) does not match; with nothing
// stored it is forwarded and its 206 is not stored. Interim responses such
// as 103 Early Hints (RFC 8297) are relayed to the client as they arrive.
//
// A stale response is revalidated with the backend using its ETag and
// Last-Modified. A 304 that selects it (§4.3.4) replaces its header fields
// (§3.2: all but Content-Length, Content-Range and fields never stored);
// one that does not makes the cache ask again, unconditionally. Within
// stale-while-revalidate it is served at once while one background request
// per key refreshes it; within stale-if-error it is served when the backend
// answers 5xx (a breaker's 503 included, when the breaker is inside the
// cache: a Backend Guard, or breaker middleware after the cache), closes
// the connection before answering, or does not answer before the request's
// deadline (a route timeout). no-cache, must-revalidate and
// proxy-revalidate responses are never served stale, nor are responses
// with s-maxage, which implies proxy-revalidate for a shared cache (RFC
// 9111 §5.2.2.10). Client request directives are honoured unless
// Options.IgnoreRequestDirectives.
//
// Concurrent misses on one key make one backend request: the first request
// fetches, streaming to its client, and the others wait for it and are
// served the stored result (Cache-Status "collapsed"). That client does
// not pace the fetch: a response being stored (buffered anyway, up to
// Options.MaxObjectSize) is read from the backend as fast as the backend
// sends it and sent to the first client from the buffer, so the others are
// served once it is stored (or revalidated), however slowly the first
// client reads, or if it never does. When the response cannot be shared
// (known from its header, or when its body grows past MaxObjectSize), the
// waiters are released at once and fetch on their own, and the URL skips
// coalescing for Options.PassTTL; when its responses vary, only that
// variant does, and the other stored variants keep being served.
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
// entry; a header the request lacks matches only requests that lack it
// too, never one sent with an empty value (RFC 9111 §4.1). [Cache.Key]
// returns a request's primary key; [Cache.Purge] removes it with all its
// variants and subjects; [Cache.PurgePrefix] removes every key with a
// prefix, for an admin route.
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
