package ratelimit

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/pylon-gateway/pylon"
)

// MissingKey is what the middleware does with a request whose KeyFunc found
// no key. No policy lets such a request through unlimited.
//
// The values are fixed (not iota): MissingKeyReject400 and
// MissingKeyReject401 keep the numbers they had in v0.1, and 0 is
// MissingKeyDefault, the zero value of Options.MissingKey.
type MissingKey int

const (
	// MissingKeyDefault (the zero value) decides by the key function: a
	// limit whose key needs an authenticated subject (BySubject, or a
	// Compose that includes it) answers as MissingKeyReject401, so that
	// requests without a subject are never pooled by a subject key; any
	// other key (ByIP for a request that has no IP address, as on a unix
	// socket; ByHeader without the header; ByRoute outside a route)
	// answers as MissingKeyShared.
	MissingKeyDefault MissingKey = 0
	// MissingKeyReject400 answers 400 Bad Request (for a required API key
	// header, say).
	MissingKeyReject400 MissingKey = 1
	// MissingKeyReject401 refuses the request as not identified: an
	// unauthenticated request gets 401 Unauthorized with a
	// WWW-Authenticate challenge (Options.Challenge), since a request
	// without a subject on a per-subject limit has not been
	// authenticated; an authenticated one whose authentication named no
	// subject (a JWT without "sub", say) gets 403 Forbidden, since
	// authenticating again would not help: the limit needs an identified
	// client. Pooling such requests would let one client exhaust every
	// other's budget.
	MissingKeyReject401 MissingKey = 2
	// MissingKeyShared counts every key-less request in one shared bucket
	// (the key "anonymous"), under the same limits as everyone else: for
	// routes where authentication is optional and anonymous callers may
	// share one budget, or for an address-keyed limit on a listener whose
	// peers have no IP address.
	MissingKeyShared MissingKey = 3
)

// DefaultChallenge is the WWW-Authenticate challenge of a 401 when
// Options.Challenge is empty: the Bearer scheme with jwtauth's default
// realm (RFC 6750 §3 wants at least one auth-param).
const DefaultChallenge = `Bearer realm="api"`

// AnonymousKey is the key that key-less requests share under
// MissingKeyShared.
const AnonymousKey = "anonymous"

// OverrideFunc returns the limits for a client key that has its own (a
// premium client gets more, an abusive one less), or ok false for the
// middleware's limits. It is called for every request, so it should be a map
// lookup or similar. The returned limits are validated on every call;
// invalid ones are ignored in favour of the defaults, so prefer preparing
// them once with [PrepareLimits].
type OverrideFunc func(key string) (limits []Limit, ok bool)

// Options configures the middleware returned by [NewWithOptions].
type Options struct {
	// Limits are the limits every request must pass, all of them (for
	// example PerSecond(10) and PerHour(1000)); at most MaxLimits. A
	// request is counted against all of them only if it passes all.
	// NewWithOptions panics when there are none or one is invalid.
	Limits []Limit
	// Key derives the client key. Zero means ByIP.
	Key KeyFunc
	// Store keeps the buckets. Zero means a new MemoryStore with default
	// MemoryOptions, private to this middleware.
	Store Store
	// Overrides gives some keys limits of their own. Zero means none.
	Overrides OverrideFunc
	// MissingKey is the policy for requests without a key. Zero means
	// MissingKeyDefault: refused as not identified when the key needs a
	// subject (never pooled by a subject key), else counted in the shared
	// AnonymousKey bucket.
	MissingKey MissingKey
	// Challenge is the WWW-Authenticate value of a 401 for a request
	// without a subject (the scheme and realm of the route's
	// authentication, say `ApiKey header="X-API-Key"`). Empty means
	// DefaultChallenge.
	Challenge string
	// XRateLimitHeaders adds the older X-RateLimit-Limit, -Remaining and
	// -Reset (delta seconds) headers for the most restrictive limit, next
	// to the RateLimit-Policy and RateLimit headers. Zero means off.
	XRateLimitHeaders bool
	// HideHeaders sends no RateLimit-Policy, RateLimit or X-RateLimit-*
	// headers, for services that must not disclose their limits; a 429
	// still carries Retry-After. Zero means headers are sent.
	HideHeaders bool
	// Skip exempts requests from limiting (health checks, say). CORS
	// preflight requests are never counted, whatever Skip says. Zero means
	// none is exempt.
	Skip func(r *http.Request) bool
	// Now returns the current time. Zero means time.Now.
	Now func() time.Time
}

// New returns a middleware that limits requests by key to the given limits,
// keeping buckets in memory. It fails when no limit is given or a limit is
// invalid (ErrInvalidLimit). See [NewWithOptions].
func New(key KeyFunc, limits ...Limit) (pylon.Middleware, error) {
	return NewWithOptions(Options{Key: key, Limits: limits})
}

// MustNew is New for start-up wiring: it panics where New fails, so that a
// misconfigured gateway stops before it serves.
func MustNew(key KeyFunc, limits ...Limit) pylon.Middleware {
	return must(New(key, limits...))
}

// MustNewWithOptions is NewWithOptions for start-up wiring: it panics where
// NewWithOptions fails.
func MustNewWithOptions(opts Options) pylon.Middleware {
	return must(NewWithOptions(opts))
}

func must(mw pylon.Middleware, err error) pylon.Middleware {
	if err != nil {
		panic(err)
	}
	return mw
}

type limiter struct {
	stage  pylon.Stage
	opts   Options
	limits []Limit
	policy string // RateLimit-Policy field value for limits
	now    func() time.Time
}

// NewWithOptions returns a rate-limiting middleware.
//
// Each request (except CORS preflights and those Skip exempts) is keyed,
// then asked of the Store against every limit. An admitted request passes to
// the next handler; a denied one gets 429 Too Many Requests, a problem
// document of type
// https://iana.org/assignments/http-problem-types#quota-exceeded and a
// Retry-After header (whole seconds, rounded up). When the store fails, the
// answer is 503 Service Unavailable.
//
// Unless HideHeaders is set, every response it handles carries the
// RateLimit-Policy and RateLimit header fields of
// draft-ietf-httpapi-ratelimit-headers-11 (May 2026), structured-field lists
// with one item per limit:
//
//	RateLimit-Policy: "10-per-1s";q=10;w=1, "1000-per-3600s";q=1000;w=3600
//	RateLimit: "10-per-1s";r=9;t=1, "1000-per-3600s";r=999;t=4
//
// where q is the quota per window w (seconds), r the requests still
// admitted now, and t the seconds until the bucket is full again (on a 429
// response, the Retry-After delay, since the draft asks that Retry-After
// not be earlier than the end of the effective window). Headers are set before the next handler runs; a handler may
// add its own.
//
// The decision is recorded in the request's RequestInfo.RateLimit: the key,
// the verdict and, for the most restrictive limit, the quota and the
// requests remaining.
//
// A request without a key is answered by Options.MissingKey: by default, a
// limit keyed by subject refuses it (401 with WWW-Authenticate when it is
// not authenticated, 403 when its authentication named no subject), and
// any other limit counts it in the shared AnonymousKey bucket.
//
// It fails when Options.Limits is empty or holds an invalid Limit
// (ErrInvalidLimit), when Options.MissingKey is not a known policy, or when
// Options.Challenge is not a valid header value.
func NewWithOptions(opts Options) (pylon.Middleware, error) {
	limits, err := prepareLimits(opts.Limits)
	if err != nil {
		return nil, err
	}
	if opts.Key == nil {
		opts.Key = ByIP
	}
	if opts.Store == nil {
		opts.Store = NewMemoryStore(MemoryOptions{})
	}
	if opts.MissingKey < MissingKeyDefault || opts.MissingKey > MissingKeyShared {
		return nil, fmt.Errorf("ratelimit: unknown MissingKey policy %d", opts.MissingKey)
	}
	if opts.Challenge == "" {
		opts.Challenge = DefaultChallenge
	} else if !httpguts.ValidHeaderFieldValue(opts.Challenge) {
		return nil, fmt.Errorf("ratelimit: Challenge %q is not a valid header value", opts.Challenge)
	}
	subject := NeedsSubject(opts.Key)
	if opts.MissingKey == MissingKeyDefault {
		opts.MissingKey = MissingKeyShared
		if subject {
			opts.MissingKey = MissingKeyReject401
		}
	}
	l := &limiter{opts: opts, limits: limits, policy: policyField(limits), now: opts.Now}
	if l.now == nil {
		l.now = time.Now
	}
	if subject {
		l.stage = pylon.Stage{Name: "ratelimit (keyed by subject)", Roles: pylon.RoleNeedsSubject}
	}
	return func(next http.Handler) http.Handler {
		return &handler{l: l, next: next}
	}, nil
}

// handler is the middleware's handler; its Stage tells the Gateway when
// the limit needs an authenticated subject.
type handler struct {
	l    *limiter
	next http.Handler
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.l.serve(h.next, w, r) }

func (h *handler) Stage() pylon.Stage { return h.l.stage }

// Header keys in the canonical form http.Header.Set would give them.
const (
	headerPolicy = "Ratelimit-Policy" // RateLimit-Policy
	headerLimit  = "Ratelimit"        // RateLimit
)

func isPreflight(r *http.Request) bool {
	return r.Method == http.MethodOptions && r.Header.Get("Origin") != "" &&
		r.Header.Get("Access-Control-Request-Method") != ""
}

func (l *limiter) serve(next http.Handler, w http.ResponseWriter, r *http.Request) {
	if isPreflight(r) || l.opts.Skip != nil && l.opts.Skip(r) || l.admit(w, r) {
		next.ServeHTTP(w, r)
	}
}

// admit decides on r, records the decision, sets the headers and, when r
// may not pass, answers it; it reports whether r may pass. It is apart from
// serve, and not inlined, so that its large frame (a Decision) is off the
// stack while the rest of the chain runs.
//
//go:noinline
func (l *limiter) admit(w http.ResponseWriter, r *http.Request) bool {
	key, ok := l.opts.Key(r)
	if !ok {
		switch l.opts.MissingKey {
		case MissingKeyReject400:
			pylon.Error(w, r, http.StatusBadRequest, "The request carries no client key for rate limiting.")
			return false
		case MissingKeyReject401:
			if pylon.Info(r.Context()).Authenticated() {
				pylon.Error(w, r, http.StatusForbidden, "This limit counts requests per identified client; the request's authentication names none.")
				return false
			}
			w.Header().Set("WWW-Authenticate", l.opts.Challenge)
			pylon.Error(w, r, http.StatusUnauthorized, "Authentication is required.")
			return false
		}
		key = AnonymousKey
	}
	limits, policy := l.limits, l.policy
	if l.opts.Overrides != nil {
		if ov, ok := l.opts.Overrides(key); ok {
			if prepared, err := prepareLimits(ov); err == nil {
				limits, policy = prepared, policyField(prepared)
			}
		}
	}

	d, err := l.opts.Store.Allow(r.Context(), key, limits, l.now())
	info := pylon.Info(r.Context())
	if err != nil {
		if info != nil {
			info.RateLimit = pylon.RateLimitInfo{Key: key}
		}
		pylon.Error(w, r, http.StatusServiceUnavailable, "The rate limiter is unavailable.")
		return false
	}
	tight := d.Tightest()
	if info != nil {
		info.RateLimit = pylon.RateLimitInfo{Key: key, Decided: true, Allowed: d.Allowed}
		if d.Known && tight >= 0 {
			info.RateLimit.Limit = limits[tight].Quota
			info.RateLimit.Remaining = d.Results[tight].Remaining
		}
	}
	h := w.Header()
	var retry int64
	if !d.Allowed {
		retry = ceilSeconds(d.RetryAfter())
		h.Set("Retry-After", strconv.FormatInt(retry, 10))
	}
	if !l.opts.HideHeaders {
		if d.Known && d.N == len(limits) {
			// Both values in one allocation, under keys already in
			// canonical form (h.Set would allocate "Ratelimit-Policy"
			// anew from "RateLimit-Policy" on every call). Each slice's
			// capacity is 1, so an append to one cannot touch the other.
			vals := &[2]string{policy, limitField(limits, &d, retry)}
			h[headerPolicy] = vals[0:1:1]
			h[headerLimit] = vals[1:2:2]
			if l.opts.XRateLimitHeaders && tight >= 0 {
				res := &d.Results[tight]
				reset := ceilSeconds(res.Reset)
				if !d.Allowed {
					reset = retry
				}
				h.Set("X-RateLimit-Limit", strconv.Itoa(limits[tight].Quota))
				h.Set("X-RateLimit-Remaining", strconv.Itoa(res.Remaining))
				h.Set("X-RateLimit-Reset", strconv.FormatInt(reset, 10))
			}
		} else {
			h[headerPolicy] = []string{policy}
		}
	}
	if !d.Allowed {
		pylon.WriteProblem(w, r, pylon.Problem{
			Type:   "https://iana.org/assignments/http-problem-types#quota-exceeded",
			Status: http.StatusTooManyRequests,
			Detail: "Rate limit exceeded; retry after " + strconv.FormatInt(retry, 10) + " seconds.",
		})
		return false
	}
	return true
}

// ceilSeconds rounds d up to whole seconds, at least 1 when positive.
func ceilSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Second - 1) / time.Second)
}

// policyField formats the RateLimit-Policy field value (an SF List of
// Strings with q and w parameters).
func policyField(limits []Limit) string {
	b := make([]byte, 0, 32*len(limits))
	for i, l := range limits {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = append(b, '"')
		b = append(b, l.Name...)
		b = append(b, `";q=`...)
		b = strconv.AppendInt(b, int64(l.Quota), 10)
		b = append(b, ";w="...)
		b = strconv.AppendInt(b, int64(l.Window/time.Second), 10)
	}
	return string(b)
}

// limitField formats the RateLimit field value (an SF List of Strings with
// r and t parameters). On a denied request every t is retry, so that
// Retry-After is not earlier than the end of any effective window.
func limitField(limits []Limit, d *Decision, retry int64) string {
	var buf [256]byte
	b := buf[:0]
	for i := 0; i < d.N; i++ {
		res := &d.Results[i]
		if i > 0 {
			b = append(b, ", "...)
		}
		b = append(b, '"')
		b = append(b, limits[i].Name...)
		b = append(b, `";r=`...)
		b = strconv.AppendInt(b, int64(res.Remaining), 10)
		t := ceilSeconds(res.Reset)
		if !d.Allowed {
			t = retry
		}
		b = append(b, ";t="...)
		b = strconv.AppendInt(b, t, 10)
	}
	return string(b)
}
