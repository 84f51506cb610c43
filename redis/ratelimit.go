package pylonredis

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
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

// ErrContextTimeoutDisabled is returned by NewRateLimitStore for a client
// whose options leave ContextTimeoutEnabled false: go-redis would then ignore
// the store's per-call Timeout and a hung Redis would hold requests for the
// client's ReadTimeout (3s by default).
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
// (see Failures) and logs at most one report per LogInterval.
type RateLimitStore struct {
	client   redis.Scripter
	opts     RateLimitOptions
	local    *ratelimit.MemoryStore
	failures atomic.Uint64
	lastLog  atomic.Int64 // unix nanoseconds of the last failure report
}

// NewRateLimitStore returns a RateLimitStore using client, which may be a
// *redis.Client, *redis.ClusterClient, *redis.Ring or any other
// redis.Scripter. It fails when the options are invalid or the client does
// not honour context deadlines (see ErrContextTimeoutDisabled).
func NewRateLimitStore(client redis.Scripter, opts RateLimitOptions) (*RateLimitStore, error) {
	if client == nil {
		return nil, errors.New("pylonredis: nil redis client")
	}
	switch c := client.(type) {
	case *redis.Client:
		if !c.Options().ContextTimeoutEnabled {
			return nil, ErrContextTimeoutDisabled
		}
	case *redis.ClusterClient:
		if !c.Options().ContextTimeoutEnabled {
			return nil, ErrContextTimeoutDisabled
		}
	case *redis.Ring:
		if !c.Options().ContextTimeoutEnabled {
			return nil, ErrContextTimeoutDisabled
		}
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
	s := &RateLimitStore{client: client, opts: opts, local: opts.Local}
	if s.local == nil && opts.OnFailure == FallbackLocal {
		s.local = ratelimit.NewMemoryStore(ratelimit.MemoryOptions{})
	}
	return s, nil
}

// Failures returns how many decisions Redis failed to make since the store
// was created (each one handled by the failure policy).
func (s *RateLimitStore) Failures() uint64 { return s.failures.Load() }

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
	cctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	vals, err := gcraScript.Run(cctx, s.client, keys, args...).Int64Slice()
	cancel()
	if err == nil && len(vals) != 1+4*n {
		err = fmt.Errorf("pylonredis: script returned %d values, want %d", len(vals), 1+4*n)
	}
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

func (s *RateLimitStore) fail(key string, limits []ratelimit.Limit, now time.Time, err error) (ratelimit.Decision, error) {
	s.failures.Add(1)
	t := time.Now().UnixNano()
	last := s.lastLog.Load()
	if t-last >= int64(s.opts.LogInterval) && s.lastLog.CompareAndSwap(last, t) {
		s.opts.Logger.Warn("pylonredis: rate-limit store failing",
			"policy", s.opts.OnFailure.String(), "error", err, "failures", s.failures.Load())
	}
	switch s.opts.OnFailure {
	case FailOpen:
		return ratelimit.Decision{Allowed: true, N: len(limits)}, nil
	case FailClosed:
		return ratelimit.Decision{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return s.local.AllowAt(key, limits, now), nil
}
