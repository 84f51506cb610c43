// Package pylon is an embeddable API gateway for Go programs.
//
// A [Gateway] is an [http.Handler]. Routes are declared in Go with a builder
// ([Gateway.Route]) whose patterns are [http.ServeMux] patterns, composed of
// plain middlewares ([Middleware] is func(http.Handler) http.Handler), and end
// in a target: a [Backend] (a pool of upstream targets that requests are
// proxied to, with load balancing, health checking and retries) or any
// [http.Handler].
//
// Every stage of a request records what it learned in the request's
// [RequestInfo] (route, backend, target, attempts, upstream status and time,
// and what later stages add: subject, rate-limit decision, breaker state,
// cache status), which access logs and metrics read once the response is done.
// Every error a client sees is an RFC 9457 application/problem+json document
// written by [WriteProblem].
//
// Decisions that several packages depend on are made once, in one place.
// Who the client is (address, scheme, host, whether its peer is a trusted
// proxy) is decided by the Gateway from [Options.Trust] and recorded in
// RequestInfo; who it authenticated as is recorded by whichever
// authentication admitted it (Subject, Auth); the headers a client's
// Connection header names are removed as the request arrives. At
// configuration time, [Gateway.Err] reads the [Stage] of every middleware in
// a route's chain and refuses orders that would be unsafe, such as a cache
// or a per-subject rate limit before the route's authentication.
//
// Capabilities with dependencies of their own live in subpackages:
// middleware, middleware/jwtauth, ratelimit, breaker, aggregate, cache,
// gatewaytest, and the nested modules redis and observe.
package pylon
