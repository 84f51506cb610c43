package pylon_test

import (
	"fmt"
	"net/http/httptest"

	"github.com/pylon-gateway/pylon"
)

// HashClientIP keys each client by its own address, IPv6 included (a
// parser that splits on the first ':' would put both IPv6 clients below in
// one bucket). Passed to ConsistentHash, it keeps each client on one target.
func ExampleHashClientIP() {
	key := pylon.HashClientIP()
	for _, addr := range []string{
		"192.0.2.7:51000",
		"[2001:db8::1]:51000",
		"[2001:db8::2]:51000",
		"[::ffff:192.0.2.7]:443", // IPv4-mapped: the same client as the first
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = addr
		fmt.Println(key(r))
	}
	_ = pylon.ConsistentHash(key) // a Balancer for a Backend's settings

	// Output:
	// 192.0.2.7
	// 2001:db8::1
	// 2001:db8::2
	// 192.0.2.7
}

// HashCookie keys requests by a session cookie, for session affinity.
func ExampleHashCookie() {
	key := pylon.HashCookie("session")
	r := httptest.NewRequest("GET", "/cart", nil)
	r.Header.Set("Cookie", "theme=dark; session=8f14e45f")
	fmt.Printf("%q\n", key(r))
	r.Header.Del("Cookie")
	fmt.Printf("%q (no cookie: balanced round robin)\n", key(r))

	// Output:
	// "8f14e45f"
	// "" (no cookie: balanced round robin)
}
