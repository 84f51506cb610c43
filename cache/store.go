package cache

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Store holds entries by key. Implementations must be safe for concurrent
// use. The cache treats every Store error as "no cache": the request is
// forwarded, never failed.
type Store interface {
	// Get returns the entry stored under key, or nil and no error when
	// there is none (or it has expired).
	Get(ctx context.Context, key string) (*Entry, error)
	// Set stores e under key for ttl. A store may refuse or evict an
	// entry at any time.
	Set(ctx context.Context, key string, e *Entry, ttl time.Duration) error
	// Delete removes the entry under key, if any.
	Delete(ctx context.Context, key string) error
	// DeletePrefix removes every entry whose key starts with prefix and
	// returns how many it removed.
	DeletePrefix(ctx context.Context, prefix string) (int, error)
}

// MemoryOptions configures a [MemoryStore].
type MemoryOptions struct {
	// MaxBytes bounds the bytes held (bodies, headers and a fixed overhead
	// per entry, see [Entry.Size]); the least recently used entries are
	// evicted to make room. Zero means 64 MiB.
	MaxBytes int64
	// Now returns the current time, for expiry. Nil means time.Now.
	Now func() time.Time
}

// ErrTooLarge is returned by [MemoryStore.Set] for an entry larger than the
// store's whole budget.
var ErrTooLarge = errors.New("cache: entry larger than the store")

// MemoryStore is an in-process [Store] bounded in bytes, evicting the least
// recently used entries. Entries are shared, not copied: a hit costs a map
// lookup and a list move under one mutex.
type MemoryStore struct {
	max int64
	now func() time.Time

	mu    sync.Mutex
	items map[string]*memItem
	head  memItem // sentinel of the LRU list: head.next is the most recent
	bytes int64
}

type memItem struct {
	key        string
	e          *Entry
	size       int64
	expires    time.Time
	prev, next *memItem
}

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore(opts MemoryOptions) *MemoryStore {
	s := &MemoryStore{max: opts.MaxBytes, now: opts.Now, items: make(map[string]*memItem)}
	if s.max <= 0 {
		s.max = 64 << 20
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.head.next, s.head.prev = &s.head, &s.head
	return s
}

func (s *MemoryStore) unlink(it *memItem) {
	it.prev.next, it.next.prev = it.next, it.prev
	it.prev, it.next = nil, nil
}

func (s *MemoryStore) pushFront(it *memItem) {
	it.prev, it.next = &s.head, s.head.next
	s.head.next.prev = it
	s.head.next = it
}

func (s *MemoryStore) remove(it *memItem) {
	s.unlink(it)
	delete(s.items, it.key)
	s.bytes -= it.size
}

// Get implements [Store].
func (s *MemoryStore) Get(_ context.Context, key string) (*Entry, error) {
	now := s.now()
	s.mu.Lock()
	it := s.items[key]
	if it == nil {
		s.mu.Unlock()
		return nil, nil
	}
	if !now.Before(it.expires) {
		s.remove(it)
		s.mu.Unlock()
		return nil, nil
	}
	if s.head.next != it {
		s.unlink(it)
		s.pushFront(it)
	}
	e := it.e
	s.mu.Unlock()
	return e, nil
}

// Set implements [Store]. It evicts least recently used entries until the
// new one fits, and fails with [ErrTooLarge] when it never can.
func (s *MemoryStore) Set(_ context.Context, key string, e *Entry, ttl time.Duration) error {
	size := e.Size() + int64(len(key))
	if size > s.max {
		return ErrTooLarge
	}
	if ttl <= 0 {
		return s.Delete(context.Background(), key)
	}
	it := &memItem{key: key, e: e, size: size, expires: s.now().Add(ttl)}
	s.mu.Lock()
	if old := s.items[key]; old != nil {
		s.remove(old)
	}
	for s.bytes+size > s.max && s.head.prev != &s.head {
		s.remove(s.head.prev)
	}
	s.items[key] = it
	s.pushFront(it)
	s.bytes += size
	s.mu.Unlock()
	return nil
}

// Delete implements [Store].
func (s *MemoryStore) Delete(_ context.Context, key string) error {
	s.mu.Lock()
	if it := s.items[key]; it != nil {
		s.remove(it)
	}
	s.mu.Unlock()
	return nil
}

// DeletePrefix implements [Store]. It scans every key: purging is an
// administrative operation, not a hot path.
func (s *MemoryStore) DeletePrefix(_ context.Context, prefix string) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k, it := range s.items {
		if strings.HasPrefix(k, prefix) {
			s.remove(it)
			n++
		}
	}
	return n, nil
}

// Len returns the number of entries held, markers included.
func (s *MemoryStore) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.items)
}

// Bytes returns the number of bytes held, as counted against MaxBytes.
func (s *MemoryStore) Bytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bytes
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
