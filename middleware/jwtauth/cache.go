package jwtauth

import (
	"hash/maphash"
	"sync"
)

// tokenCache keeps verified tokens until they expire. It is bounded in
// entries, sharded to keep lock contention low, and starts no goroutine:
// an entry's deadline is checked when it is read, and expired entries are
// the first evicted when a shard is full. Only tokens that passed
// verification are stored, so a client cannot fill it with garbage.
//
// Entries are keyed by a seeded hash of the token; the entry keeps the
// token itself and a hit requires the whole token to be equal, so a hash
// collision can never hand one token's claims to another.
type tokenCache struct {
	seed     maphash.Seed
	perShard int
	shards   [cacheShards]cacheShard
}

const cacheShards = 16

type cacheShard struct {
	mu sync.RWMutex
	m  map[uint64]*cacheEntry
	_  [40]byte // keep shards on separate cache lines
}

type cacheEntry struct {
	token  string
	claims *Claims
	until  int64   // UnixNano after which the entry is stale
	keys   *keySet // the key set the token was verified with
}

func newTokenCache(size int) *tokenCache {
	c := &tokenCache{seed: maphash.MakeSeed(), perShard: max(1, (size+cacheShards-1)/cacheShards)}
	for i := range c.shards {
		c.shards[i].m = make(map[uint64]*cacheEntry)
	}
	return c
}

func (c *tokenCache) get(token string, now int64, keys *keySet) *Claims {
	h := maphash.String(c.seed, token)
	s := &c.shards[h%cacheShards]
	s.mu.RLock()
	e := s.m[h]
	s.mu.RUnlock()
	if e == nil || e.token != token || now >= e.until || e.keys != keys {
		return nil
	}
	return e.claims
}

func (c *tokenCache) put(token string, claims *Claims, until int64, keys *keySet, now int64) {
	h := maphash.String(c.seed, token)
	s := &c.shards[h%cacheShards]
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[h]; !ok && len(s.m) >= c.perShard {
		// Evict: expired entries first among a few looked at, else one
		// arbitrary entry (map iteration order is randomized).
		evicted, looked := false, 0
		for k, e := range s.m {
			if now >= e.until || e.keys != keys {
				delete(s.m, k)
				evicted = true
			}
			if looked++; looked >= 8 {
				break
			}
		}
		if !evicted {
			for k := range s.m {
				delete(s.m, k)
				break
			}
		}
	}
	s.m[h] = &cacheEntry{token: token, claims: claims, until: until, keys: keys}
}

func (c *tokenCache) remove(token string) {
	h := maphash.String(c.seed, token)
	s := &c.shards[h%cacheShards]
	s.mu.Lock()
	if e := s.m[h]; e != nil && e.token == token {
		delete(s.m, h)
	}
	s.mu.Unlock()
}

func (c *tokenCache) purge() {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		clear(s.m)
		s.mu.Unlock()
	}
}

func (c *tokenCache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}
