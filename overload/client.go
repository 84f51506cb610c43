package overload

import (
	"errors"
	"hash/maphash"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/ratelimit"
)

// ClientOptions configures [PerClientWithOptions]. Every field's zero value
// is a safe default, written in its comment, except MaxInFlight.
type ClientOptions struct {
	// Key derives the client key requests are counted under, from what the
	// Gateway and earlier stages recorded in RequestInfo (ratelimit.ByIP,
	// ratelimit.BySubject, ...). Requests without a key share one count.
	// Nil means ratelimit.ByIP.
	Key ratelimit.KeyFunc
	// MaxInFlight is the most requests one key may have in flight. It is
	// required (at least 1).
	MaxInFlight int
	// MaxKeys bounds how many keys are counted at once (a key is kept only
	// while it has requests in flight). A request with a new key past it is
	// answered 503. Zero means 100000.
	MaxKeys int
	// RetryAfter is the delay sent in Retry-After with a refusal. Zero
	// means 1s.
	RetryAfter time.Duration
	// Skip exempts requests from the limit (health checks and readiness
	// probes, when the middleware is global). Nil means none is exempt.
	Skip func(r *http.Request) bool
}

// ClientLimit counts one PerClient middleware's decisions.
type ClientLimit struct {
	opts   ClientOptions
	stage  pylon.Stage
	seed   maphash.Seed
	shards [32]clientShard
	keys   atomic.Int64

	admitted, shed atomic.Uint64
}

type clientShard struct {
	mu sync.Mutex
	n  map[string]int
}

// PerClient returns a middleware that admits at most max requests in flight
// per client key, like Traefik's InFlightReq. See [PerClientWithOptions].
func PerClient(key ratelimit.KeyFunc, max int) func(http.Handler) http.Handler {
	return MustPerClient(ClientOptions{Key: key, MaxInFlight: max}).Middleware
}

// PerClientWithOptions returns a middleware that admits at most
// opts.MaxInFlight requests in flight per client key. A request over the
// limit is answered at once 429 Too Many Requests with Retry-After, as an
// application/problem+json document from pylon.WriteProblem, and recorded
// in RequestInfo.Shed as "client". It panics on invalid options, so that a
// misconfigured gateway fails at start-up.
//
// Keyed by subject, it declares pylon.RoleNeedsSubject, so that the Gateway
// refuses a route whose chain runs it before the authentication.
func PerClientWithOptions(opts ClientOptions) func(http.Handler) http.Handler {
	return MustPerClient(opts).Middleware
}

// NewPerClient returns the ClientLimit behind a PerClient middleware, for
// its Stats. It fails on invalid options.
func NewPerClient(opts ClientOptions) (*ClientLimit, error) {
	if opts.MaxInFlight < 1 {
		return nil, errors.New("overload: PerClient: MaxInFlight must be at least 1")
	}
	if opts.MaxKeys < 0 || opts.RetryAfter < 0 {
		return nil, errors.New("overload: PerClient: negative MaxKeys or RetryAfter")
	}
	if opts.Key == nil {
		opts.Key = ratelimit.ByIP
	}
	if opts.MaxKeys == 0 {
		opts.MaxKeys = 100000
	}
	if opts.RetryAfter == 0 {
		opts.RetryAfter = time.Second
	}
	c := &ClientLimit{opts: opts, seed: maphash.MakeSeed()}
	for i := range c.shards {
		c.shards[i].n = make(map[string]int)
	}
	if ratelimit.NeedsSubject(opts.Key) {
		c.stage = pylon.Stage{Name: "overload.PerClient (keyed by subject)", Roles: pylon.RoleNeedsSubject}
	}
	return c, nil
}

// MustNewPerClient is like NewPerClient but panics on error.
func MustNewPerClient(opts ClientOptions) *ClientLimit {
	c, err := NewPerClient(opts)
	if err != nil {
		panic(err)
	}
	return c
}

// MustPerClient is MustNewPerClient under its old name.
//
// Deprecated: use MustNewPerClient, named after the function it wraps as
// every Must function is.
func MustPerClient(opts ClientOptions) *ClientLimit { return MustNewPerClient(opts) }

// Middleware returns the limit as a middleware.
func (c *ClientLimit) Middleware(next http.Handler) http.Handler {
	return &clientHandler{c: c, next: next}
}

type clientHandler struct {
	c    *ClientLimit
	next http.Handler
}

func (h *clientHandler) Stage() pylon.Stage { return h.c.stage }

func (h *clientHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c := h.c
	if c.opts.Skip != nil && c.opts.Skip(r) {
		h.next.ServeHTTP(w, r)
		return
	}
	key, _ := c.opts.Key(r)
	sh := &c.shards[maphash.String(c.seed, key)%uint64(len(c.shards))]
	sh.mu.Lock()
	n, known := sh.n[key]
	switch {
	case !known && c.keys.Load() >= int64(c.opts.MaxKeys):
		sh.mu.Unlock()
		c.refuse(w, r, http.StatusServiceUnavailable, "The gateway is tracking too many clients.")
		return
	case n >= c.opts.MaxInFlight:
		sh.mu.Unlock()
		c.refuse(w, r, http.StatusTooManyRequests, "Too many concurrent requests from this client.")
		return
	}
	if !known {
		c.keys.Add(1)
	}
	sh.n[key] = n + 1
	sh.mu.Unlock()
	c.admitted.Add(1)
	defer func() {
		sh.mu.Lock()
		if sh.n[key] <= 1 {
			delete(sh.n, key)
			c.keys.Add(-1)
		} else {
			sh.n[key]--
		}
		sh.mu.Unlock()
	}()
	h.next.ServeHTTP(w, r)
}

func (c *ClientLimit) refuse(w http.ResponseWriter, r *http.Request, status int, detail string) {
	c.shed.Add(1)
	recordShed(r, "client")
	w.Header().Set("Retry-After", retryAfterSeconds(c.opts.RetryAfter))
	pylon.Error(w, r, status, detail)
}

// Stats returns the limit's counters: InFlight is the number of keys with
// requests in flight, Limit the per-key MaxInFlight.
func (c *ClientLimit) Stats() Stats {
	return Stats{InFlight: int(c.keys.Load()), Limit: c.opts.MaxInFlight,
		Admitted: c.admitted.Load(), Shed: c.shed.Load()}
}
