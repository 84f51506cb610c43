package pylonredis

import (
	"context"
	"errors"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/pylon-gateway/pylon/cache"
)

// CacheStoreOptions configures a [CacheStore].
type CacheStoreOptions struct {
	// Prefix is put in front of every key, so several gateways (or other
	// programs) can share one Redis. Zero means "pylon:cache:".
	Prefix string
	// Timeout bounds each Redis operation; a slower Redis counts as
	// unavailable and the cache is bypassed for that request. Zero means
	// 100 milliseconds.
	Timeout time.Duration
	// ScanCount is the COUNT hint of the SCAN commands DeletePrefix runs.
	// Zero means 500.
	ScanCount int64
}

// CacheStore is a [cache.Store] in Redis, so that gateway replicas share
// cached responses. Entries are stored with [cache.Entry.MarshalBinary]
// under their key with a TTL (PX), so Redis expires them itself; memory is
// bounded by Redis's maxmemory policy (allkeys-lru suits a cache).
//
// The cache treats every error as "no cache": when Redis is down or slow,
// requests go to the backend and nothing fails.
type CacheStore struct {
	client  goredis.UniversalClient
	prefix  string
	timeout time.Duration
	count   int64
}

// NewCacheStore returns a CacheStore using client, which the caller owns
// and closes.
func NewCacheStore(client goredis.UniversalClient, opts CacheStoreOptions) *CacheStore {
	s := &CacheStore{client: client, prefix: opts.Prefix, timeout: opts.Timeout, count: opts.ScanCount}
	if s.prefix == "" {
		s.prefix = "pylon:cache:"
	}
	if s.timeout <= 0 {
		s.timeout = 100 * time.Millisecond
	}
	if s.count <= 0 {
		s.count = 500
	}
	return s
}

var _ cache.Store = (*CacheStore)(nil)

// Get implements [cache.Store]. A value that does not decode is treated as
// absent.
func (s *CacheStore) Get(ctx context.Context, key string) (*cache.Entry, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	b, err := s.client.Get(ctx, s.prefix+key).Bytes()
	if errors.Is(err, goredis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	e := new(cache.Entry)
	if err := e.UnmarshalBinary(b); err != nil {
		return nil, nil
	}
	return e, nil
}

// Set implements [cache.Store]. TTLs are rounded down to milliseconds;
// a TTL under one millisecond deletes the key.
func (s *CacheStore) Set(ctx context.Context, key string, e *cache.Entry, ttl time.Duration) error {
	if ttl < time.Millisecond {
		return s.Delete(ctx, key)
	}
	b, err := e.MarshalBinary()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	return s.client.Set(ctx, s.prefix+key, b, ttl.Truncate(time.Millisecond)).Err()
}

// Delete implements [cache.Store].
func (s *CacheStore) Delete(ctx context.Context, key string) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	return s.client.Unlink(ctx, s.prefix+key).Err()
}

// DeletePrefix implements [cache.Store] with SCAN MATCH and UNLINK. It is
// an administrative operation: it walks the whole keyspace, with the
// store's Timeout applied to each command, not to the walk. On a Redis
// Cluster it walks only the node the client's SCAN reaches.
func (s *CacheStore) DeletePrefix(ctx context.Context, prefix string) (int, error) {
	match := globEscape(s.prefix+prefix) + "*"
	var cursor uint64
	n := 0
	for {
		cctx, cancel := context.WithTimeout(ctx, s.timeout)
		keys, next, err := s.client.Scan(cctx, cursor, match, s.count).Result()
		cancel()
		if err != nil {
			return n, err
		}
		if len(keys) > 0 {
			cctx, cancel := context.WithTimeout(ctx, s.timeout)
			d, err := s.client.Unlink(cctx, keys...).Result()
			cancel()
			if err != nil {
				return n, err
			}
			n += int(d)
		}
		if next == 0 {
			return n, nil
		}
		cursor = next
	}
}

// globEscape escapes the glob metacharacters of a Redis MATCH pattern.
func globEscape(s string) string {
	if !strings.ContainsAny(s, `*?[]\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
