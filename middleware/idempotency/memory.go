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
	claims map[string]time.Time     // key -> claim expiry
	bytes  int
}

type memItem struct {
	key     string
	e       *Entry
	expires time.Time
	size    int
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
	return &MemoryStore{opts: o, items: make(map[string]*list.Element), claims: make(map[string]time.Time)}
}

// Begin implements Store.
func (s *MemoryStore) Begin(_ context.Context, key, fp string, lock time.Duration) (*Entry, error) {
	now := s.opts.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if el, ok := s.items[key]; ok {
		it := el.Value.(*memItem)
		if now.Before(it.expires) {
			s.lru.MoveToFront(el)
			return it.e, nil
		}
		s.remove(el)
	}
	if exp, ok := s.claims[key]; ok && now.Before(exp) {
		return nil, ErrInFlight
	}
	if len(s.claims) >= s.opts.MaxClaims {
		for k, exp := range s.claims { // drop the expired claims, once full
			if !now.Before(exp) {
				delete(s.claims, k)
			}
		}
		if len(s.claims) >= s.opts.MaxClaims {
			return nil, ErrInFlight
		}
	}
	s.claims[key] = now.Add(lock)
	return nil, nil
}

// Complete implements Store.
func (s *MemoryStore) Complete(_ context.Context, key string, e *Entry, ttl time.Duration) error {
	now := s.opts.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.claims, key)
	it := &memItem{key: key, e: e, expires: now.Add(ttl), size: e.size() + len(key)}
	if it.size > s.opts.MaxBytes {
		return nil
	}
	if el, ok := s.items[key]; ok {
		s.remove(el)
	}
	s.items[key] = s.lru.PushFront(it)
	s.bytes += it.size
	for s.bytes > s.opts.MaxBytes {
		s.remove(s.lru.Back())
	}
	return nil
}

// Release implements Store.
func (s *MemoryStore) Release(_ context.Context, key string) error {
	s.mu.Lock()
	delete(s.claims, key)
	s.mu.Unlock()
	return nil
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
