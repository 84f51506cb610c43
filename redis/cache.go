package pylonredis

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
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
	// FastFail configures the fast-fail state: while Redis is known to be
	// failing, Get, Set and Delete return ErrFastFail at once (the cache is
	// bypassed) until a probe succeeds. Zero means the defaults of
	// [FastFail].
	FastFail FastFail
	// Logger receives failure reports, at most one per LogInterval. Nil
	// means slog.Default().
	Logger *slog.Logger
	// LogInterval is the least time between two failure reports. Zero
	// means 10s.
	LogInterval time.Duration
}

// CacheStore is a [cache.Store] in Redis, so that gateway replicas share
// cached responses. Entries are stored with [cache.Entry.MarshalBinary]
// under their key with a TTL (PX), so Redis expires them itself; memory is
// bounded by Redis's maxmemory policy (allkeys-lru suits a cache).
//
// The cache treats every error as "no cache": when Redis is slow, a request
// waits at most Timeout for it and then goes to the backend; when Redis
// keeps failing (FastFail.After failures in a row), the store stops calling
// it for FastFail.Backoff and every lookup is a miss at once, until a probe
// succeeds. During a failover, lookups miss until the client reaches the new
// master, and entries not yet replicated are lost (they are fetched again).
//
// On a Redis Cluster (a *redis.ClusterClient) each entry is one key, and
// DeletePrefix scans every master and deletes key by key, so that no command
// spans two slots.
type CacheStore struct {
	client  goredis.UniversalClient
	prefix  string
	timeout time.Duration
	count   int64
	gate    *gate
}

// NewCacheStore returns a CacheStore using client, which the caller owns
// and closes. It fails on a nil client, and on one whose options leave
// ContextTimeoutEnabled false (ErrContextTimeoutDisabled), since Timeout
// would then be ignored.
func NewCacheStore(client goredis.UniversalClient, opts CacheStoreOptions) (*CacheStore, error) {
	if err := checkClient(client); err != nil {
		return nil, err
	}
	s := &CacheStore{client: client, prefix: opts.Prefix, timeout: opts.Timeout, count: opts.ScanCount,
		gate: newGate("cache store", opts.FastFail, opts.Logger, opts.LogInterval)}
	if s.prefix == "" {
		s.prefix = "pylon:cache:"
	}
	if s.timeout <= 0 {
		s.timeout = 100 * time.Millisecond
	}
	if s.count <= 0 {
		s.count = 500
	}
	return s, nil
}

var _ cache.Store = (*CacheStore)(nil)

// Failures returns how many operations got no answer from Redis since the
// store was created: failed, or skipped in the fast-fail state.
func (s *CacheStore) Failures() uint64 { return s.gate.count() }

// Down reports whether the store is in its fast-fail state.
func (s *CacheStore) Down() bool { return s.gate.down() }

// Get implements [cache.Store]. A value that does not decode is treated as
// absent.
func (s *CacheStore) Get(ctx context.Context, key string) (*cache.Entry, error) {
	if err := s.gate.allow(); err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	b, err := s.client.Get(cctx, s.prefix+key).Bytes()
	if errors.Is(err, goredis.Nil) {
		s.gate.done(ctx, nil)
		return nil, nil
	}
	s.gate.done(ctx, err)
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
	if err := s.gate.allow(); err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	err = s.client.Set(cctx, s.prefix+key, b, ttl.Truncate(time.Millisecond)).Err()
	s.gate.done(ctx, err)
	return err
}

// Delete implements [cache.Store].
func (s *CacheStore) Delete(ctx context.Context, key string) error {
	if err := s.gate.allow(); err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	err := s.client.Unlink(cctx, s.prefix+key).Err()
	s.gate.done(ctx, err)
	return err
}

// DeletePrefix implements [cache.Store] with SCAN MATCH and UNLINK. It is
// an administrative operation: it walks the whole keyspace, with the
// store's Timeout applied to each command, not to the walk, and it does
// not fail fast (a purge is worth its wait). On a Redis Cluster it walks
// every master and unlinks the keys it finds one command per key (in one
// pipeline per batch), since a multi-key UNLINK must not span slots.
func (s *CacheStore) DeletePrefix(ctx context.Context, prefix string) (int, error) {
	match := globEscape(s.prefix+prefix) + "*"
	if cc, ok := s.client.(*goredis.ClusterClient); ok {
		var n atomic.Int64
		err := cc.ForEachMaster(ctx, func(ctx context.Context, node *goredis.Client) error {
			d, err := s.deleteMatching(ctx, node, match, true)
			n.Add(int64(d))
			return err
		})
		return int(n.Load()), err
	}
	return s.deleteMatching(ctx, s.client, match, false)
}

// deleteMatching scans c for match and unlinks what it finds: in one UNLINK
// per SCAN batch, or, with perKey, one UNLINK per key in a pipeline.
func (s *CacheStore) deleteMatching(ctx context.Context, c goredis.Cmdable, match string, perKey bool) (int, error) {
	var cursor uint64
	n := 0
	for {
		cctx, cancel := context.WithTimeout(ctx, s.timeout)
		keys, next, err := c.Scan(cctx, cursor, match, s.count).Result()
		cancel()
		if err != nil {
			return n, err
		}
		if len(keys) > 0 {
			cctx, cancel := context.WithTimeout(ctx, s.timeout)
			if perKey {
				cmds, err := c.Pipelined(cctx, func(p goredis.Pipeliner) error {
					for _, k := range keys {
						p.Unlink(cctx, k)
					}
					return nil
				})
				cancel()
				for _, cmd := range cmds {
					n += int(cmd.(*goredis.IntCmd).Val())
				}
				if err != nil {
					return n, err
				}
			} else {
				d, err := c.Unlink(cctx, keys...).Result()
				cancel()
				if err != nil {
					return n, err
				}
				n += int(d)
			}
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
