// Package middleware holds the everyday middlewares of a Pylon gateway:
// request IDs, panic recovery, access logging, real client IPs, CORS, body
// limits, deadlines, security headers and header rewriting, plus [Chain] to
// compose them and [WrapWriter], the status-recording ResponseWriter they
// share.
//
// Every middleware has the type func(http.Handler) http.Handler (the type
// pylon.Middleware aliases), so chi and alice middlewares plug in unchanged
// and these plug into any net/http program. The package uses only the
// standard library and the root pylon package.
//
// The middlewares record what they learn in the request's pylon.RequestInfo
// (request ID, client IP) and read it back (the access log). Used outside a
// Gateway, where the context holds no RequestInfo, RequestID, RealIP and
// AccessLog put one into the request's context themselves. Inside a Gateway
// the client's address, scheme and host are decided once, from
// pylon.Options.Trust, and RealIP is not needed.
//
// Every error response they write is an application/problem+json document
// written by pylon.WriteProblem, carrying the request ID.
//
// A typical chain for a plain net/http program (no Gateway):
//
//	chain := middleware.New(
//		middleware.RequestID,
//		middleware.Recover(logger),
//		middleware.AccessLog(logger),
//		middleware.RealIP(pylon.Trust{Proxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}),
//	)
//	http.ListenAndServe(":8080", chain.Then(mux))
package middleware
