package pylonredis

import (
	"context"
	_ "embed"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/pylon-gateway/pylon/breaker"
)

//go:embed breaker.lua
var breakerSource string

var breakerScript = goredis.NewScript(breakerSource)

// BreakerStoreOptions configures a [BreakerStore]. Every field's zero value
// is a safe default, written in its comment.
type BreakerStoreOptions struct {
	// Prefix is put before every key the store writes. Empty means
	// "pylon:breaker:".
	Prefix string
	// StateTTL is how long a breaker's state is kept after its last
	// update. Zero means 24h.
	StateTTL time.Duration
	// Timeout bounds each call to Redis. Zero means 100ms.
	Timeout time.Duration
	// FastFail configures the fast-fail state: while Redis is known to be
	// failing, Sync returns ErrFastFail at once and breakers decide with
	// their local breaker. Zero means the defaults of [FastFail].
	FastFail FastFail
	// Logger receives failure reports, at most one per LogInterval. Nil
	// means slog.Default().
	Logger *slog.Logger
	// LogInterval is the least time between two failure reports. Zero
	// means 10s.
	LogInterval time.Duration
	// NoPush turns off the subscription through which the store pushes
	// each change of state to the breakers of this process (see
	// [BreakerStore.Watch]); they then learn changes from their periodic
	// Sync only. The script publishes changes either way. False means
	// pushes on: one pub/sub connection per store while breakers use it.
	NoPush bool
}

// BreakerStore keeps circuit-breaker state in Redis, so that the breakers
// of several gateway replicas share it: it implements [breaker.SharedStore],
// for breaker.Settings.Store.
//
// Each breaker's state is one Redis hash, "<Prefix><breaker name>", that
// expires StateTTL after its last write. Every Sync is one Lua script,
// applied atomically: it adds a batch of outcomes to a rolling window kept
// in the hash, changes state when the trip policy says so, grants half-open
// probe places, and returns the state. There is no lock: nothing can be left
// held by a process that died or gave up waiting. The open period is timed
// on Redis's clock (TIME), so replicas' clocks need not agree.
//
// When Redis is slow, a Sync fails after Timeout; when it is down, after
// FastFail.After failures Sync fails at once (ErrFastFail) until a probe
// succeeds, one per FastFail.Backoff. Either way the breakers decide with
// their local breaker meanwhile and no request waits for Redis. On Redis
// Cluster each breaker is one key, so in one slot; during a Sentinel or
// Cluster failover, syncs fail until the client finds the new master, and
// outcomes of the batches that failed are not counted in the shared state.
//
// It is safe for concurrent use.
type BreakerStore struct {
	c    goredis.UniversalClient
	opts BreakerStoreOptions
	gate *gate
	push push
}

var (
	_ breaker.SharedStore   = (*BreakerStore)(nil)
	_ breaker.SharedWatcher = (*BreakerStore)(nil)
)

// NewBreakerStore returns a BreakerStore on client c, which the caller
// owns and closes. It fails on a nil client, and on one whose options leave
// ContextTimeoutEnabled false (ErrContextTimeoutDisabled), since the
// store's Timeout would then be ignored. It does not call Redis.
func NewBreakerStore(c goredis.UniversalClient, opts BreakerStoreOptions) (*BreakerStore, error) {
	if err := checkClient(c); err != nil {
		return nil, err
	}
	if opts.Prefix == "" {
		opts.Prefix = "pylon:breaker:"
	}
	if opts.StateTTL <= 0 {
		opts.StateTTL = 24 * time.Hour
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 100 * time.Millisecond
	}
	return &BreakerStore{c: c, opts: opts, gate: newGate("breaker store", opts.FastFail, opts.Logger, opts.LogInterval)}, nil
}

// Key returns the Redis key of the breaker called name.
func (s *BreakerStore) Key(name string) string { return s.opts.Prefix + name }

// Failures returns how many syncs got no answer from Redis since the store
// was created: failed, or skipped in the fast-fail state. Export it as a
// metric.
func (s *BreakerStore) Failures() uint64 { return s.gate.count() }

// Down reports whether the store is in its fast-fail state.
func (s *BreakerStore) Down() bool { return s.gate.down() }

// Sync implements [breaker.SharedStore] with one Lua script.
func (s *BreakerStore) Sync(ctx context.Context, name string, req breaker.SyncRequest) (breaker.SharedState, error) {
	if err := s.gate.allow(); err != nil {
		return breaker.SharedState{}, err
	}
	p := req.Policy
	probe := "0"
	if req.Probe {
		probe = "1"
	}
	bucket := max(p.Window.Milliseconds()/int64(max(p.Buckets, 1)), 1)
	cctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	vals, err := breakerScript.Run(cctx, s.c, []string{s.Key(name)},
		req.Gen, req.Successes, req.Failures, req.TrailingFailures, probe,
		p.ConsecutiveFailures, strconv.FormatFloat(p.FailureRatio, 'g', -1, 64), p.MinRequests,
		bucket, max(p.Buckets, 1), max(p.OpenDuration.Milliseconds(), 1), p.MaxRequests,
		max(s.opts.StateTTL.Milliseconds(), 1)).Int64Slice()
	cancel()
	if err == nil && len(vals) != 4 {
		err = fmt.Errorf("pylonredis: breaker script returned %d values, want 4", len(vals))
	}
	s.gate.done(ctx, err)
	if err != nil {
		return breaker.SharedState{}, err
	}
	return breaker.SharedState{
		State: breaker.State(vals[0]),
		Gen:   uint64(vals[1]),
		Wait:  msDuration(vals[2]),
		Probe: vals[3] == 1,
	}, nil
}

func msDuration(ms int64) time.Duration { return time.Duration(ms) * time.Millisecond }
