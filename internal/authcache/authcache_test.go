package authcache_test

import (
	"fmt"
	"testing"

	"github.com/pylon-gateway/pylon/internal/authcache"
)

func Example() {
	c := authcache.New[string, int](100)
	c.Put("token", "alice", 100, 1, 0) // until t=100, tag 1
	v, ok := c.Get("token", 50, 1)
	fmt.Println(v, ok)
	_, ok = c.Get("token", 100, 1) // stale
	fmt.Println(ok)
	_, ok = c.Get("token", 50, 2) // another tag (a new key set)
	fmt.Println(ok)
	// Output:
	// alice true
	// false
	// false
}

func TestBounded(t *testing.T) {
	c := authcache.New[int, struct{}](32)
	for i := range 1000 {
		c.Put(fmt.Sprint(i), i, 1e9, struct{}{}, 0)
	}
	if n := c.Len(); n > 32 {
		t.Fatalf("%d entries, limit 32", n)
	}
	c.Put("x", 1, 1e9, struct{}{}, 0)
	c.Remove("x")
	if _, ok := c.Get("x", 0, struct{}{}); ok {
		t.Error("Remove kept the entry")
	}
	c.Purge()
	if c.Len() != 0 {
		t.Error("Purge left entries")
	}
}
