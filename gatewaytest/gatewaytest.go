// Package gatewaytest helps teams test their own gateway wiring with
// httptest: fake upstreams that record what they receive and answer from a
// script ([NewBackend]), helpers that send a request through any
// http.Handler (a pylon.Gateway is one) and assertions for what the gateway
// answers, problem+json bodies included.
//
// The helpers take a [TB], which *testing.T, *testing.B and *testing.F
// satisfy. Token minting for JWT tests lives in the jwttest subpackage, so
// that importing gatewaytest does not bring in a JWT library.
package gatewaytest

// TB is the part of testing.TB the helpers use. *testing.T, *testing.B and
// *testing.F satisfy it.
type TB interface {
	Helper()
	Cleanup(func())
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
}
