package ratelimit

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"golang.org/x/time/rate"
)

// MaxLimits is the largest number of limits one request can be counted
// against (the limits of a middleware, or of an override).
const MaxLimits = 8

// Limits on a Limit's fields, checked by [Limit.Validate].
const (
	maxQuota   = 1_000_000_000
	maxBurst   = 1_000_000_000
	maxWindow  = 366 * 24 * time.Hour
	maxNameLen = 64
)

// Limit is one quota policy: at most Quota requests per Window, with bursts
// of up to Burst requests. It is enforced with GCRA (the generic cell rate
// algorithm), which is a token bucket of size Burst refilled with one token
// every Window/Quota: from an idle start a client may send Burst requests at
// once, then one every Window/Quota.
//
// Over any span of time d, a limit admits at most Burst + Quota×d/Window
// requests.
type Limit struct {
	// Name identifies the policy in the RateLimit-Policy and RateLimit
	// response headers and, with the client key, names the bucket in a
	// Store: two middlewares that share a Store and a Name share buckets.
	// It may hold ASCII letters, digits, '-', '_' and '.' (at most 64).
	// Empty means derived from the quota and window, as "100-per-60s".
	Name string
	// Quota is the number of requests admitted per Window. It must be
	// positive.
	Quota int
	// Window is the period the Quota applies to; it must be a whole number
	// of seconds, since the RateLimit-Policy header has no sub-second
	// windows. Zero means one second.
	Window time.Duration
	// Burst is the largest number of requests admitted at once after an
	// idle period. Zero means Quota.
	Burst int
}

// PerSecond returns a Limit of n requests per second.
func PerSecond(n int) Limit { return Limit{Quota: n, Window: time.Second} }

// PerMinute returns a Limit of n requests per minute.
func PerMinute(n int) Limit { return Limit{Quota: n, Window: time.Minute} }

// PerHour returns a Limit of n requests per hour.
func PerHour(n int) Limit { return Limit{Quota: n, Window: time.Hour} }

// WithBurst returns a copy of l with the given Burst.
func (l Limit) WithBurst(burst int) Limit { l.Burst = burst; return l }

// Named returns a copy of l with the given Name.
func (l Limit) Named(name string) Limit { l.Name = name; return l }

// Rate returns the limit's sustained rate as an x/time/rate Limit, so that a
// rate.Limiter built with rate.NewLimiter(l.Rate(), l.Burst) makes the same
// decisions as this package for the same request times (up to rounding).
func (l Limit) Rate() rate.Limit {
	l = l.withDefaults()
	if l.Quota <= 0 {
		return 0
	}
	return rate.Limit(float64(l.Quota) / l.Window.Seconds())
}

// Interval returns the time one request's worth of quota takes to refill:
// Window/Quota.
func (l Limit) Interval() time.Duration {
	l = l.withDefaults()
	if l.Quota <= 0 {
		return 0
	}
	return l.Window / time.Duration(l.Quota)
}

// withDefaults fills the zero fields.
func (l Limit) withDefaults() Limit {
	if l.Window == 0 {
		l.Window = time.Second
	}
	if l.Burst == 0 {
		l.Burst = l.Quota
	}
	if l.Name == "" && l.Quota > 0 && l.Window > 0 {
		l.Name = strconv.Itoa(l.Quota) + "-per-" + strconv.FormatInt(int64(l.Window/time.Second), 10) + "s"
	}
	return l
}

// ErrInvalidLimit is returned (wrapped, with the reason) for a Limit that
// cannot be enforced or advertised.
var ErrInvalidLimit = errors.New("ratelimit: invalid limit")

// Validate reports whether l, with its defaults filled, can be enforced and
// advertised. The error wraps ErrInvalidLimit.
func (l Limit) Validate() error {
	l = l.withDefaults()
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w %q: %s", ErrInvalidLimit, l.Name, fmt.Sprintf(format, args...))
	}
	switch {
	case l.Quota <= 0 || l.Quota > maxQuota:
		return bad("quota %d is not in 1..%d", l.Quota, maxQuota)
	case l.Window < time.Second || l.Window > maxWindow || l.Window%time.Second != 0:
		return bad("window %v is not a whole number of seconds between 1s and %v", l.Window, maxWindow)
	case l.Burst < 1 || l.Burst > maxBurst:
		return bad("burst %d is not in 1..%d", l.Burst, maxBurst)
	case l.Window/time.Duration(l.Quota) < time.Microsecond:
		return bad("quota %d per %v refills faster than one request per microsecond", l.Quota, l.Window)
	case float64(l.Burst)*float64(l.Window/time.Microsecond)/float64(l.Quota) > 1<<50:
		// The bucket's capacity in microseconds must stay exact in the
		// Redis script's double-precision arithmetic.
		return bad("burst %d takes longer than 35 years to refill", l.Burst)
	case len(l.Name) > maxNameLen:
		return bad("name is longer than %d bytes", maxNameLen)
	}
	for i := 0; i < len(l.Name); i++ {
		if !nameByte(l.Name[i]) {
			return bad("name may hold only ASCII letters, digits, '-', '_' and '.'")
		}
	}
	return nil
}

func nameByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '-' || c == '_' || c == '.'
}

// prepareLimits validates limits, fills their defaults and checks that names
// are unique. who names the caller in error messages.
func prepareLimits(limits []Limit) ([]Limit, error) {
	if len(limits) == 0 {
		return nil, fmt.Errorf("%w: no limits", ErrInvalidLimit)
	}
	if len(limits) > MaxLimits {
		return nil, fmt.Errorf("%w: %d limits, at most %d", ErrInvalidLimit, len(limits), MaxLimits)
	}
	out := make([]Limit, len(limits))
	for i, l := range limits {
		if err := l.Validate(); err != nil {
			return nil, err
		}
		out[i] = l.withDefaults()
		for _, prev := range out[:i] {
			if prev.Name == out[i].Name {
				return nil, fmt.Errorf("%w %q: two limits with the same name", ErrInvalidLimit, prev.Name)
			}
		}
	}
	return out, nil
}

// PrepareLimits validates limits and returns a copy with every default
// filled in (names, windows, bursts), as a [Store] receives them. Stores
// may rely on receiving only prepared limits.
func PrepareLimits(limits ...Limit) ([]Limit, error) { return prepareLimits(limits) }

// gcra is one GCRA step for a bucket whose theoretical arrival time is tat
// (zero or in the past for an idle bucket), at time now, with the given
// emission interval and burst, all in microseconds (the Redis store's script
// is the same arithmetic, in the same unit).
//
// It returns the bucket's new tat (unchanged when denied) and the result.
func gcra(tat, now, interval, burst int64) (newTAT int64, ok bool, remaining, retryAfter, reset int64) {
	if tat < now {
		tat = now
	}
	capacity := interval * burst
	next := tat + interval
	allowAt := next - capacity
	if now < allowAt {
		remaining = (now + capacity - tat) / interval
		if remaining < 0 {
			remaining = 0
		}
		return tat, false, remaining, allowAt - now, tat - now
	}
	return next, true, (now + capacity - next) / interval, 0, next - now
}
