package discovery_test

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// A lookup whose caller gave up (a dead DNS server, a cancelled
	// context) leaves net's own goroutines finishing the exchange until
	// their read deadline; they belong to the standard library, end by
	// themselves, and hold nothing of ours.
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("net.(*Resolver).lookupIPAddr.func2"),
		goleak.IgnoreAnyFunction("net.(*Resolver).goLookupIPCNAMEOrder.func4"),
		goleak.IgnoreAnyFunction("net.(*Resolver).tryOneName"),
	)
}
