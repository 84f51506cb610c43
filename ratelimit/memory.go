package ratelimit

import (
	"context"
	"hash/maphash"
	"math/bits"
	"sync"
	"time"
)

// MemoryOptions configures a [MemoryStore].
type MemoryOptions struct {
	// MaxKeys bounds the number of buckets kept (one per client key and
	// limit). When it is reached, the least recently used bucket is
	// dropped, which forgives that client its recent requests. Each bucket
	// takes about 200 bytes with a short key (measured with 1,000,000
	// distinct keys through a full store). Zero means 100,000.
	MaxKeys int
	// Shards is the number of independently locked parts the store is split
	// into, rounded up to a power of two. Zero means 64.
	Shards int
}

// MemoryStore is an in-memory, bounded, sharded [Store] for one process.
//
// A bucket's only state is its GCRA theoretical arrival time. A bucket whose
// time has passed is full and holds no information, so it expires exactly
// then (its idle TTL is the time its client needs to regain the whole
// burst): expired buckets are treated as absent and their slots are reused
// first. On top of that, at most MaxKeys buckets are kept, least recently
// used dropped first, so a client that rotates keys cannot grow memory
// without bound.
//
// The zero value is not usable; call [NewMemoryStore].
type MemoryStore struct {
	seed   maphash.Seed
	shards []memShard
	mask   uint64
}

// bucketKey names one bucket: a limit's name and a client key.
type bucketKey struct {
	name, key string
}

// memEntry is one bucket in a shard's slot table; prev and next link the
// shard's LRU list (slot 0 is the list's sentinel).
type memEntry struct {
	k          bucketKey
	tat        int64
	prev, next int32
}

type memShard struct {
	mu    sync.Mutex
	index map[bucketKey]int32
	slots []memEntry     // slots[0] is the LRU sentinel: next is newest, prev oldest
	max   int            // most buckets kept, not counting the sentinel
	_     [128 - 56]byte // keep shards on separate cache lines
}

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore(opts MemoryOptions) *MemoryStore {
	maxKeys := opts.MaxKeys
	if maxKeys <= 0 {
		maxKeys = 100_000
	}
	n := opts.Shards
	if n <= 0 {
		n = 64
	}
	n = 1 << bits.Len(uint(n-1)) // round up to a power of two
	// Every shard must hold all the buckets of one request, twice over, so
	// that admitting a request never evicts a bucket it has just counted.
	for n > 1 && maxKeys/n < 2*MaxLimits {
		n /= 2
	}
	per := max(maxKeys/n, 2*MaxLimits)
	s := &MemoryStore{seed: maphash.MakeSeed(), shards: make([]memShard, n), mask: uint64(n - 1)}
	for i := range s.shards {
		sh := &s.shards[i]
		sh.max = per
		sh.index = make(map[bucketKey]int32)
		sh.slots = make([]memEntry, 1, min(per+1, 64))
	}
	return s
}

// Len returns the number of buckets currently kept, expired or not.
func (s *MemoryStore) Len() int {
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		n += len(sh.index)
		sh.mu.Unlock()
	}
	return n
}

// Allow implements [Store]. It never returns an error.
func (s *MemoryStore) Allow(_ context.Context, key string, limits []Limit, now time.Time) (Decision, error) {
	return s.AllowAt(key, limits, now), nil
}

// AllowAt is Allow without a context: it decides whether one request from
// key passes every limit at time now, counting it against all of them only
// if it passes all. limits must come from [PrepareLimits].
func (s *MemoryStore) AllowAt(key string, limits []Limit, now time.Time) Decision {
	var d Decision
	n := min(len(limits), MaxLimits)
	d.N, d.Known, d.Allowed = n, true, true
	var found [MaxLimits]int32
	var tats, olds [MaxLimits]int64
	// Microseconds, as in the Redis store's script, so that both make
	// exactly the same decisions.
	t := now.UnixMicro()

	sh := &s.shards[maphash.String(s.seed, key)&s.mask]
	sh.mu.Lock()
	for i := 0; i < n; i++ {
		l := &limits[i]
		idx := sh.index[bucketKey{l.Name, key}]
		found[i] = idx
		var tat int64
		if idx != 0 {
			tat = sh.slots[idx].tat
		}
		interval := int64(l.Window/time.Microsecond) / int64(l.Quota)
		newTAT, ok, remaining, retry, reset := gcra(tat, t, interval, int64(l.Burst))
		tats[i], olds[i] = newTAT, tat
		d.Results[i] = Result{Allowed: ok, Remaining: int(remaining),
			RetryAfter: time.Duration(retry) * time.Microsecond, Reset: time.Duration(reset) * time.Microsecond}
		if !ok {
			d.Allowed = false
		}
	}
	if d.Allowed {
		// Update the buckets that exist first (moving them to the front),
		// then add the new ones, which may evict the oldest buckets.
		for i := 0; i < n; i++ {
			if idx := found[i]; idx != 0 {
				sh.slots[idx].tat = tats[i]
				sh.toFront(idx)
			}
		}
		for i := 0; i < n; i++ {
			if found[i] == 0 {
				sh.insert(bucketKey{limits[i].Name, key}, tats[i], t)
			}
		}
	} else {
		for i := 0; i < n; i++ {
			if idx := found[i]; idx != 0 {
				sh.toFront(idx)
			}
			// A limit that would have admitted the request was not
			// charged for it: report its figures without this request.
			if r := &d.Results[i]; r.Allowed {
				r.Remaining++
				r.Reset = time.Duration(max(olds[i]-t, 0)) * time.Microsecond
			}
		}
	}
	sh.mu.Unlock()
	return d
}

func (sh *memShard) unlink(idx int32) {
	e := &sh.slots[idx]
	sh.slots[e.prev].next = e.next
	sh.slots[e.next].prev = e.prev
}

func (sh *memShard) pushFront(idx int32) {
	e := &sh.slots[idx]
	e.prev = 0
	e.next = sh.slots[0].next
	sh.slots[e.next].prev = idx
	sh.slots[0].next = idx
}

func (sh *memShard) toFront(idx int32) {
	if sh.slots[0].next == idx {
		return
	}
	sh.unlink(idx)
	sh.pushFront(idx)
}

// insert adds a bucket, reusing the oldest bucket's slot when that bucket
// has expired or the shard is full.
func (sh *memShard) insert(k bucketKey, tat, now int64) {
	var idx int32
	oldest := sh.slots[0].prev
	switch {
	case oldest != 0 && (sh.slots[oldest].tat <= now || len(sh.index) >= sh.max):
		idx = oldest
		sh.unlink(idx)
		delete(sh.index, sh.slots[idx].k)
	case len(sh.slots) < cap(sh.slots):
		sh.slots = sh.slots[:len(sh.slots)+1]
		idx = int32(len(sh.slots) - 1)
	default:
		// Grow the slot table, never past max+1 slots.
		grown := make([]memEntry, len(sh.slots)+1, min(2*cap(sh.slots), sh.max+1))
		copy(grown, sh.slots)
		sh.slots = grown
		idx = int32(len(sh.slots) - 1)
	}
	sh.slots[idx] = memEntry{k: k, tat: tat}
	sh.index[k] = idx
	sh.pushFront(idx)
}
