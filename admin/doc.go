// Package admin is Pylon's status page and admin API: a server-rendered
// HTML page (html/template, embedded assets, no build step, readable
// without JavaScript, refreshed live by a small script) and a JSON API with
// the same data, for operators:
//
//   - the route table (pattern, matchers, middleware count, target), with
//     each route's request rate, error rate and latency over the last
//     minute and sparklines (inline SVG drawn by the server) of the last
//     minutes;
//   - every backend and target: health, drained, ejections, in-flight,
//     recent latency and error rate, breaker state;
//   - breakers, caches (entries, bytes, hit ratio) and rate-limit stores;
//   - the recent 5xx answers (route, status, redacted reason, request ID)
//     and the recent actions.
//
// Traffic figures come from [Stats], a middleware to put first in the
// Gateway's chain: a bounded ring of one-second buckets per route and per
// target, fed from each request's [pylon.RequestInfo].
//
// Actions (drain and undrain a target, fail readiness by hand, purge a
// cache key or prefix, reset a breaker) run only when Options.Authorizer is
// set, are POST only, refuse cross-origin browser requests, and are logged
// with who asked. Without an Authorizer, [Listen] refuses a non-loopback
// address and the handler serves only requests that arrived on a loopback
// one. Nothing shown holds request headers, credentials or key material;
// error reasons are passed through [Redact].
//
// Mount it on a listener of its own, never on the gateway's public one:
//
//	stats := admin.NewStats(admin.StatsOptions{})
//	gw.Use(stats.Middleware) // first
//	...
//	srv, err := admin.Listen("127.0.0.1:9901", admin.Options{Gateway: gw, Stats: stats})
//	go srv.Serve(ctx)
package admin
