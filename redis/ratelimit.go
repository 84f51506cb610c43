package pylonredis

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pylon-gateway/pylon/ratelimit"
)

//go:embed gcra.lua
var gcraSource string

// gcraScript is loaded once per server and then called by its SHA (EVALSHA,
// falling back to EVAL when the server does not know it yet).
var gcraScript = redis.NewScript(gcraSource)

// FailurePolicy is what a RateLimitStore does when Redis cannot answer in
// time (down, unreachable, too slow, or an error reply).
type FailurePolicy int

const (
	// FallbackLocal decides with an in-memory limiter with the same
	// limits, so each replica still limits on its own (a client may get up
	// to one budget per replica until Redis returns).
	FallbackLocal FailurePolicy = iota
	// FailOpen admits the request undecided: availability over limits.
	// Responses then carry no RateLimit header.
	FailOpen
	// FailClosed refuses the request: Allow returns an error wrapping
	// ErrUnavailable, which the ratelimit middleware answers with 503.
	FailClosed
)

// String returns the policy's name.
func (p FailurePolicy) String() string {
	switch p {
	case FallbackLocal:
		return "fallback-local"
	case FailOpen:
		return "fail-open"
	case FailClosed:
		return "fail-closed"
	}
	return fmt.Sprintf("FailurePolicy(%d)", int(p))
}

// ErrUnavailable is returned (wrapped with the cause) by a FailClosed store
// when Redis cannot decide.
var ErrUnavailable = errors.New("pylonredis: rate-limit store unavailable")

// ErrContextTimeoutDisabled is returned by NewRateLimitStore,
// NewBreakerStore and NewCacheStore for a *redis.Client, *redis.ClusterClient
// or *redis.Ring whose options leave ContextTimeoutEnabled false: go-redis
// would then ignore the store's per-call Timeout and a hung Redis would hold
// each call for the client's ReadTimeout or WriteTimeout (go-redis v9.23
// defaults: 5s each, 5s DialTimeout, and a pool wait of ReadTimeout + 1s).
// A client of another type (a wrapper of the caller's) is taken as it is:
// it must honour context deadlines itself.
var ErrContextTimeoutDisabled = errors.New("pylonredis: the redis client must be created with ContextTimeoutEnabled: true")

// RateLimitOptions configures a [RateLimitStore].
type RateLimitOptions struct {
	// Prefix starts every key the store writes. It must not contain '{'
	// or '}'. Zero means "pylon:rl:".
	Prefix string
	// Timeout bounds each decision's round trip to Redis. Zero means 50ms.
	Timeout time.Duration
	// OnFailure is the failure policy. Zero means FallbackLocal.
	OnFailure FailurePolicy
	// Local is the in-memory store used by FallbackLocal. Zero means a new
	// ratelimit.MemoryStore with default options.
	Local *ratelimit.MemoryStore
	// Logger receives failure reports, at most one per LogInterval. Zero
	// means slog.Default().
	Logger *slog.Logger
	// LogInterval is the least time between two failure reports. Zero
	// means 10s.
	LogInterval time.Duration
	// FastFail configures the fast-fail state: while Redis is known to be
	// failing, decisions apply OnFailure at once, without calling Redis,
	// until a probe succeeds. Zero means the defaults of [FastFail].
	FastFail FastFail
	// ServerTime makes decisions on Redis's clock (the TIME command) instead
	// of the time passed to Allow, for replicas whose clocks disagree. Zero
	// means the caller's time, which lets tests inject time; replicas then
	// need synchronized clocks (NTP), since skew shifts their buckets.
	ServerTime bool
}

// RateLimitStore is a ratelimit.Store kept in Redis and shared by every
// gateway replica that uses the same Redis and Prefix. Each decision is one
// round trip: a Lua script, loaded once and called by SHA, runs GCRA
// atomically for all the limits of a request, with the same arithmetic as
// ratelimit.MemoryStore, so both make the same decisions.
//
// A bucket is a Redis string key "<Prefix>{<client key>}:<limit name>"
// holding the GCRA theoretical arrival time in microseconds, with a TTL equal
// to the time its bucket needs to be full again; idle clients thus leave no
// keys behind. The client key is a hash tag, so all the buckets of one
// request are in one Redis Cluster slot and the script may touch them
// together.
//
// When Redis fails, the store applies its FailurePolicy, counts the failure
// (see Failures) and logs at most one report per LogInterval:
//
//   - Slow or hung: a decision waits at most Timeout, then applies the
//     policy. After FastFail.After such failures in a row the store stops
//     calling Redis for FastFail.Backoff: decisions apply the policy at once
//     (microseconds), and one call per Backoff probes for recovery.
//   - Down (connections refused): the same, each failure costing a refused
//     dial rather than a timeout.
//   - Failing over (Sentinel, or a Cluster master): decisions fail and apply
//     the policy until the client reaches the new master; buckets written
//     to the old master and not yet replicated are lost, so a client may be
//     admitted again up to its burst. Buckets replicated before the
//     failover are kept.
//   - Cluster: all the buckets of one request share a slot (the client key
//     is a hash tag), the script is loaded on every node when the store is
//     created, and a node that does not know it yet is sent the script
//     (EVALSHA, then EVAL), so a resharded or new node costs one more round
//     trip, not a failure.
//
// A decision that times out may still run on Redis once it answers: the
// request is then counted against its limits although it was decided by the
// policy (refused, admitted, or decided locally). The overcount is at most
// one request per timed-out decision; since the fast-fail state stops
// calling Redis after FastFail.After failures in a row, it is at most
// FastFail.After requests per outage plus one per probe.
type RateLimitStore struct {
	client redis.Scripter
	opts   RateLimitOptions
	local  *ratelimit.MemoryStore
	gate   *gate
}

// NewRateLimitStore returns a RateLimitStore using client, which may be a
// *redis.Client (Sentinel's failover client included), *redis.ClusterClient,
// *redis.Ring or any other redis.Scripter. It fails when the options are
// invalid or the client does not honour context deadlines (see
// ErrContextTimeoutDisabled).
//
// It loads the script on Redis (on every node of a Cluster or Ring), waiting
// at most Timeout: a Redis that is down at start-up is not an error, the
// script is sent again with the first decisions.
func NewRateLimitStore(client redis.Scripter, opts RateLimitOptions) (*RateLimitStore, error) {
	if client == nil {
		return nil, errNilClient
	}
	if err := checkClient(client); err != nil {
		return nil, err
	}
	if opts.Prefix == "" {
		opts.Prefix = "pylon:rl:"
	}
	if strings.ContainsAny(opts.Prefix, "{}") {
		return nil, fmt.Errorf("pylonredis: key prefix %q must not contain '{' or '}'", opts.Prefix)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 50 * time.Millisecond
	}
	if opts.OnFailure < FallbackLocal || opts.OnFailure > FailClosed {
		return nil, fmt.Errorf("pylonredis: unknown failure policy %d", int(opts.OnFailure))
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.LogInterval <= 0 {
		opts.LogInterval = 10 * time.Second
	}
	s := &RateLimitStore{client: client, opts: opts, local: opts.Local,
		gate: newGate("rate-limit store ("+opts.OnFailure.String()+")", opts.FastFail, opts.Logger, opts.LogInterval)}
	if s.local == nil && opts.OnFailure == FallbackLocal {
		s.local = ratelimit.NewMemoryStore(ratelimit.MemoryOptions{})
	}
	ctx, cancel := context.WithTimeout(context.Background(), opts.Timeout)
	defer cancel()
	_ = loadScript(ctx, client, gcraScript) // best effort, see above
	return s, nil
}

// loadScript loads sc on every node of a cluster or ring, or on the one
// server of a client.
func loadScript(ctx context.Context, c redis.Scripter, sc *redis.Script) error {
	switch c := c.(type) {
	case *redis.ClusterClient:
		return c.ForEachShard(ctx, func(ctx context.Context, n *redis.Client) error {
			return sc.Load(ctx, n).Err()
		})
	case *redis.Ring:
		return c.ForEachShard(ctx, func(ctx context.Context, n *redis.Client) error {
			return sc.Load(ctx, n).Err()
		})
	}
	return sc.Load(ctx, c).Err()
}

// Failures returns how many decisions Redis failed to make since the store
// was created (each one handled by the failure policy): failed calls and
// calls skipped in the fast-fail state. Export it as a metric.
func (s *RateLimitStore) Failures() uint64 { return s.gate.count() }

// Down reports whether the store is in its fast-fail state.
func (s *RateLimitStore) Down() bool { return s.gate.down() }

// Key returns the Redis key of the bucket of one client key and limit name.
func (s *RateLimitStore) Key(clientKey, limitName string) string {
	return s.opts.Prefix + "{" + clientKey + "}:" + limitName
}

// Allow implements ratelimit.Store.
func (s *RateLimitStore) Allow(ctx context.Context, key string, limits []ratelimit.Limit, now time.Time) (ratelimit.Decision, error) {
	n := min(len(limits), ratelimit.MaxLimits)
	limits = limits[:n]
	keys := make([]string, n)
	args := make([]any, 1+2*n)
	if s.opts.ServerTime {
		args[0] = ""
	} else {
		args[0] = now.UnixMicro()
	}
	for i, l := range limits {
		keys[i] = s.Key(key, l.Name)
		args[1+2*i] = int64(l.Window/time.Microsecond) / int64(l.Quota)
		args[2+2*i] = l.Burst
	}
	if err := s.gate.allow(); err != nil {
		return s.fail(key, limits, now, err)
	}
	cctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	vals, err := gcraScript.Run(cctx, s.client, keys, args...).Int64Slice()
	cancel()
	if err == nil && len(vals) != 1+4*n {
		err = fmt.Errorf("pylonredis: script returned %d values, want %d", len(vals), 1+4*n)
	}
	s.gate.done(ctx, err)
	if err != nil {
		if ctx.Err() != nil { // the caller gave up: not Redis's failure
			return ratelimit.Decision{}, ctx.Err()
		}
		return s.fail(key, limits, now, err)
	}
	d := ratelimit.Decision{Allowed: vals[0] == 1, Known: true, N: n}
	for i := 0; i < n; i++ {
		v := vals[1+4*i:]
		d.Results[i] = ratelimit.Result{
			Allowed:    v[0] == 1,
			Remaining:  int(v[1]),
			RetryAfter: time.Duration(v[2]) * time.Microsecond,
			Reset:      time.Duration(v[3]) * time.Microsecond,
		}
	}
	return d, nil
}

// fail applies the failure policy; the gate has counted and logged err.
func (s *RateLimitStore) fail(key string, limits []ratelimit.Limit, now time.Time, err error) (ratelimit.Decision, error) {
	switch s.opts.OnFailure {
	case FailOpen:
		return ratelimit.Decision{Allowed: true, N: len(limits)}, nil
	case FailClosed:
		return ratelimit.Decision{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return s.local.AllowAt(key, limits, now), nil
}
