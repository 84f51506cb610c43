// Package authcache is the bounded cache of authentication decisions that
// jwtauth (verified tokens), introspect (introspection answers) and
// extauthz (authorization answers) share: one way to keep a decision.
package authcache

import (
	"hash/maphash"
	"sync"
)

// Cache keeps decisions (verified tokens' claims, say) until a deadline. It is bounded in
// entries, sharded, read without locks (a hit writes no shared memory, so
// cores answering requests with the same token do not contend), and starts
// no goroutine:
// an entry's deadline is checked when it is read, and expired entries are
// the first evicted when a shard is full. Callers store only what a client
// cannot make up at will (verified tokens, answers of a trusted service).
//
// Entries are keyed by a seeded hash of the key; the entry keeps the key
// itself and a hit requires the whole key to be equal, so a hash collision
// can never hand one token's claims to another. Each entry also carries a
// tag (jwtauth: the key set it was verified with); a hit requires the tag
// to be equal too.
type Cache[V any, T comparable] struct {
	seed     maphash.Seed
	perShard int
	shards   [cacheShards]shard[V, T]
}

const cacheShards = 16

type shard[V any, T comparable] struct {
	mu sync.Mutex // serializes writers; readers do not take it
	m  sync.Map   // uint64 key hash -> *entry[V, T]
	n  int        // entries in m, under mu
	_  [40]byte   // keep shards on separate cache lines
}

type entry[V any, T comparable] struct {
	key   string
	val   V
	until int64 // UnixNano after which the entry is stale
	tag   T
}

// New returns a Cache of about size entries (at least one per shard).
func New[V any, T comparable](size int) *Cache[V, T] {
	return &Cache[V, T]{seed: maphash.MakeSeed(), perShard: max(1, (size+cacheShards-1)/cacheShards)}
}

// Get returns the value stored for key with tag, when it is fresh at now
// (UnixNano).
func (c *Cache[V, T]) Get(key string, now int64, tag T) (v V, ok bool) {
	h := maphash.String(c.seed, key)
	s := &c.shards[h%cacheShards]
	x, _ := s.m.Load(h)
	e, _ := x.(*entry[V, T])
	if e == nil || e.key != key || now >= e.until || e.tag != tag {
		return v, false
	}
	return e.val, true
}

// Put stores val for key with tag until the UnixNano deadline until,
// evicting an entry when the shard is full (expired ones or ones of
// another tag first).
func (c *Cache[V, T]) Put(key string, val V, until int64, tag T, now int64) {
	h := maphash.String(c.seed, key)
	s := &c.shards[h%cacheShards]
	s.mu.Lock()
	defer s.mu.Unlock()
	_, present := s.m.Load(h)
	if !present && s.n >= c.perShard {
		// Evict: expired entries first among a few looked at, else the
		// first one seen (the order follows the seeded token hashes).
		evicted, looked := false, 0
		var first any
		s.m.Range(func(k, v any) bool {
			if first == nil {
				first = k
			}
			if e := v.(*entry[V, T]); now >= e.until || e.tag != tag {
				s.m.Delete(k)
				s.n--
				evicted = true
			}
			looked++
			return looked < 8
		})
		if !evicted && first != nil {
			s.m.Delete(first)
			s.n--
		}
	}
	if !present {
		s.n++
	}
	s.m.Store(h, &entry[V, T]{key: key, val: val, until: until, tag: tag})
}

// Remove deletes key's entry.
func (c *Cache[V, T]) Remove(key string) {
	h := maphash.String(c.seed, key)
	s := &c.shards[h%cacheShards]
	s.mu.Lock()
	if v, ok := s.m.Load(h); ok && v.(*entry[V, T]).key == key {
		s.m.Delete(h)
		s.n--
	}
	s.mu.Unlock()
}

// Purge deletes every entry.
func (c *Cache[V, T]) Purge() {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		s.m.Clear()
		s.n = 0
		s.mu.Unlock()
	}
}

// Len returns the number of entries, stale ones included.
func (c *Cache[V, T]) Len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += s.n
		s.mu.Unlock()
	}
	return n
}
