package discovery

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/pylon-gateway/pylon"
)

// PollOptions configures [Poll]. Every field's zero value is a safe
// default, written in its comment.
type PollOptions struct {
	// Interval is the time between refreshes when the resolver gives no
	// TTL, and after a failed refresh. Zero means 30s.
	Interval time.Duration
	// MinInterval is the shortest time between refreshes, whatever the
	// TTL (a TTL of 0 is common). Zero means 1s.
	MinInterval time.Duration
	// MaxInterval is the longest time between refreshes, whatever the
	// TTL, so that a record with a TTL of a day is still looked at. Zero
	// means 5m.
	MaxInterval time.Duration
	// Jitter is the fraction (0 to 1) by which each wait is shortened at
	// random, so that gateway replicas do not refresh in step. Zero means
	// 0.1; negative means none.
	Jitter float64
	// Timeout bounds each Resolve. Zero means 5s.
	Timeout time.Duration
}

// Poll returns a Source that asks r at once, then again when the answer's
// TTL runs out (clamped to [MinInterval, MaxInterval], Interval when r
// gives none), each wait shortened by up to Jitter at random. A failed
// Resolve is reported once and tried again after Interval; the last good
// set stands meanwhile.
func Poll(r Resolver, opts PollOptions) Source {
	p := &poller{r: r, opts: opts, after: time.After}
	if p.opts.Interval <= 0 {
		p.opts.Interval = 30 * time.Second
	}
	if p.opts.MinInterval <= 0 {
		p.opts.MinInterval = time.Second
	}
	if p.opts.MaxInterval <= 0 {
		p.opts.MaxInterval = 5 * time.Minute
	}
	if p.opts.MaxInterval < p.opts.MinInterval {
		p.opts.MaxInterval = p.opts.MinInterval
	}
	switch {
	case p.opts.Jitter == 0:
		p.opts.Jitter = 0.1
	case p.opts.Jitter < 0:
		p.opts.Jitter = 0
	case p.opts.Jitter > 1:
		p.opts.Jitter = 1
	}
	if p.opts.Timeout <= 0 {
		p.opts.Timeout = 5 * time.Second
	}
	return p
}

type poller struct {
	r     Resolver
	opts  PollOptions
	after func(time.Duration) <-chan time.Time // time.After; injected in tests
}

func (p *poller) Watch(ctx context.Context, update func([]pylon.Endpoint), report func(error)) {
	for {
		rctx, cancel := context.WithTimeout(ctx, p.opts.Timeout)
		res, err := p.r.Resolve(rctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			report(err)
		} else {
			update(res.Endpoints)
		}
		select {
		case <-ctx.Done():
			return
		case <-p.after(p.wait(res.TTL, err)):
		}
	}
}

// wait returns the time until the next refresh after an answer with ttl
// (or a failure).
func (p *poller) wait(ttl time.Duration, err error) time.Duration {
	d := ttl
	if err != nil || ttl <= 0 {
		d = p.opts.Interval
	}
	d = min(max(d, p.opts.MinInterval), p.opts.MaxInterval)
	if j := p.opts.Jitter; j > 0 {
		d -= time.Duration(rand.Float64() * j * float64(d))
	}
	return max(d, time.Millisecond)
}
