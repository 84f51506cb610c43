// Package aggregate answers one client request with several upstream calls
// merged into one JSON document: the gateway side of response aggregation
// and of Backend-for-Frontend, where a web and a mobile client each get the
// shape they need from the same backends.
//
// An aggregate is an http.Handler, used as a route's target:
//
//	gw.Route("GET /orders/{id}/summary").Timeout(2 * time.Second).Handler(aggregate.MustNew(
//		aggregate.Get("order", orders, "/orders/{id}"),
//		aggregate.Get("customer", customers, "/customers/{order.customer_id}"),
//		aggregate.Get("payment", payments, "/payments?order={id}").Optional(),
//	))
//
// Calls run concurrently; a call whose path uses a field of another call's
// answer ({order.customer_id}) starts as soon as that call has answered.
// Placeholder values are escaped: a wildcard value stays one path segment
// or one query value, and can never add segments or parameters.
//
// Each answer is shaped (Target, Allow, Deny, Rename, Wrap) and placed in
// the merged object under its key (Group, the default) or at the top level
// (Merge), in the order the calls are written, whatever order they arrive
// in. Two calls that would write the same key are refused when the
// aggregate is built; a merged member that collides at request time, with
// an earlier call's or with one of its own answer, fails the call
// (ErrConflict) rather than overwrite: the merged document never repeats a
// member name (RFC 8259 §4). An answer that is not valid UTF-8 is invalid
// JSON (ErrInvalidJSON).
//
// Shaping is one linear pass over the answer. An answer that nests objects
// and arrays more than 512 levels deep is invalid JSON (ErrInvalidJSON),
// whether shaped or not, which also bounds that pass.
//
// Failure is explicit. A required call that fails (error, timeout, non-2xx
// status, redirect, invalid JSON, body over the cap) fails the request with
// a problem response (502, or 504 for a timeout) naming the call's key and
// nothing about the upstream. An optional call that fails leaves a 200
// answer without its data, marked partial by the Pylon-Partial header and,
// when Options.ErrorsMember is set, by a member listing the failed keys and
// their reasons.
//
// Configuration errors (duplicate keys, unknown or cyclic dependencies, bad
// templates or paths) are found when the aggregate is built: New and
// NewWithOptions return them, MustNew and MustNewWithOptions panic with
// them, like regexp.MustCompile, so that a misconfigured gateway stops at
// start-up.
//
// Calls to a *pylon.Backend run in process: each call is a new request with
// a RequestInfo of its own (so concurrent calls never share one), answered
// on a goroutine of its own into a bounded in-memory writer; the call's
// timeout ends the call even if the handler ignores its context (what it
// writes after is dropped, and its goroutine ends when it returns). The call inherits the request's client
// decision, so its upstream gets the forwarding headers (X-Forwarded-For,
// Forwarded, X-Forwarded-Proto, X-Forwarded-Host) a direct proxied request
// would: behind a trusted proxy, the chain that proxy vouched for, extended. Options.OnCall reports each call's key,
// target, status, time and error for logs and metrics; the request's own
// RequestInfo records "aggregate" as its backend, the fan-out time, and,
// when a call failed, a log-only summary in Error ("payment: aggregate:
// timeout").
package aggregate
