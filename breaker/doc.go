// Package breaker is circuit breaking for Pylon: it stops calling a
// failing backend for a while, answering at once instead, and lets a few
// probe requests test it before traffic flows again, so that one failing
// service does not drag the gateway and its callers down with it.
//
// It is built on github.com/sony/gobreaker/v2. A [Breaker] guards one
// dependency, as route middleware or around an http.RoundTripper; a
// [TargetGuard] (see [PerTarget]) keeps a breaker per upstream target of a
// pylon Backend, whose balancer then skips an open target; a [BackendGuard]
// (see [PerBackend]) is one breaker for all of a Backend's targets.
//
// Failures are response statuses in a configurable set (500, 502, 503 and
// 504 by default), timeouts and connection errors. Client errors (4xx) count
// as successes, and a client's own cancellation is not counted at all.
//
// A breaker's state can be shared by several gateway replicas through a
// [SharedStore] (Settings.Store), such as the Redis one in the pylon redis
// module. A closed-state request never waits for the store: the shared
// state is copied locally and outcomes are sent in batches; when the store
// is slow or down, each replica decides with a local breaker.
package breaker
