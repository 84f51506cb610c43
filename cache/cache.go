package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pylon-gateway/pylon"
)

// Cache statuses recorded in pylon.RequestInfo.Cache.
const (
	// StatusHit: served from a fresh stored response.
	StatusHit = "hit"
	// StatusStale: served from a stale stored response (stale-while-
	// revalidate, stale-if-error, or a client's max-stale).
	StatusStale = "stale"
	// StatusRevalidated: the stored response was revalidated with the
	// backend (304) and served.
	StatusRevalidated = "revalidated"
	// StatusMiss: forwarded to the backend; the response may have been
	// stored.
	StatusMiss = "miss"
	// StatusCollapsed: served from the response another request fetched at
	// the same time (request coalescing).
	StatusCollapsed = "collapsed"
	// StatusBypass: the cache did not handle the request (method, request
	// content, precondition, bypass rule, unkeyable request, store
	// unavailable).
	StatusBypass = "bypass"
)

// Options configures a [Cache]. Every field's zero value is a safe default.
type Options struct {
	// Store holds the entries. Several Caches (one per route, with their
	// own options) may share one Store. Nil means a new [MemoryStore] of
	// MaxBytes.
	Store Store
	// MaxBytes bounds the memory store built when Store is nil. Zero means
	// 64 MiB.
	MaxBytes int64
	// MaxObjectSize is the largest response body stored. Larger responses
	// stream through uncached; the cache stops buffering as soon as one
	// exceeds it. Zero means 1 MiB.
	MaxObjectSize int64
	// DefaultTTL is the freshness lifetime of a response that has no
	// explicit one (no s-maxage, max-age or Expires) and a heuristically
	// cacheable status (200, 203, 204, 300, 301, 308, 404, 405, 410, 414,
	// 501). Zero means such responses are stored only when they carry a
	// validator (ETag or Last-Modified), and are then revalidated on every
	// use.
	DefaultTTL time.Duration
	// HeuristicFraction enables heuristic freshness (RFC 9111 §4.2.2) for
	// responses without explicit freshness that have a heuristically
	// cacheable status (or say public) and a Last-Modified: their lifetime
	// is this fraction of the time between Last-Modified and Date, at most
	// HeuristicMax; it takes precedence over DefaultTTL for them. 0.1 is
	// the customary value. Zero means no heuristic freshness.
	HeuristicFraction float64
	// HeuristicMax caps a heuristic freshness lifetime. Zero means 24
	// hours.
	HeuristicMax time.Duration
	// StaleWhileRevalidate lets every stored response be served stale for
	// this long after it expires while one background request refreshes
	// it, as if the backend had sent stale-while-revalidate. Zero means
	// only the response's own directive counts.
	StaleWhileRevalidate time.Duration
	// StaleIfError lets every stored response be served stale for this
	// long after it expires when the backend answers 5xx (a breaker's 503
	// included), as if the backend had sent stale-if-error. Zero means only
	// the response's own directive counts.
	StaleIfError time.Duration
	// KeepStale is how long a stale response with a validator is kept to
	// be revalidated with a conditional request. Zero means 10 minutes.
	KeepStale time.Duration
	// PassTTL is how long a URL whose response could not be stored
	// (no-store, private, Set-Cookie, too large...) is forwarded without
	// coalescing; when the URL's stored responses vary, only the variant
	// of that request is. Zero means 5 seconds; negative means never remembered.
	PassTTL time.Duration

	// PerSubject keys entries by the authenticated subject
	// (pylon.Info(ctx).SubjectKey(): the Subject, with its SubjectScope
	// when it has one) as well: each subject gets its own entries,
	// and responses to requests with Authorization, or marked private, are
	// stored for that subject. A request without a subject is cached as
	// if PerSubject were false. False means RFC 9111 shared-cache rules: a
	// response to a request with Authorization is stored only when it says
	// public, s-maxage or must-revalidate; private responses are never
	// stored.
	PerSubject bool
	// AllowSetCookie stores responses that set cookies, without their
	// Set-Cookie fields: only the client whose request filled the entry
	// receives the cookie. False means such responses are not stored.
	AllowSetCookie bool
	// IgnoreRequestDirectives ignores clients' Cache-Control and Pragma
	// request directives (no-cache, max-age, max-stale, min-fresh,
	// only-if-cached, no-store), so clients cannot force requests to the
	// backend. False means they are honoured (RFC 9111 §5.2.1).
	IgnoreRequestDirectives bool

	// QueryParams, when not nil, are the only query parameters kept in the
	// key; the others are removed from the request forwarded to fill an
	// entry, so the backend never sees input the key ignores. Nil means
	// every parameter.
	QueryParams []string
	// IgnoreQueryParams are query parameters left out of the key (and
	// removed from fill requests), such as utm_source. Nil means none.
	IgnoreQueryParams []string
	// KeyHeaders are request headers whose values are part of every key,
	// in addition to the scheme and host the Gateway decided
	// (pylon.Options.Trust), the path, the query and the headers responses
	// name in Vary. Nil means none.
	KeyHeaders []string
	// StripHeaders are request headers removed from requests forwarded to
	// fill an entry, because origins reflect them while the key ignores
	// them. Nil means [DefaultStripHeaders]; an empty, non-nil slice
	// strips nothing.
	StripHeaders []string
	// Key customises keys: it receives the request and the default primary
	// key and returns the key to use. Vary values and the subject are
	// appended to what it returns. Returning "" bypasses the cache. Nil
	// means the default key (see the package documentation).
	Key func(r *http.Request, key string) string
	// Bypass reports requests the cache must not handle: they are
	// forwarded as they are, and their responses are not stored. Nil means
	// none beyond the built-in rules (methods other than GET and HEAD,
	// GET and HEAD requests with content, If-Match, If-Unmodified-Since,
	// upgrades).
	Bypass func(r *http.Request) bool

	// TargetedFields are the targeted cache-control fields (RFC 9213) this
	// cache obeys, most specific first: the first one a response carries
	// with a valid, non-empty value (a Structured Field Dictionary, RFC
	// 9651) replaces Cache-Control and Expires for this cache's decisions:
	// no-store, private, no-cache, public, max-age, s-maxage,
	// must-revalidate, stale-while-revalidate, stale-if-error. An invalid
	// field is ignored entirely. Put a field of the gateway's own name
	// first (say "Pylon-Cache-Control") to give it directives no other
	// cache obeys. Nil means {"CDN-Cache-Control"}; an empty, non-nil
	// slice means Cache-Control alone counts.
	TargetedFields []string
	// KeepTargetedFields forwards the TargetedFields to the client. False
	// means they are removed from every response before it leaves the
	// cache (they are meant for this cache, and would make a CDN in front
	// of the gateway apply them too); they are kept in stored responses,
	// where revalidation needs them.
	KeepTargetedFields bool

	// Name is the cache's name in Cache-Status fields (RFC 9211). Zero
	// means "pylon".
	Name string
	// MaxBackgroundRefreshes bounds the stale-while-revalidate refreshes in
	// flight; when all are busy, a stale response is still served and the
	// next request tries again. Zero means 16.
	MaxBackgroundRefreshes int
	// RefreshTimeout bounds one background refresh. Zero means 30 seconds.
	RefreshTimeout time.Duration
	// Now returns the current time; tests inject a clock. Nil means
	// time.Now. It is also the clock of the memory store built when Store
	// is nil.
	Now func() time.Time
	// Logger receives store errors (at most one line per 10 seconds of
	// Now, with the number of failures left out since) and background
	// refresh failures. Nil means slog.Default(), as everywhere in Pylon;
	// to silence it, pass slog.New(slog.DiscardHandler).
	Logger *slog.Logger
}

// Cache is an HTTP response cache with RFC 9111 shared-cache semantics. Its
// Middleware method wraps a route, group or gateway. Build it with New;
// call Close when done to stop background refreshes.
type Cache struct {
	opts         Options
	store        Store
	now          func() time.Time
	name         string
	maxObj       int64
	keepStale    time.Duration
	passTTL      time.Duration
	refreshTO    time.Duration
	keyHeaders   []string
	stripHeaders []string
	targeted     []string // canonical TargetedFields
	// stripTargeted is targeted unless KeepTargetedFields: the fields
	// removed from responses.
	stripTargeted []string
	queryAllow    map[string]bool
	queryDeny     map[string]bool
	logger        *slog.Logger

	mu     sync.Mutex
	calls  map[string]*call
	closed bool
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	bgSem  chan struct{}

	waiting atomic.Int64 // requests waiting for another's fetch (tests)

	// Store failures are logged at most once per storeLogInterval: a
	// store that is down fails every request.
	logMu      sync.Mutex
	logLast    time.Time // when the last failure was logged (c.now)
	suppressed int64     // failures not logged since
}

// storeLogInterval is the least time between two "store unavailable" log
// lines.
const storeLogInterval = 10 * time.Second

// call is one fetch that concurrent requests for a key wait for.
type call struct {
	done     chan struct{}
	entry    *Entry // the response to share, nil when none
	entryKey string // the key entry is stored under
	gen      uint64 // Vary marker generation and names, when entry varies
	names    []string
	stale    bool // entry is a stale response served after an error
	fwdErr   int  // the backend's error status when stale
	retry    bool // the fetch failed in a way another attempt may not
}

// ErrClosed is returned by Purge and PurgePrefix after Close.
var ErrClosed = errors.New("cache: closed")

// New returns a Cache. It fails, naming the field, when an option is
// invalid.
func New(opts Options) (*Cache, error) {
	switch {
	case opts.MaxBytes < 0:
		return nil, errors.New("cache: Options.MaxBytes is negative")
	case opts.MaxObjectSize < 0:
		return nil, errors.New("cache: Options.MaxObjectSize is negative")
	case opts.DefaultTTL < 0 || opts.StaleWhileRevalidate < 0 || opts.StaleIfError < 0 ||
		opts.KeepStale < 0 || opts.RefreshTimeout < 0:
		return nil, errors.New("cache: Options durations (DefaultTTL, StaleWhileRevalidate, StaleIfError, KeepStale, RefreshTimeout) must not be negative")
	case opts.HeuristicFraction < 0 || opts.HeuristicFraction > 1 || opts.HeuristicFraction != opts.HeuristicFraction:
		return nil, errors.New("cache: Options.HeuristicFraction must be between 0 and 1")
	case opts.HeuristicMax < 0:
		return nil, errors.New("cache: Options.HeuristicMax is negative")
	case opts.MaxBackgroundRefreshes < 0:
		return nil, errors.New("cache: Options.MaxBackgroundRefreshes is negative")
	case opts.QueryParams != nil && opts.IgnoreQueryParams != nil:
		return nil, errors.New("cache: Options.QueryParams and Options.IgnoreQueryParams are exclusive")
	}
	c := &Cache{opts: opts, calls: make(map[string]*call)}
	c.now = opts.Now
	if c.now == nil {
		c.now = time.Now
	}
	c.name = opts.Name
	if c.name == "" {
		c.name = "pylon"
	}
	for i := 0; i < len(c.name); i++ {
		ch := c.name[i]
		if ch <= ' ' || ch >= 0x7f || strings.IndexByte(`;,="\`, ch) >= 0 {
			return nil, fmt.Errorf("cache: Options.Name %q is not a token", c.name)
		}
	}
	c.maxObj = opts.MaxObjectSize
	if c.maxObj == 0 {
		c.maxObj = 1 << 20
	}
	c.store = opts.Store
	if c.store == nil {
		max := opts.MaxBytes
		if max == 0 {
			max = 64 << 20
		}
		if c.maxObj > max {
			return nil, errors.New("cache: Options.MaxObjectSize is larger than Options.MaxBytes")
		}
		c.store = NewMemoryStore(MemoryOptions{MaxBytes: max, Now: c.now})
	}
	c.keepStale = opts.KeepStale
	if c.keepStale == 0 {
		c.keepStale = 10 * time.Minute
	}
	c.passTTL = opts.PassTTL
	if c.passTTL == 0 {
		c.passTTL = 5 * time.Second
	}
	c.refreshTO = opts.RefreshTimeout
	if c.refreshTO == 0 {
		c.refreshTO = 30 * time.Second
	}
	n := opts.MaxBackgroundRefreshes
	if n == 0 {
		n = 16
	}
	c.bgSem = make(chan struct{}, n)
	for _, h := range opts.KeyHeaders {
		c.keyHeaders = append(c.keyHeaders, http.CanonicalHeaderKey(h))
	}
	slices.Sort(c.keyHeaders)
	c.keyHeaders = slices.Compact(c.keyHeaders)
	strip := opts.StripHeaders
	if strip == nil {
		strip = DefaultStripHeaders
	}
	for _, h := range strip {
		c.stripHeaders = append(c.stripHeaders, http.CanonicalHeaderKey(h))
	}
	targeted := opts.TargetedFields
	if targeted == nil {
		targeted = []string{"CDN-Cache-Control"}
	}
	for _, name := range targeted {
		ok := name != ""
		for i := 0; i < len(name); i++ {
			ok = ok && isTChar(name[i])
		}
		cn := http.CanonicalHeaderKey(name)
		if !ok || cn == "Cache-Control" {
			return nil, fmt.Errorf("cache: Options.TargetedFields: %q is not a targeted field name", name)
		}
		if !slices.Contains(c.targeted, cn) {
			c.targeted = append(c.targeted, cn)
		}
	}
	if !opts.KeepTargetedFields {
		c.stripTargeted = c.targeted
	}
	if opts.QueryParams != nil {
		c.queryAllow = make(map[string]bool, len(opts.QueryParams))
		for _, p := range opts.QueryParams {
			c.queryAllow[p] = true
		}
	}
	if opts.IgnoreQueryParams != nil {
		c.queryDeny = make(map[string]bool, len(opts.IgnoreQueryParams))
		for _, p := range opts.IgnoreQueryParams {
			c.queryDeny[p] = true
		}
	}
	c.logger = opts.Logger
	if c.logger == nil {
		c.logger = slog.Default()
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c, nil
}

// MustNew is New that panics on an invalid option, for main functions.
func MustNew(opts Options) *Cache {
	c, err := New(opts)
	if err != nil {
		panic(err)
	}
	return c
}

// Close stops background refreshes and waits for those in flight to end.
// The middleware keeps serving after Close, without background refreshes.
func (c *Cache) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
	return nil
}

// Store returns the cache's store.
func (c *Cache) Store() Store { return c.store }

// Key returns the primary key the cache uses for r's URL: the key Purge
// takes. It is "" when the request cannot be keyed.
func (c *Cache) Key(r *http.Request) string {
	k, _, _ := c.baseKey(r, pylon.Info(r.Context()))
	return k
}

// Purge removes the entry stored under key (see Key), with its Vary
// variants and per-subject entries.
func (c *Cache) Purge(ctx context.Context, key string) error {
	if err := c.store.Delete(ctx, key); err != nil {
		return err
	}
	_, err := c.store.DeletePrefix(ctx, key+"\x00")
	return err
}

// PurgePrefix removes every entry whose key starts with prefix, such as
// "GET https://api.example.com/orders/", and returns how many it removed
// (variants and markers count). Purging is an administrative operation: the
// memory store scans all its keys.
func (c *Cache) PurgePrefix(ctx context.Context, prefix string) (int, error) {
	return c.store.DeletePrefix(ctx, prefix)
}

// Middleware returns next wrapped by the cache. Its type is
// pylon.Middleware: pass c.Middleware to Use.
//
// Place it after authentication: a cache before it would answer requests
// that never passed it. A Gateway reports that order as a configuration
// error (Err) when the authentication is Pylon's own or declares itself
// (pylon.StageHandler); whatever the order, the cache never stores a
// response to a request that an authentication after it admitted.
func (c *Cache) Middleware(next http.Handler) http.Handler {
	return pylon.WithStage(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.serve(w, r, next)
	}), cacheStage)
}

var cacheStage = pylon.Stage{Name: "cache", Roles: pylon.RoleStoredResponses}

// cs builds a Cache-Status member: the cache's name, then params.
func (c *Cache) cs(params ...string) string {
	n := len(c.name)
	for _, p := range params {
		n += 2 + len(p)
	}
	var b strings.Builder
	b.Grow(n)
	b.WriteString(c.name)
	for _, p := range params {
		b.WriteString("; ")
		b.WriteString(p)
	}
	return b.String()
}

func setInfo(info *pylon.RequestInfo, status string) {
	if info != nil {
		info.Cache = status
	}
}

// hasContent reports whether r, of unknown length (-1: chunked, or an
// HTTP/2 request whose HEADERS did not end the stream), carries content,
// reading one byte to know; what it read stays in r.Body.
func hasContent(r *http.Request) bool {
	if r.Body == nil || r.Body == http.NoBody {
		return false
	}
	var one [1]byte
	n, err := io.ReadFull(r.Body, one[:])
	if n == 0 && (err == io.EOF || err == io.ErrUnexpectedEOF) {
		r.Body, r.ContentLength = http.NoBody, 0 // an empty DATA frame ended it
		return false
	}
	r.Body = readCloser{io.MultiReader(bytes.NewReader(one[:n]), r.Body), r.Body}
	return true
}

// readCloser reads from Reader and closes with Closer.
type readCloser struct {
	io.Reader
	io.Closer
}

// bypassReason reports why a GET or HEAD request is not handled.
func (c *Cache) bypassReason(r *http.Request) string {
	h := r.Header
	switch {
	case r.ContentLength > 0 || len(r.TransferEncoding) > 0 || r.ContentLength < 0 && hasContent(r):
		// Content in a GET or HEAD has no defined semantics (RFC 9110
		// §9.3.1) and is not in the key: an origin that reads it would
		// let one client's body shape the response stored for everyone.
		// ContentLength is what net/http's server sets (-1 for a chunked
		// or unknown length), and what a Backend decides to forward a
		// body by; the Body itself is no test, since a route's MaxBody
		// wraps even an empty one.
		return "request-content"
	case len(h["If-Match"]) > 0 || len(h["If-Unmodified-Since"]) > 0:
		return "precondition"
	case len(h["Upgrade"]) > 0:
		return "upgrade"
	case c.opts.Bypass != nil && c.opts.Bypass(r):
		return "rule"
	}
	return ""
}

func (c *Cache) serve(w http.ResponseWriter, r *http.Request, next http.Handler) {
	info := pylon.Info(r.Context())
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		c.passMethod(w, r, next, info)
		return
	}
	if reason := c.bypassReason(r); reason != "" {
		c.pass(w, r, next, info, StatusBypass, "fwd=bypass", "detail="+reason)
		return
	}
	key, query, ok := c.baseKey(r, info)
	if !ok {
		c.pass(w, r, next, info, StatusBypass, "fwd=bypass", "detail=key")
		return
	}
	perSubject := c.opts.PerSubject && info != nil && info.Subject != ""
	if perSubject {
		key = subjectKey(key, info.SubjectKey())
	}
	rd := reqDirectives{maxAge: -1, maxStale: -1, minFresh: -1}
	if !c.opts.IgnoreRequestDirectives {
		rd = parseReqDirectives(r.Header)
	}
	// A request counts as carrying credentials (§3.5) when it has an
	// Authorization header or an authentication before the cache admitted
	// it (and perhaps removed the header).
	authed := info.Authenticated()
	f := fill{c: c, r: r, next: next, info: info, key: key, query: query, perSubject: perSubject,
		authz: authed || len(r.Header["Authorization"]) > 0, authedBefore: authed, rd: rd}

	for attempt := 0; attempt < 3; attempt++ {
		e, eKey, marker, miss, err := c.lookup(r.Context(), key, r)
		if err != nil {
			c.storeFailed(r.Context(), err)
			c.pass(w, r, next, info, StatusBypass, "fwd=bypass", "detail=store-unavailable")
			return
		}
		now := c.now()
		if e != nil && e.kind == kindPass {
			if rd.onlyIfCached { // RFC 9111 §5.2.1.7: never the origin
				w.Header()["Cache-Status"] = []string{c.cs("fwd=miss", "detail=only-if-cached")}
				setInfo(info, StatusMiss)
				pylon.Error(w, r, http.StatusGatewayTimeout, "The response is not in the cache.")
				return
			}
			f.fwd = "fwd=miss"
			f.marker = marker
			f.lead(w, nil)
			return
		}
		if e != nil {
			age := e.age(now)
			left := e.lifetime - age
			if fresh(e, age, rd) {
				c.serveEntry(w, r, e, now, info, StatusHit, "hit", "ttl="+itoa(int64(left/time.Second)))
				return
			}
			staleBy := -left
			if staleBy >= 0 && !rd.noCache && e.mayServeStale() {
				if rd.maxStale >= 0 && staleBy <= rd.maxStale {
					c.serveEntry(w, r, e, now, info, StatusStale, "hit", "ttl="+itoa(int64(left/time.Second)), "detail=max-stale")
					return
				}
				if e.swr > 0 && staleBy <= e.swr && r.Method == http.MethodGet {
					c.serveEntry(w, r, e, now, info, StatusStale, "hit", "ttl="+itoa(int64(left/time.Second)), "detail=stale-while-revalidate")
					c.refresh(r, next, f, e, eKey)
					return
				}
			}
			f.stale, f.staleKey = e, eKey
			f.fwd = "fwd=stale"
			if rd.noCache {
				f.fwd = "fwd=request"
			}
		} else {
			f.stale, f.staleKey = nil, ""
			f.fwd = "fwd=" + miss
		}
		f.marker = marker
		if rd.onlyIfCached {
			w.Header()["Cache-Status"] = []string{c.cs("detail=only-if-cached")}
			setInfo(info, StatusMiss)
			pylon.Error(w, r, http.StatusGatewayTimeout, "The response is not in the cache.")
			return
		}
		if len(r.Header["Range"]) > 0 && r.Method == http.MethodGet {
			// No stored response to cut the range from: the origin
			// answers, and its 206 is not stored.
			c.pass(w, r, next, info, StatusMiss, f.fwd, "detail=range")
			return
		}
		if r.Method == http.MethodHead || rd.noStore {
			// HEAD responses are not stored; a request with no-store must
			// not be stored either.
			c.pass(w, r, next, info, StatusMiss, f.fwd)
			return
		}

		c.mu.Lock()
		cl := c.calls[key]
		if cl == nil {
			cl = &call{done: make(chan struct{})}
			c.calls[key] = cl
			c.mu.Unlock()
			// A fetch that ended between our lookup and our registration
			// has stored its response: look once more before fetching.
			if c.recheck(w, r, key, e, rd, cl, info) {
				return
			}
			f.lead(w, cl)
			return
		}
		c.mu.Unlock()
		c.waiting.Add(1)
		select {
		case <-cl.done:
			c.waiting.Add(-1)
		case <-r.Context().Done():
			c.waiting.Add(-1)
			setInfo(info, StatusCollapsed)
			if errors.Is(r.Context().Err(), context.DeadlineExceeded) {
				// The route's deadline passed while the fill ran: the
				// client is still there and gets the leader's answer.
				w.Header()["Cache-Status"] = []string{c.cs("fwd=miss", "collapsed", "detail=timeout")}
				pylon.Error(w, r, http.StatusGatewayTimeout, "The upstream service did not answer in time.")
				return
			}
			if info != nil {
				info.ClientCanceled = true
			}
			return
		}
		if ce := cl.entry; ce != nil {
			k := key
			if cl.names != nil {
				k = variantKey(key, cl.gen, cl.names, r)
			}
			if k == cl.entryKey {
				now := c.now()
				if cl.stale {
					c.serveEntry(w, r, ce, now, info, StatusStale, "fwd=stale", "collapsed",
						"fwd-status="+itoa(int64(cl.fwdErr)), "ttl="+itoa(int64((ce.lifetime-ce.age(now))/time.Second)), "detail=stale-if-error")
				} else {
					c.serveEntry(w, r, ce, now, info, StatusCollapsed, f.fwd, "collapsed",
						"ttl="+itoa(int64((ce.lifetime-ce.age(now))/time.Second)))
				}
				return
			}
			continue // a variant for other request headers: look again
		}
		if !cl.retry {
			break // the response could not be shared: fetch alone
		}
	}
	if f.fwd == "" {
		f.fwd = "fwd=miss"
	}
	f.lead(w, nil)
}

// fresh reports whether e, of age age, may be served without contacting
// the backend, given the request's directives.
func fresh(e *Entry, age time.Duration, rd reqDirectives) bool {
	left := e.lifetime - age
	return left > 0 && !e.noCache() && !rd.noCache &&
		(rd.maxAge < 0 || age <= rd.maxAge) && (rd.minFresh < 0 || left >= rd.minFresh)
}

// recheck looks key up again after this request registered cl as the
// fetch for it. When a fresh response other than old is now stored (a
// fetch finished in between), it serves it, shares it with cl's waiters,
// releases cl and reports true.
func (c *Cache) recheck(w http.ResponseWriter, r *http.Request, key string, old *Entry, rd reqDirectives, cl *call, info *pylon.RequestInfo) bool {
	e, eKey, marker, _, err := c.lookup(r.Context(), key, r)
	now := c.now()
	ok := err == nil && e != nil && e.kind == kindResponse &&
		(old == nil || !e.responseTime.Equal(old.responseTime)) && fresh(e, e.age(now), rd)
	if !ok {
		return false
	}
	cl.entry, cl.entryKey = e, eKey
	if marker != nil {
		cl.gen, cl.names = marker.gen, marker.vary
	}
	c.release(key, cl)
	c.serveEntry(w, r, e, now, info, StatusHit, "hit", "ttl="+itoa(int64((e.lifetime-e.age(now))/time.Second)))
	return true
}

// release unregisters cl and wakes its waiters.
func (c *Cache) release(key string, cl *call) {
	c.mu.Lock()
	if c.calls[key] == cl {
		delete(c.calls, key)
	}
	c.mu.Unlock()
	close(cl.done)
}

// lookup returns the entry for r under key: the response itself, or the
// variant a Vary marker selects (then marker is set), or the pass marker
// for either. miss is "uri-miss" or "vary-miss" when there is none.
func (c *Cache) lookup(ctx context.Context, key string, r *http.Request) (e *Entry, eKey string, marker *Entry, miss string, err error) {
	e, err = c.store.Get(ctx, key)
	if err != nil || e == nil {
		return nil, "", nil, "uri-miss", err
	}
	if e.kind != kindVary {
		return e, key, nil, "", nil
	}
	vk := variantKey(key, e.gen, e.vary, r)
	v, err := c.store.Get(ctx, vk)
	if err != nil || v == nil || v.kind == kindVary {
		return nil, "", e, "vary-miss", err
	}
	return v, vk, e, "", nil
}

// serveEntry writes the stored response e, or 304 when r's conditions say
// the client's copy is current.
func (c *Cache) serveEntry(w http.ResponseWriter, r *http.Request, e *Entry, now time.Time, info *pylon.RequestInfo, status string, params ...string) {
	h := w.Header()
	if e.flags&flagTargeted == 0 {
		for k, vv := range e.header {
			h[k] = vv
		}
	} else {
		for k, vv := range e.header {
			if !c.stripped(k) {
				h[k] = vv
			}
		}
	}
	h["Age"] = []string{itoa(int64(e.age(now) / time.Second))}
	h["Cache-Status"] = append(e.header["Cache-Status"], c.cs(params...))
	setInfo(info, status)
	if e.status == http.StatusOK && notModified(r, e.etag(), e.lastModified(), now) {
		delete(h, "Content-Length")
		w.WriteHeader(http.StatusNotModified)
		return
	}
	if rv := r.Header["Range"]; len(rv) > 0 && e.status == http.StatusOK && r.Method == http.MethodGet &&
		serveRange(w, r, e, h, now) {
		return
	}
	w.WriteHeader(e.status)
	if r.Method != http.MethodHead && len(e.body) > 0 {
		_, _ = w.Write(e.body)
	}
}

// notModified evaluates If-None-Match, or else If-Modified-Since, against a
// response's validators (RFC 9110 §13.2.2). An If-Modified-Since that is
// not exactly one valid HTTP-date is ignored (§13.1.3), as is a
// Last-Modified that is not one.
func notModified(r *http.Request, etag, lastMod string, now time.Time) bool {
	if inm := r.Header["If-None-Match"]; len(inm) > 0 {
		if etag == "" {
			return false
		}
		for _, v := range inm {
			for t := range strings.SplitSeq(v, ",") {
				t = strings.TrimSpace(t)
				if t == "*" || weakMatch(t, etag) {
					return true
				}
			}
		}
		return false
	}
	if ims := r.Header["If-Modified-Since"]; len(ims) > 0 && lastMod != "" {
		since, ok1 := headerDate(ims, now)
		mod, ok2 := parseHTTPDate(lastMod, now)
		return ok1 && ok2 && !mod.After(since)
	}
	return false
}

func weakMatch(a, b string) bool {
	return strings.TrimPrefix(a, "W/") == strings.TrimPrefix(b, "W/")
}

// pass forwards r untouched by the cache, adding a Cache-Status member.
func (c *Cache) pass(w http.ResponseWriter, r *http.Request, next http.Handler, info *pylon.RequestInfo, status string, params ...string) {
	setInfo(info, status)
	pw := &passWriter{ResponseWriter: w, cs: c.cs(params...), strip: c.stripTargeted}
	next.ServeHTTP(pw, r)
}

// passMethod forwards a request with a method the cache does not store and,
// for unsafe methods answered with success, invalidates the stored
// response for the URL (RFC 9111 §4.4).
func (c *Cache) passMethod(w http.ResponseWriter, r *http.Request, next http.Handler, info *pylon.RequestInfo) {
	setInfo(info, StatusBypass)
	pw := &passWriter{ResponseWriter: w, cs: c.cs("fwd=method"), strip: c.stripTargeted}
	next.ServeHTTP(pw, r)
	switch r.Method {
	case http.MethodOptions, http.MethodTrace, http.MethodConnect:
		return
	}
	if pw.status == 0 {
		pw.status = http.StatusOK
	}
	if pw.status >= 400 || r.Context().Err() != nil {
		return
	}
	key, _, ok := c.baseKey(r, info)
	if !ok {
		return
	}
	ctx := context.WithoutCancel(r.Context())
	// Deleting the primary key drops the Vary marker, which makes every
	// variant unreachable (variant keys carry the marker's generation).
	_ = c.store.Delete(ctx, key)
	if c.opts.PerSubject && info != nil && info.Subject != "" {
		_ = c.store.Delete(ctx, subjectKey(key, info.SubjectKey()))
	}
}

// refresh starts one background revalidation of e for key, unless one is
// already running, the cache is closed, or MaxBackgroundRefreshes are busy.
func (c *Cache) refresh(r *http.Request, next http.Handler, f fill, e *Entry, eKey string) {
	c.mu.Lock()
	if c.closed || c.calls[f.key] != nil {
		c.mu.Unlock()
		return
	}
	select {
	case c.bgSem <- struct{}{}:
	default:
		c.mu.Unlock()
		return
	}
	cl := &call{done: make(chan struct{})}
	c.calls[f.key] = cl
	c.mu.Unlock()
	// A refresh that ended between our lookup and our registration has
	// stored a newer response: nothing to do.
	if cur, err := c.store.Get(r.Context(), eKey); err != nil || cur == nil || !cur.responseTime.Equal(e.responseTime) {
		c.release(f.key, cl)
		<-c.bgSem
		return
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		c.release(f.key, cl)
		<-c.bgSem
		return
	}
	c.wg.Add(1)
	c.mu.Unlock()

	ctx := context.WithoutCancel(r.Context())
	if f.info != nil {
		cp := *f.info // the client's RequestInfo belongs to the finished request
		cp.Cache = ""
		ctx = pylon.NewContext(ctx, &cp)
		f.info = &cp
	}
	ctx, cancel := context.WithTimeout(ctx, c.refreshTO)
	stop := context.AfterFunc(c.ctx, cancel)
	r2 := r.Clone(ctx)
	r2.Body, r2.ContentLength = http.NoBody, 0
	f.r = r2
	f.stale, f.staleKey = e, eKey
	f.fwd = "fwd=stale"
	f.background = true
	go func() {
		defer c.wg.Done()
		defer func() { <-c.bgSem }()
		defer cancel()
		defer stop()
		defer func() {
			if p := recover(); p != nil && p != http.ErrAbortHandler {
				c.logger.LogAttrs(context.Background(), slog.LevelError, "cache: background refresh panicked",
					slog.String("key", f.key), slog.Any("panic", p))
			}
		}()
		f.lead(&discardWriter{h: make(http.Header)}, cl)
	}()
}

// fill is one request to the backend made on the cache's behalf.
type fill struct {
	c            *Cache
	r            *http.Request
	next         http.Handler
	info         *pylon.RequestInfo
	key          string
	query        string
	fwd          string // Cache-Status fwd parameter
	perSubject   bool
	authz        bool
	authedBefore bool // the request was authenticated when the cache saw it
	background   bool
	rd           reqDirectives

	stale    *Entry // the stored response being revalidated, if any
	staleKey string
	marker   *Entry // the Vary marker found at key, if any
	cl       *call  // the call others wait on while f leads; nil once released

	// Set once the response header is known.
	conditional bool
	reqTime     time.Time
	respTime    time.Time
	outcome     int
	reason      string // why the response is not stored; "" when it may be
}

const (
	outcomePass        = iota // forwarded to the client, maybe stored
	outcomeRevalidated        // 304 to our conditional request: serve stale, refreshed
	outcomeStaleError         // backend error: serve stale
	outcomeMismatch           // a 304 that does not select the stored response (RFC 9111 §4.3.4)
)

// fillRequest returns the request sent to the backend: the client's
// conditionals removed (the cache answers them), unkeyed headers stripped,
// the normalized query, and the stored response's validators.
func (f *fill) fillRequest() *http.Request {
	out := f.r.Clone(f.r.Context())
	h := out.Header
	delete(h, "If-None-Match")
	delete(h, "If-Modified-Since")
	for _, name := range f.c.stripHeaders {
		delete(h, name)
	}
	if f.query != out.URL.RawQuery {
		out.URL.RawQuery = f.query
		out.URL.ForceQuery = false
	}
	if s := f.stale; s != nil && s.kind == kindResponse {
		if et := s.etag(); et != "" {
			h["If-None-Match"] = []string{et}
			f.conditional = true
		}
		if lm := s.lastModified(); lm != "" {
			h["If-Modified-Since"] = []string{lm}
			f.conditional = true
		}
	}
	return out
}

// lead fetches the response from the backend, streams it to w, stores it
// when it may, and shares the outcome with the requests waiting on cl
// (nil when none may wait) as soon as it is known: before w has been sent
// the response, so that w's pace never holds them (see captureWriter).
func (f *fill) lead(w http.ResponseWriter, cl *call) {
	c := f.c
	f.cl = cl
	var cw *captureWriter
	defer func() {
		// A fill that ends without deciding (a panic, a client gone):
		// the waiters try again. Then the client is sent what is
		// buffered for it; the waiters never wait for that.
		if f.cl != nil {
			f.cl.entry, f.cl.retry = nil, true
			f.release()
		}
		if cw != nil {
			cw.finish()
			cw.copyTrailers()
		}
	}()
	setInfo(f.info, StatusMiss)
	out := f.fillRequest()
	f.reqTime = c.now()
	cw = &captureWriter{w: w, header: make(http.Header), f: f}
	f.forward(cw, out)
	if f.outcome == outcomeMismatch && f.r.Context().Err() == nil {
		// The 304 is for another response than the one stored (RFC 9111
		// §4.3.4): that one cannot be used; ask once more, without
		// conditions.
		_ = c.store.Delete(context.WithoutCancel(f.r.Context()), f.staleKey)
		f.stale, f.staleKey, f.conditional, f.outcome = nil, "", false, outcomePass
		out = f.fillRequest()
		f.reqTime = c.now()
		cw = &captureWriter{w: w, header: make(http.Header), f: f}
		f.forward(cw, out)
	}
	if err := f.r.Context().Err(); err != nil && (errors.Is(err, context.Canceled) || f.outcome != outcomeStaleError) {
		// The client is gone, or the request's deadline passed: nothing
		// to store or share, except a stale response the deadline's
		// error lets the cache serve.
		return
	}
	if !cw.wrote {
		cw.WriteHeader(http.StatusOK)
	}
	ctx := context.WithoutCancel(f.r.Context())
	now := c.now()
	// The waiters are released before anything more goes to this client,
	// so that a client that reads slowly (or not at all) delays only
	// itself.
	switch f.outcome {
	case outcomeRevalidated:
		e, reason := c.refreshed(f, cw.header)
		ttl := e.keep(now, c.keepStale)
		if reason == "" && ttl > 0 {
			c.set(ctx, f.staleKey, e, ttl)
			if f.marker != nil {
				c.set(ctx, f.key, f.marker, max(ttl, time.Hour))
			}
		} else {
			_ = c.store.Delete(ctx, f.staleKey)
		}
		if cl := f.cl; cl != nil && reason == "" {
			cl.entry, cl.entryKey = e, f.staleKey
			if f.marker != nil {
				cl.gen, cl.names = f.marker.gen, f.marker.vary
			}
		}
		f.release()
		if !f.background {
			c.serveEntry(w, f.r, e, now, f.info, StatusRevalidated, f.fwd, "fwd-status=304",
				"ttl="+itoa(int64((e.lifetime-e.age(now))/time.Second)))
		}
	case outcomeStaleError:
		s := f.stale
		if cl := f.cl; cl != nil {
			cl.entry, cl.entryKey, cl.stale, cl.fwdErr = s, f.staleKey, true, cw.status
			if f.marker != nil {
				cl.gen, cl.names = f.marker.gen, f.marker.vary
			}
		}
		f.release()
		if !f.background {
			c.serveEntry(w, f.r, s, now, f.info, StatusStale, f.fwd, "fwd-status="+itoa(int64(cw.status)),
				"ttl="+itoa(int64((s.lifetime-s.age(now))/time.Second)), "detail=stale-if-error")
		}
	default:
		// The whole body has arrived from the backend; this client may
		// still be receiving it (captureWriter.finish, deferred).
		if f.reason == "" && cw.buffering && cw.err == nil {
			e := cw.entry // its times, from the header
			body := cw.buf
			if cap(body) > len(body)+len(body)/8 {
				// Grown by doubling (no Content-Length): stores count
				// len, so keep no more than that.
				body = append(make([]byte, 0, len(body)), body...)
			}
			e.header, e.body = storedHeader(cw.header, len(body)), body
			c.storeResponse(ctx, f, cw.header, e, now, f.cl)
		} else if cw.status >= 500 {
			if f.cl != nil {
				f.cl.retry = true
			}
		} else if passReason(f.reason) && c.passTTL > 0 {
			c.markPass(ctx, f)
		}
		f.release()
	}
}

// release wakes the requests waiting on f's call, once, with what was set
// in it: an entry to serve, or none (they fetch on their own, or with retry
// wait for a new fetch).
func (f *fill) release() {
	if cl := f.cl; cl != nil {
		f.cl = nil
		f.c.release(f.key, cl)
	}
}

// unshared releases the requests waiting on f's call as soon as its
// response is known not to be shared (not storable, or grown past
// MaxObjectSize), rather than after it has reached this client: they fetch
// on their own, or after a 5xx wait for a new fetch.
func (f *fill) unshared(status int) {
	if cl := f.cl; cl != nil {
		cl.entry, cl.retry = nil, status >= 500
		f.release()
	}
}

// forward sends out to the backend through cw. When the backend gives up
// before answering, because the origin closed the connection (a panic with
// http.ErrAbortHandler before the header) or the request's deadline passed
// without an answer, it answers 502 or 504 through cw, so that a stale
// response that allows it is served (stale-if-error, RFC 5861 §4); without
// one, the panic goes on, and a deadline is answered 504.
func (f *fill) forward(cw *captureWriter, out *http.Request) {
	aborted := false
	func() {
		defer func() {
			if p := recover(); p != nil {
				s := f.stale
				if p != http.ErrAbortHandler || cw.wrote || s == nil || !s.staleIfError(f.c.now()) {
					panic(p)
				}
				aborted = true
			}
		}()
		f.next.ServeHTTP(cw, out)
	}()
	switch {
	case aborted:
		pylon.Error(cw, out, http.StatusBadGateway, "The upstream service closed the connection.")
	case !cw.wrote && errors.Is(out.Context().Err(), context.DeadlineExceeded):
		pylon.Error(cw, out, http.StatusGatewayTimeout, "The upstream service did not answer in time.")
	}
}

// storeResponse stores e (under a Vary marker when the response varies)
// and offers it to waiting requests.
func (c *Cache) storeResponse(ctx context.Context, f *fill, h http.Header, e *Entry, now time.Time, cl *call) {
	ttl := e.keep(now, c.keepStale)
	names, _ := varyNames(h["Vary"])
	key := f.key
	var m *Entry
	if len(names) > 0 {
		m = f.marker
		if m == nil || !slices.Equal(m.vary, names) {
			if cur, err := c.store.Get(ctx, f.key); err == nil && cur != nil && cur.kind == kindVary && slices.Equal(cur.vary, names) {
				m = cur
			} else {
				m = &Entry{kind: kindVary, vary: names, gen: rand.Uint64()}
			}
		}
		key = variantKey(f.key, m.gen, names, f.r)
	}
	if ttl > 0 {
		if m != nil {
			c.set(ctx, f.key, m, max(ttl, time.Hour))
		}
		c.set(ctx, key, e, ttl)
	}
	if cl != nil {
		cl.entry, cl.entryKey = e, key
		if m != nil {
			cl.gen, cl.names = m.gen, m.vary
		}
	}
}

// markPass remembers for PassTTL that f's response could not be stored, so
// that the next requests for it skip coalescing. When a Vary marker holds
// the primary key, the pass marker goes under this request's variant key:
// one uncacheable variant (a response that sets a cookie for one
// language, say) leaves the URL's other variants reachable.
func (c *Cache) markPass(ctx context.Context, f *fill) {
	key, m := f.key, f.marker
	if m == nil {
		// A response stored since our lookup may have put one there.
		if cur, err := c.store.Get(ctx, f.key); err == nil && cur != nil && cur.kind == kindVary {
			m = cur
		}
	}
	if m != nil {
		key = variantKey(f.key, m.gen, m.vary, f.r)
	}
	c.set(ctx, key, &Entry{kind: kindPass}, c.passTTL)
}

func (c *Cache) set(ctx context.Context, key string, e *Entry, ttl time.Duration) {
	if err := c.store.Set(ctx, key, e, ttl); err != nil && !errors.Is(err, ErrTooLarge) {
		c.storeFailed(ctx, err)
	}
}

// storeFailed logs a store failure, at most once per storeLogInterval of
// the cache's clock, with the number of failures not logged since the
// line before ("suppressed"). The request's own handling (bypass, or not
// storing) and its Cache-Status do not depend on it.
func (c *Cache) storeFailed(ctx context.Context, err error) {
	now := c.now()
	c.logMu.Lock()
	if !c.logLast.IsZero() {
		if d := now.Sub(c.logLast); d >= 0 && d < storeLogInterval {
			c.suppressed++
			c.logMu.Unlock()
			return
		}
	}
	n := c.suppressed
	c.logLast, c.suppressed = now, 0
	c.logMu.Unlock()
	c.logger.LogAttrs(ctx, slog.LevelWarn, "cache: store unavailable", slog.String("error", err.Error()),
		slog.Int64("suppressed", n))
}

// passReason reports whether a not-stored reason comes from the response
// itself, so that later requests for the URL skip coalescing for a while.
func passReason(reason string) bool {
	switch reason {
	case "", "request-no-store", "authorization":
		return false
	}
	return true
}

// storableStatus reports whether a response with this status may be stored
// (RFC 9111 §3): a heuristically cacheable status (RFC 9110 §15.1) always;
// any other final status the cache understands (not 206, whose parts it
// does not combine, nor 304) when the response has explicit freshness or
// says public. With must-understand, only statuses whose semantics the
// cache implements.
func storableStatus(code int, explicit, mustUnderstand bool) bool {
	switch code {
	case 200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501:
		return true
	case 206, 304:
		return false
	case 302, 303, 307, 400, 403, 451, 500, 502, 503, 504:
		return explicit
	}
	return explicit && !mustUnderstand && code >= 200 && code <= 599
}

// storeReason returns why a response with this status and header may not
// be stored, or "".
func (f *fill) storeReason(status int, h http.Header) string {
	c := f.c
	if f.rd.noStore {
		return "request-no-store"
	}
	if f.r.Method != http.MethodGet {
		return "request-no-store" // HEAD responses have no body to store
	}
	d, targeted := c.respDirectives(h)
	explicit := d.sMaxAge >= 0 || d.maxAge >= 0 || (!targeted && len(h["Expires"]) > 0)
	switch {
	case !f.authedBefore && f.info.Authenticated():
		// An authentication after the cache admitted the request: what
		// is stored here would be served to requests that never pass it.
		return "authenticated-after-cache"
	case !storableStatus(status, explicit || d.public, d.mustUnderstand):
		return "status"
	case d.noStore && !d.mustUnderstand:
		// must-understand: a cache that understands the status ignores
		// no-store (RFC 9111 §5.2.2.3); storableStatus checked it does.
		return "no-store"
	case d.private && !f.perSubject:
		return "private"
	case f.authz && !f.perSubject && !d.public && d.sMaxAge < 0 && !d.mustRevalidate:
		return "authorization"
	case len(h["Set-Cookie"]) > 0 && !c.opts.AllowSetCookie:
		return "set-cookie"
	case len(h["Trailer"]) > 0:
		return "trailer"
	case len(h["Content-Type"]) > 0 && strings.HasPrefix(h["Content-Type"][0], "text/event-stream"):
		return "event-stream"
	}
	if _, star := varyNames(h["Vary"]); star {
		return "vary"
	}
	if !explicit && c.opts.DefaultTTL == 0 && !d.noCache && len(h["Etag"]) == 0 && len(h["Last-Modified"]) == 0 {
		return "no-freshness"
	}
	if contentLength(h) > c.maxObj {
		return "too-large"
	}
	return ""
}

// newEntry builds the stored form of a response (RFC 9111 §4.2).
func (c *Cache) newEntry(f *fill, status int, h http.Header, body []byte) *Entry {
	e := c.entryTimes(f, status, h)
	e.header, e.body = storedHeader(h, len(body)), body
	return e
}

// entryTimes returns the entry for a response without its header and body:
// its age, freshness lifetime, stale windows and flags, all known once the
// response header is.
func (c *Cache) entryTimes(f *fill, status int, h http.Header) *Entry {
	d, targeted := c.respDirectives(h)
	e := &Entry{kind: kindResponse, status: status, responseTime: f.respTime}
	date := f.respTime
	// An absent, repeated or invalid Date is replaced by the time the
	// response arrived (RFC 9110 §6.6.1).
	if t, ok := headerDate(h["Date"], f.respTime); ok {
		date = t
	}
	apparent := max(0, f.respTime.Sub(date))
	corrected := ageValue(h["Age"]) + f.respTime.Sub(f.reqTime)
	e.initialAge = max(apparent, corrected)
	switch {
	case d.sMaxAge >= 0:
		e.lifetime = d.sMaxAge
	case d.maxAge >= 0:
		e.lifetime = d.maxAge
	case !targeted && len(h["Expires"]) > 0:
		// An invalid Expires, or several, means already expired (RFC 9111
		// §5.3): lifetime 0.
		if t, ok := headerDate(h["Expires"], f.respTime); ok {
			e.lifetime = max(0, t.Sub(date))
		}
	case storableStatus(status, false, false) || d.public:
		e.lifetime = c.opts.DefaultTTL
		if c.opts.HeuristicFraction > 0 {
			if lm, ok := headerDate(h["Last-Modified"], f.respTime); ok && lm.Before(date) {
				// RFC 9111 §4.2.2: a fraction of the time since the
				// representation last changed.
				hmax := c.opts.HeuristicMax
				if hmax == 0 {
					hmax = 24 * time.Hour
				}
				e.lifetime = min(time.Duration(float64(date.Sub(lm))*c.opts.HeuristicFraction), hmax)
			}
		}
	}
	if d.noCache {
		e.flags |= flagNoCache
	}
	if len(c.stripTargeted) > 0 {
		for _, name := range c.stripTargeted {
			if len(h[name]) > 0 {
				e.flags |= flagTargeted
			}
		}
	}
	// proxy-revalidate is must-revalidate for a shared cache, and s-maxage
	// implies proxy-revalidate there (RFC 9111 §5.2.2.8, §5.2.2.10): once
	// stale, such a response is served only after a successful validation,
	// never for max-stale, stale-while-revalidate or stale-if-error.
	if d.mustRevalidate || d.proxyRevalidate || d.sMaxAge >= 0 {
		e.flags |= flagMustRevalidate
	}
	e.swr = max(0, d.swr, c.opts.StaleWhileRevalidate)
	e.sie = max(0, d.sie, c.opts.StaleIfError)
	return e
}

// refreshed returns the stale entry updated by a 304's header fields
// (RFC 9111 §3.2, §4.3.4), and why it may no longer be stored. Every field
// of the 304 replaces the stored one, except those never stored (§3.1:
// hop-by-hop fields and those Connection lists, proxy authentication
// fields; Set-Cookie and Trailer by this cache's rules), Content-Length
// (§3.2) and Content-Range, which the stored complete response depends on.
// Age is the 304's own, for the new age computation.
func (c *Cache) refreshed(f *fill, h304 http.Header) (*Entry, string) {
	s := f.stale
	merged := make(http.Header, len(s.header)+len(h304))
	for k, vv := range s.header {
		merged[k] = vv
	}
	for k, vv := range h304 {
		if !updatable(k, h304) {
			continue
		}
		merged[k] = vv
	}
	if _, ok := h304["Age"]; ok {
		merged["Age"] = h304["Age"]
	} else {
		delete(merged, "Age")
	}
	reason := f.storeReason(s.status, merged)
	if reason == "too-large" {
		reason = ""
	}
	return c.newEntry(f, s.status, merged, s.body), reason
}

// updatable reports whether a 304's field k updates the stored header
// (RFC 9111 §3.1, §3.2).
func updatable(k string, h304 http.Header) bool {
	switch k {
	case "Content-Length", "Content-Range", "Set-Cookie", "Age", "Trailer", "Transfer-Encoding",
		"Connection", "Keep-Alive", "Proxy-Connection", "Te", "Upgrade",
		"Proxy-Authenticate", "Proxy-Authentication-Info", "Proxy-Authorization":
		return false
	}
	for _, v := range h304["Connection"] {
		for name := range strings.SplitSeq(v, ",") {
			if http.CanonicalHeaderKey(strings.TrimSpace(name)) == k {
				return false
			}
		}
	}
	return !strings.HasPrefix(k, http.TrailerPrefix)
}

// selects reports whether a 304 selects the stored response s for update
// (RFC 9111 §4.3.4): a strong ETag in the 304 must equal the stored strong
// ETag; a weak one, or a Last-Modified when there is no ETag, must match
// the stored one by weak comparison. A 304 without validators selects s
// (the one stored response this conditional request was made for).
func selects(s *Entry, h304 http.Header) bool {
	if et := first(h304["Etag"]); et != "" {
		stored := s.etag()
		if !strings.HasPrefix(et, "W/") {
			return et == stored
		}
		return stored != "" && weakMatch(et, stored)
	}
	if lm := first(h304["Last-Modified"]); lm != "" {
		return lm == s.lastModified()
	}
	return true
}
