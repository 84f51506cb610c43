package pylonredis

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/pylon-gateway/pylon/middleware/idempotency"
	goredis "github.com/redis/go-redis/v9"
)

// IdempotencyStoreOptions configures an [IdempotencyStore].
type IdempotencyStoreOptions struct {
	// Prefix is put in front of every key. Empty means "pylon:idem:".
	Prefix string
	// Timeout bounds each Redis operation. Zero means 100ms. A store that
	// does not answer in time makes the middleware answer 503: a key that
	// cannot be checked is never run twice by accident.
	Timeout time.Duration
}

// IdempotencyStore is an idempotency.Store in Redis, shared by every
// gateway replica: a claim is one SET NX with the lock's expiry, a stored
// response one value with the TTL, so that a retry that reaches another
// replica is replayed, or answered 409 while the first is in flight.
type IdempotencyStore struct {
	client  goredis.UniversalClient
	prefix  string
	timeout time.Duration
}

var _ idempotency.Store = (*IdempotencyStore)(nil)

// NewIdempotencyStore returns an IdempotencyStore using client, which the
// caller owns and closes. It fails on a nil client, and on one whose options
// leave ContextTimeoutEnabled false (ErrContextTimeoutDisabled).
func NewIdempotencyStore(client goredis.UniversalClient, opts IdempotencyStoreOptions) (*IdempotencyStore, error) {
	if err := checkClient(client); err != nil {
		return nil, err
	}
	s := &IdempotencyStore{client: client, prefix: opts.Prefix, timeout: opts.Timeout}
	if s.prefix == "" {
		s.prefix = "pylon:idem:"
	}
	if s.timeout <= 0 {
		s.timeout = 100 * time.Millisecond
	}
	return s, nil
}

// A value is a claim ("c") or a stored entry ("e" and its JSON).
const claimValue = "c"

// releaseScript deletes a key only while it holds a claim, never a stored
// response.
var releaseScript = goredis.NewScript(`if redis.call('GET', KEYS[1]) == 'c' then return redis.call('DEL', KEYS[1]) end return 0`)

// Begin implements idempotency.Store.
func (s *IdempotencyStore) Begin(ctx context.Context, key, _ string, lock time.Duration) (*idempotency.Entry, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	k := s.prefix + key
	for range 2 { // a stored value may expire between SET NX and GET
		ok, err := s.client.SetNX(ctx, k, claimValue, max(lock, time.Millisecond)).Result()
		if err != nil {
			return nil, err
		}
		if ok {
			return nil, nil
		}
		v, err := s.client.Get(ctx, k).Result()
		if errors.Is(err, goredis.Nil) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if v == claimValue || len(v) == 0 || v[0] != 'e' {
			return nil, idempotency.ErrInFlight
		}
		e := new(idempotency.Entry)
		if err := json.Unmarshal([]byte(v[1:]), e); err != nil {
			return nil, err
		}
		return e, nil
	}
	return nil, idempotency.ErrInFlight
}

// Complete implements idempotency.Store.
func (s *IdempotencyStore) Complete(ctx context.Context, key string, e *idempotency.Entry, ttl time.Duration) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	return s.client.Set(ctx, s.prefix+key, append([]byte{'e'}, b...), max(ttl, time.Millisecond)).Err()
}

// Release implements idempotency.Store.
func (s *IdempotencyStore) Release(ctx context.Context, key string) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	return releaseScript.Run(ctx, s.client, []string{s.prefix + key}).Err()
}
