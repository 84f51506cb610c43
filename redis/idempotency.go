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
// gateway replica: a claim is one SET NX of the request's token with the
// lock's expiry, renewed (PEXPIRE) and ended (DEL, or SET of the response)
// by scripts that first compare the token, so that a request whose claim
// expired never ends or overwrites the claim of the one that took the key
// after it; a stored response is one value with the TTL, so that a retry
// that reaches another replica is replayed, or answered 409 while the first
// is in flight.
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

// A value is a claim ("c" and the request's token) or a stored entry ("e"
// and its JSON).
const claimPrefix = "c"

// The scripts below act on one key, KEYS[1], only for the claim ARGV[1]
// ("c" and its token); a key that is gone (false) is free.
var (
	// extendScript makes the claim last ARGV[2] ms more, or takes the key
	// again when it is free. It returns 1, or 0 when another claim or an
	// entry is there.
	extendScript = goredis.NewScript(`local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if v == false then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
return 0`)
	// completeScript stores the entry ARGV[2] for ARGV[3] ms in place of
	// the claim, or in a free key. It returns 1, or 0 when another claim or
	// an entry is there.
	completeScript = goredis.NewScript(`local v = redis.call('GET', KEYS[1])
if v == ARGV[1] or v == false then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) return 1 end
return 0`)
	// releaseScript deletes the key while it holds the claim, never
	// another request's claim or a stored response.
	releaseScript = goredis.NewScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`)
)

// Begin implements idempotency.Store.
func (s *IdempotencyStore) Begin(ctx context.Context, key, token, _ string, lock time.Duration) (*idempotency.Entry, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	k := s.prefix + key
	for range 2 { // a stored value may expire between SET NX and GET
		ok, err := s.client.SetNX(ctx, k, claimPrefix+token, max(lock, time.Millisecond)).Result()
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
		if len(v) == 0 || v[0] != 'e' {
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

// Extend implements idempotency.Store.
func (s *IdempotencyStore) Extend(ctx context.Context, key, token string, lock time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	n, err := extendScript.Run(ctx, s.client, []string{s.prefix + key}, claimPrefix+token, max(lock, time.Millisecond).Milliseconds()).Int()
	if err != nil {
		return err
	}
	if n == 0 {
		return idempotency.ErrClaimLost
	}
	return nil
}

// Complete implements idempotency.Store.
func (s *IdempotencyStore) Complete(ctx context.Context, key, token string, e *idempotency.Entry, ttl time.Duration) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	n, err := completeScript.Run(ctx, s.client, []string{s.prefix + key}, claimPrefix+token, append([]byte{'e'}, b...), max(ttl, time.Millisecond).Milliseconds()).Int()
	if err != nil {
		return err
	}
	if n == 0 {
		return idempotency.ErrClaimLost
	}
	return nil
}

// Release implements idempotency.Store.
func (s *IdempotencyStore) Release(ctx context.Context, key, token string) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	return releaseScript.Run(ctx, s.client, []string{s.prefix + key}, claimPrefix+token).Err()
}
