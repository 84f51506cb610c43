package pylonredis

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"
)

// ErrFastFail is the error a store returns, without calling Redis, while it
// is in its fast-fail state (see [FastFail]). It is wrapped with the last
// Redis error.
var ErrFastFail = errors.New("pylonredis: redis failing; not called until the next probe")

// FastFail configures the fast-fail state every store of this package
// has: after After failures in a row (errors or timeouts), the store stops
// calling Redis for Backoff and applies its failure policy at once; then
// one call goes through as a probe (the others still fail fast), and the
// first success ends the fast-fail state. A failed probe starts another
// Backoff. Every field's zero value is a safe default, written in its
// comment.
type FastFail struct {
	// After is how many failures in a row start the fast-fail state.
	// Zero means 3; negative means off (every call goes to Redis).
	After int
	// Backoff is how long Redis is not called between probes. Zero means
	// 1s.
	Backoff time.Duration
}

// gate is the fast-fail state of one store, shared by its calls. It holds
// no lock: a call asks allow, calls Redis if told to, and reports the
// outcome with done.
type gate struct {
	what     string // the store, in log messages
	after    int32
	backoff  int64
	logger   *slog.Logger
	interval int64 // least nanoseconds between two failure reports

	fails    atomic.Int32 // failures in a row
	until    atomic.Int64 // mono() when the backoff ends; 0: not failing fast
	probing  atomic.Bool  // a probe is under way
	failures atomic.Uint64
	skipped  atomic.Uint64
	lastLog  atomic.Int64
	lastErr  atomic.Pointer[error]
}

var errNilClient = errors.New("pylonredis: nil redis client")

var gateEpoch = time.Now()

func gateNow() int64 { return int64(time.Since(gateEpoch)) }

func newGate(what string, f FastFail, logger *slog.Logger, interval time.Duration) *gate {
	g := &gate{what: what, logger: logger, interval: int64(interval)}
	switch {
	case f.After == 0:
		g.after = 3
	case f.After > 0:
		g.after = int32(f.After)
	}
	g.backoff = int64(f.Backoff)
	if g.backoff <= 0 {
		g.backoff = int64(time.Second)
	}
	if g.logger == nil {
		g.logger = slog.Default()
	}
	if g.interval <= 0 {
		g.interval = int64(10 * time.Second)
	}
	return g
}

// allow reports whether a call may go to Redis (nil) or must fail fast
// (ErrFastFail joined with the last Redis error). Once the backoff has
// passed, one call is let through as the probe.
func (g *gate) allow() error {
	until := g.until.Load()
	if until == 0 {
		return nil
	}
	if gateNow() >= until && g.probing.CompareAndSwap(false, true) {
		return nil // this call is the probe
	}
	g.skipped.Add(1)
	if e := g.lastErr.Load(); e != nil {
		return errors.Join(ErrFastFail, *e)
	}
	return ErrFastFail
}

// done reports the outcome of a call allow let through: nil for an answer
// from Redis (redis.Nil included), else the error. An error while ctx (the
// caller's context, before the store's timeout) is done is the caller's
// giving up, not Redis's failure, and is not counted.
func (g *gate) done(ctx context.Context, err error) {
	if err == nil {
		if g.until.Load() != 0 || g.fails.Load() != 0 {
			g.fails.Store(0)
			if g.until.Swap(0) != 0 {
				g.logger.LogAttrs(context.Background(), slog.LevelInfo, "pylonredis: "+g.what+" recovered; calling redis again")
			}
			g.probing.Store(false)
		}
		return
	}
	if ctx != nil && ctx.Err() != nil {
		if g.until.Load() != 0 {
			g.probing.Store(false) // the probe did not decide
		}
		return
	}
	g.failures.Add(1)
	g.lastErr.Store(&err)
	n := g.fails.Add(1)
	now := gateNow()
	if g.after > 0 && n >= g.after {
		g.until.Store(now + g.backoff)
		g.probing.Store(false)
	}
	last := g.lastLog.Load()
	if (last == 0 || now-last >= g.interval) && g.lastLog.CompareAndSwap(last, now) {
		g.logger.LogAttrs(context.Background(), slog.LevelWarn, "pylonredis: "+g.what+" failing",
			slog.String("error", err.Error()), slog.Uint64("failures", g.failures.Load()),
			slog.Bool("fast_fail", g.until.Load() != 0))
	}
}

// count returns the calls that got no answer from Redis: failed, or
// skipped in the fast-fail state.
func (g *gate) count() uint64 { return g.failures.Load() + g.skipped.Load() }

// down reports whether the store is in its fast-fail state.
func (g *gate) down() bool { return g.until.Load() != 0 }
