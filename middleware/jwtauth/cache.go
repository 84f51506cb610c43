package jwtauth

import (
	"hash/maphash"
	"sync"
)

// tokenCache keeps verified tokens until they expire. It is bounded in
// entries, sharded, read without locks (a hit writes no shared memory, so
// cores answering requests with the same token do not contend), and starts
// no goroutine:
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
	mu sync.Mutex // serializes writers; readers do not take it
	m  sync.Map   // uint64 token hash -> *cacheEntry
	n  int        // entries in m, under mu
	_  [40]byte   // keep shards on separate cache lines
}

type cacheEntry struct {
	token  string
	claims *Claims
	until  int64   // UnixNano after which the entry is stale
	keys   *keySet // the key set the token was verified with
}

func newTokenCache(size int) *tokenCache {
	return &tokenCache{seed: maphash.MakeSeed(), perShard: max(1, (size+cacheShards-1)/cacheShards)}
}

func (c *tokenCache) get(token string, now int64, keys *keySet) *Claims {
	h := maphash.String(c.seed, token)
	s := &c.shards[h%cacheShards]
	v, _ := s.m.Load(h)
	e, _ := v.(*cacheEntry)
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
			if e := v.(*cacheEntry); now >= e.until || e.keys != keys {
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
	s.m.Store(h, &cacheEntry{token: token, claims: claims, until: until, keys: keys})
}

func (c *tokenCache) remove(token string) {
	h := maphash.String(c.seed, token)
	s := &c.shards[h%cacheShards]
	s.mu.Lock()
	if v, ok := s.m.Load(h); ok && v.(*cacheEntry).token == token {
		s.m.Delete(h)
		s.n--
	}
	s.mu.Unlock()
}

func (c *tokenCache) purge() {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		s.m.Clear()
		s.n = 0
		s.mu.Unlock()
	}
}

func (c *tokenCache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += s.n
		s.mu.Unlock()
	}
	return n
}
