package pylonredis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/sony/gobreaker/v2"
)

// ErrBreakerLocked is returned by BreakerStore.Lock when another process
// held the lock for longer than LockWait.
var ErrBreakerLocked = errors.New("redis: breaker state locked by another process")

// BreakerStoreOptions configures a [BreakerStore]. Every field's zero value
// is a safe default, written in its comment.
type BreakerStoreOptions struct {
	// Prefix is put before every key the store writes. Empty means
	// "pylon:".
	Prefix string
	// LockTTL is how long a lock is held at most, should its holder die.
	// Zero means 5s.
	LockTTL time.Duration
	// LockWait is how long Lock waits for a lock held by another process
	// before failing. Zero means 1s.
	LockWait time.Duration
	// StateTTL is how long a breaker's state is kept after its last
	// update. Zero means 24h.
	StateTTL time.Duration
	// Timeout bounds each Redis command. Zero means 1s.
	Timeout time.Duration
}

// BreakerStore keeps circuit-breaker state in Redis, so that the breakers
// of several gateway replicas share it: it implements gobreaker's
// SharedDataStore, for breaker.Settings.Store.
//
// Locks are SET NX PX with a random token, released only by their holder,
// and expire after LockTTL should the holder die. State is a plain string
// key that expires StateTTL after its last write.
//
// It is safe for concurrent use.
type BreakerStore struct {
	c    goredis.UniversalClient
	opts BreakerStoreOptions

	mu     sync.Mutex
	tokens map[string]string // lock key -> our token, while we hold it
}

var _ gobreaker.SharedDataStore = (*BreakerStore)(nil)

// NewBreakerStore returns a BreakerStore on client c.
func NewBreakerStore(c goredis.UniversalClient, opts BreakerStoreOptions) *BreakerStore {
	if opts.Prefix == "" {
		opts.Prefix = "pylon:"
	}
	if opts.LockTTL <= 0 {
		opts.LockTTL = 5 * time.Second
	}
	if opts.LockWait <= 0 {
		opts.LockWait = time.Second
	}
	if opts.StateTTL <= 0 {
		opts.StateTTL = 24 * time.Hour
	}
	if opts.Timeout <= 0 {
		opts.Timeout = time.Second
	}
	return &BreakerStore{c: c, opts: opts, tokens: map[string]string{}}
}

func (s *BreakerStore) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), s.opts.Timeout)
}

// Lock takes the lock called name, waiting up to LockWait for another
// process to release it.
func (s *BreakerStore) Lock(name string) error {
	var b [16]byte
	_, _ = rand.Read(b[:])
	token := hex.EncodeToString(b[:])
	key := s.opts.Prefix + name
	deadline := time.Now().Add(s.opts.LockWait)
	wait := time.Millisecond
	for {
		ctx, cancel := s.ctx()
		ok, err := s.c.SetNX(ctx, key, token, s.opts.LockTTL).Result()
		cancel()
		if err != nil {
			return err
		}
		if ok {
			s.mu.Lock()
			s.tokens[key] = token
			s.mu.Unlock()
			return nil
		}
		if time.Now().Add(wait).After(deadline) {
			return ErrBreakerLocked
		}
		time.Sleep(wait) // a held lock guards a few commands: it is released soon
		wait = min(2*wait, 20*time.Millisecond)
	}
}

var unlockScript = goredis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
	return redis.call('DEL', KEYS[1])
end
return 0`)

// Unlock releases the lock called name if this store holds it.
func (s *BreakerStore) Unlock(name string) error {
	key := s.opts.Prefix + name
	s.mu.Lock()
	token, ok := s.tokens[key]
	delete(s.tokens, key)
	s.mu.Unlock()
	if !ok {
		return nil
	}
	ctx, cancel := s.ctx()
	defer cancel()
	return unlockScript.Run(ctx, s.c, []string{key}, token).Err()
}

// GetData returns the data stored under name, or nil when there is none.
func (s *BreakerStore) GetData(name string) ([]byte, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	data, err := s.c.Get(ctx, s.opts.Prefix+name).Bytes()
	if errors.Is(err, goredis.Nil) {
		return nil, nil
	}
	return data, err
}

// SetData stores data under name.
func (s *BreakerStore) SetData(name string, data []byte) error {
	ctx, cancel := s.ctx()
	defer cancel()
	return s.c.Set(ctx, s.opts.Prefix+name, data, s.opts.StateTTL).Err()
}
