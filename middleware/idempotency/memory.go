package idempotency

import (
	"container/list"
	"context"
	"sync"
	"time"
)

// MemoryOptions configures a [MemoryStore]. Every field's zero value is a
// safe default, written in its comment.
type MemoryOptions struct {
	// MaxBytes bounds the bytes of stored responses (estimated: bodies,
	// headers, keys); the least recently used are dropped past it. Zero
	// means 64 MiB.
	MaxBytes int
	// MaxClaims bounds the claims of requests in flight; Begin answers
	// ErrInFlight past it. Zero means 100000.
	MaxClaims int
	// Now returns the current time. Zero means time.Now.
	Now func() time.Time
}

// MemoryStore is a Store in one process's memory, bounded in bytes, with
// each response kept for its TTL.
type MemoryStore struct {
	opts   MemoryOptions
	mu     sync.Mutex
	items  map[string]*list.Element // of *memItem
	lru    list.List                // stored entries, most recent first
	claims map[string]memClaim
	bytes  int
}

type memItem struct {
	key     string
	e       *Entry
	expires time.Time
	size    int
}

// memClaim is a request's claim on a key.
type memClaim struct {
	token   string
	expires time.Time
}

var _ Store = (*MemoryStore)(nil)

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore(o MemoryOptions) *MemoryStore {
	if o.MaxBytes <= 0 {
		o.MaxBytes = 64 << 20
	}
	if o.MaxClaims <= 0 {
		o.MaxClaims = 100000
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &MemoryStore{opts: o, items: make(map[string]*list.Element), claims: make(map[string]memClaim)}
}

// Begin implements Store.
func (s *MemoryStore) Begin(_ context.Context, key, token, _ string, lock time.Duration) (*Entry, error) {
	now := s.opts.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.entry(key, now); e != nil {
		return e, nil
	}
	if c, ok := s.claims[key]; ok && now.Before(c.expires) {
		return nil, ErrInFlight
	}
	if len(s.claims) >= s.opts.MaxClaims {
		for k, c := range s.claims { // drop the expired claims, once full
			if !now.Before(c.expires) {
				delete(s.claims, k)
			}
		}
		if len(s.claims) >= s.opts.MaxClaims {
			return nil, ErrInFlight
		}
	}
	s.claims[key] = memClaim{token: token, expires: now.Add(lock)}
	return nil, nil
}

// Extend implements Store.
func (s *MemoryStore) Extend(_ context.Context, key, token string, lock time.Duration) error {
	now := s.opts.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.mayClaim(key, token, now) {
		return ErrClaimLost
	}
	s.claims[key] = memClaim{token: token, expires: now.Add(lock)}
	return nil
}

// Complete implements Store.
func (s *MemoryStore) Complete(_ context.Context, key, token string, e *Entry, ttl time.Duration) error {
	now := s.opts.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.mayClaim(key, token, now) {
		return ErrClaimLost
	}
	delete(s.claims, key)
	it := &memItem{key: key, e: e, expires: now.Add(ttl), size: e.size() + len(key)}
	if it.size > s.opts.MaxBytes {
		return nil
	}
	if el, ok := s.items[key]; ok {
		s.remove(el) // expired
	}
	s.items[key] = s.lru.PushFront(it)
	s.bytes += it.size
	for s.bytes > s.opts.MaxBytes {
		s.remove(s.lru.Back())
	}
	return nil
}

// Release implements Store.
func (s *MemoryStore) Release(_ context.Context, key, token string) error {
	s.mu.Lock()
	if c, ok := s.claims[key]; ok && c.token == token {
		delete(s.claims, key)
	}
	s.mu.Unlock()
	return nil
}

// entry returns the live entry stored under key, and drops an expired one.
// s.mu is held.
func (s *MemoryStore) entry(key string, now time.Time) *Entry {
	el, ok := s.items[key]
	if !ok {
		return nil
	}
	it := el.Value.(*memItem)
	if !now.Before(it.expires) {
		s.remove(el)
		return nil
	}
	s.lru.MoveToFront(el)
	return it.e
}

// mayClaim reports whether token holds the claim on key or may take it: no
// response is stored, and the claim there is token's own, expired, or
// none. s.mu is held.
func (s *MemoryStore) mayClaim(key, token string, now time.Time) bool {
	if el, ok := s.items[key]; ok && now.Before(el.Value.(*memItem).expires) {
		return false
	}
	c, ok := s.claims[key]
	return !ok || c.token == token || !now.Before(c.expires)
}

// Len returns the number of responses stored and their estimated bytes.
func (s *MemoryStore) Len() (entries, bytes int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.items), s.bytes
}

func (s *MemoryStore) remove(el *list.Element) {
	it := s.lru.Remove(el).(*memItem)
	delete(s.items, it.key)
	s.bytes -= it.size
}
