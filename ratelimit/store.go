package ratelimit

import (
	"context"
	"errors"
	"time"
)

// ErrLimited reports that a request was over a limit. The middleware answers
// it with 429 Too Many Requests; it is exported for code that calls a Store
// directly and wants an error value.
var ErrLimited = errors.New("ratelimit: rate limit exceeded")

// Store keeps the state of rate-limit buckets and makes decisions. The
// in-memory [MemoryStore] serves one process; the nested module
// github.com/pylon-gateway/pylon/redis provides a store shared by several
// gateway replicas with the same semantics.
//
// Implementations must be safe for concurrent use.
type Store interface {
	// Allow decides whether one request from the client identified by key
	// may pass every limit in limits at time now. The request is counted
	// against all the limits if and only if it passes all of them, so a
	// request denied by one limit does not use up the others.
	//
	// limits were prepared by [PrepareLimits] (defaults filled, at most
	// MaxLimits). A store that cannot decide returns an error; the
	// middleware then answers 503 Service Unavailable.
	Allow(ctx context.Context, key string, limits []Limit, now time.Time) (Decision, error)
}

// Result is the outcome of one limit for one request.
type Result struct {
	// Allowed reports whether this limit admitted the request.
	Allowed bool
	// Remaining is the number of requests this limit would still admit
	// right now, after this one.
	Remaining int
	// RetryAfter is how long until this limit admits a request again; zero
	// when Allowed.
	RetryAfter time.Duration
	// Reset is how long until the bucket is full again (the whole burst
	// available).
	Reset time.Duration
}

// Decision is a store's answer for one request: the overall verdict and one
// Result per limit, in the order of the limits asked about. It is a value
// with a fixed-size array so that deciding allocates nothing.
type Decision struct {
	// Allowed reports whether every limit admitted the request.
	Allowed bool
	// Known reports whether Results hold real figures. A store that let a
	// request through without deciding (a Redis store failing open) leaves
	// it false, and the middleware then sends no RateLimit header.
	Known bool
	// N is the number of valid entries in Results.
	N int
	// Results holds one Result per limit; only the first N are valid.
	Results [MaxLimits]Result
}

// RetryAfter returns how long until the request would be admitted: the
// longest RetryAfter of the limits that denied it, or zero when allowed.
func (d *Decision) RetryAfter() time.Duration {
	var ra time.Duration
	for i := 0; i < d.N; i++ {
		ra = max(ra, d.Results[i].RetryAfter)
	}
	return ra
}

// Tightest returns the index of the most restrictive limit: the one with
// the fewest remaining requests (the first denying one when denied), or -1
// when there are no results.
func (d *Decision) Tightest() int {
	best := -1
	for i := 0; i < d.N; i++ {
		r := &d.Results[i]
		if best < 0 {
			best = i
			continue
		}
		b := &d.Results[best]
		if b.Allowed && !r.Allowed || b.Allowed == r.Allowed && r.Remaining < b.Remaining {
			best = i
		}
	}
	return best
}
