// Package idempotency enforces idempotency keys at the gateway, after the
// IETF httpapi draft "The Idempotency-Key HTTP Header Field"
// (draft-ietf-httpapi-idempotency-key-header): for a route that opts in,
// the first response to a (subject, route, Idempotency-Key) is stored and
// replayed to every repeat, so that a client retrying a POST after a lost
// answer does not charge a card twice.
//
//   - A repeat with the same request (method, path, query and body hash)
//     gets the stored status, headers, body and trailers, marked with the
//     Idempotent-Replayed: true header (Options.ReplayHeader).
//   - A repeat while the first is still being processed gets 409 Conflict.
//     The first request's claim on the key lives for Options.LockTimeout
//     and is renewed every third of it while the request runs, so that a
//     long request keeps it; a claim ends only by its own request (each
//     claim has a token of its own), or when its gateway died and it was
//     not renewed.
//   - The same key with a different request gets 422 Unprocessable Content.
//   - A route that requires a key answers a request without one 400.
//   - 5xx answers, 408 and 429 (the request did not run: RFC 9110
//     §15.5.9, RFC 6585 §4), any answer to a request an overload limit
//     shed (RequestInfo.Shed), gRPC answers (Content-Type application/grpc
//     or a subtype) whose final grpc-status is not 0, answers larger than
//     MaxResponseBytes, event streams (text/event-stream), protocol
//     switches (101) and hijacked connections are not stored: the key is
//     released, and a retry runs again. A handler that writes nothing
//     answers 200, as net/http sends it, and that is stored. A response
//     that is flushed as it is written (a Backend flushes every answer
//     without Content-Length) is stored like any other once it is
//     complete.
//   - A client that went away after its request was passed on
//     (RequestInfo.ClientCanceled, or the request's context ended) leaves
//     an unknown outcome: the upstream may have run it. Nothing is stored
//     and the claim is not released; it is no longer renewed and expires
//     after LockTimeout. Until then a retry gets the 409 with Retry-After
//     instead of running again; after it, the outcome is still unknown and
//     a retry runs.
//   - Only the header fields the route's inner chain added or changed are
//     recorded (the header is compared with the one the middleware was
//     entered with): fields set by middlewares outside it (a request ID)
//     are the retry's own, and a replay sets only the recorded ones.
//
// Keys are stored per client: the authenticated subject
// (RequestInfo.Auth and SubjectKey), or on a route without authentication the
// client's address (RequestInfo.ClientIP), so that one client's key never
// replays another's answer. A request that was authenticated without a
// subject (RequestInfo.SubjectKey is empty: an extauthz without
// SubjectHeader, a JWT without "sub", a certificate with an empty subject),
// or that was not authenticated and has no client address (a unix-socket
// listener, or no RequestInfo: the middleware outside a Gateway), cannot be
// told apart from other such clients, so the middleware neither replays nor
// stores its answer: the request is passed on as if the middleware were not
// there (logged once per route at Debug level), except that a route with
// Options.Required still answers a request without a key
// 400. The middleware declares pylon.RoleNeedsSubject
// and pylon.RoleStoredResponses, so the Gateway refuses a route whose chain
// runs it before any of its authentications. Responses are kept in a
// [MemoryStore] (bounded in bytes, with a TTL) or, for several replicas, in
// Redis (pylonredis.NewIdempotencyStore).
package idempotency

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pylon-gateway/pylon"
)

// ErrInFlight is returned by a Store's Begin while another request holds
// the key.
var ErrInFlight = errors.New("idempotency: request with this key in flight")

// ErrClaimLost is returned by a Store's Extend and Complete when the
// caller's claim on the key is gone and another request's claim, or a
// stored response, is there instead.
var ErrClaimLost = errors.New("idempotency: claim on this key lost to another request")

// Entry is a stored response.
type Entry struct {
	// Fingerprint is the hash of the request that produced it.
	Fingerprint string
	// Status is the response's status code.
	Status int
	// Header is the response's header, and its trailers under keys
	// prefixed with http.TrailerPrefix.
	Header http.Header
	// Body is the response's body.
	Body []byte
}

// size is an estimate of the bytes e holds.
func (e *Entry) size() int {
	n := len(e.Fingerprint) + len(e.Body) + 64
	for k, vv := range e.Header {
		n += len(k)
		for _, v := range vv {
			n += len(v) + 16
		}
	}
	return n
}

// Store keeps claims and responses by key. Implementations must be safe
// for concurrent use.
//
// A claim belongs to the request that made it, named by its token (a
// string the middleware makes unique to each request, across gateways):
// Extend, Complete and Release act on a claim only with its token, so
// that a request whose claim expired never ends or overwrites the claim of
// the request that took the key after it.
type Store interface {
	// Begin claims key for a request with fingerprint fp under token, for
	// at most lock. It returns (nil, nil) when the caller now holds the
	// claim, the stored entry when a response was stored, and ErrInFlight
	// when another request holds the claim.
	Begin(ctx context.Context, key, token, fp string, lock time.Duration) (*Entry, error)
	// Extend makes token's claim on key last lock from now; the middleware
	// calls it every lock/3 while the request runs. A free key (the claim
	// expired and nobody took the key since) is claimed for token again. It
	// returns ErrClaimLost when another request's claim, or a stored
	// response, is there.
	Extend(ctx context.Context, key, token string, lock time.Duration) error
	// Complete stores e under key for ttl, ending token's claim; a free key
	// is stored too. It returns ErrClaimLost, storing nothing, when
	// another request's claim, or a stored response, is there.
	Complete(ctx context.Context, key, token string, e *Entry, ttl time.Duration) error
	// Release ends token's claim on key without storing anything. Another
	// request's claim, and a stored response, are left as they are.
	Release(ctx context.Context, key, token string) error
}

// Options configures the middleware. Every field's zero value is a safe
// default, written in its comment.
type Options struct {
	// Store keeps claims and responses. Nil means a MemoryStore of its own
	// with the default MemoryOptions.
	Store Store
	// Required answers 400 to requests without an Idempotency-Key. False
	// means such requests pass through untouched.
	Required bool
	// TTL is how long a response is replayed. Zero means 24h.
	TTL time.Duration
	// LockTimeout is how long a claim lives when the gateway holding it
	// dies before the response, or its client went away after the request
	// was passed on (its outcome unknown: repeats get 409 until the claim
	// expires, and run after): while the request runs, its claim is
	// renewed for LockTimeout every LockTimeout/3. Zero means 1 minute.
	LockTimeout time.Duration
	// MaxBodyBytes bounds the request bodies hashed; a larger body is
	// answered 413. Zero means 1 MiB.
	MaxBodyBytes int64
	// MaxResponseBytes bounds the responses stored; larger ones are sent
	// but not stored. Zero means 1 MiB.
	MaxResponseBytes int
	// ReplayHeader is the header set to "true" on a replayed response.
	// Empty means "Idempotent-Replayed".
	ReplayHeader string
	// Header is the request header carrying the key. Empty means
	// "Idempotency-Key".
	Header string
	// Logger receives, at Debug level, the first request of each route
	// that was authenticated without a subject, and the first that was
	// neither authenticated nor from a client address (not keyed), and at Warn
	// level the claims that could not be renewed. Nil means
	// slog.Default().
	Logger *slog.Logger
}

// maxKeyLen bounds the Idempotency-Key accepted.
const maxKeyLen = 255

// tokenPrefix and tokenSeq make claim tokens: random per process, so that
// no two gateways sharing a store make the same one, and counted within it.
var (
	tokenPrefix = rand.Text()
	tokenSeq    atomic.Uint64
)

// newToken returns a token for a claim, unique to its request.
func newToken() string {
	var b [48]byte
	t := append(b[:0], tokenPrefix...)
	t = strconv.AppendUint(t, tokenSeq.Add(1), 36)
	return string(t)
}

// timer is the part of *time.Timer that renews a claim.
type timer interface {
	Stop() bool
	Reset(d time.Duration) bool
}

// afterFunc starts the timer that renews a claim, as time.AfterFunc; tests
// replace it (export_test.go) before calling New.
var afterFunc = func(d time.Duration, f func()) timer { return time.AfterFunc(d, f) }

// New returns the idempotency middleware for the routes it is used on.
// It panics on invalid options, so that a misconfigured gateway fails at
// start-up.
func New(opts Options) func(http.Handler) http.Handler {
	if opts.TTL < 0 || opts.LockTimeout < 0 || opts.MaxBodyBytes < 0 || opts.MaxResponseBytes < 0 {
		panic("idempotency: negative TTL, LockTimeout, MaxBodyBytes or MaxResponseBytes")
	}
	if opts.Store == nil {
		opts.Store = NewMemoryStore(MemoryOptions{})
	}
	if opts.TTL == 0 {
		opts.TTL = 24 * time.Hour
	}
	if opts.LockTimeout == 0 {
		opts.LockTimeout = time.Minute
	}
	if opts.MaxBodyBytes == 0 {
		opts.MaxBodyBytes = 1 << 20
	}
	if opts.MaxResponseBytes == 0 {
		opts.MaxResponseBytes = 1 << 20
	}
	if opts.ReplayHeader == "" {
		opts.ReplayHeader = "Idempotent-Replayed"
	}
	if opts.Header == "" {
		opts.Header = "Idempotency-Key"
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	opts.Header = http.CanonicalHeaderKey(opts.Header)
	af := afterFunc
	return func(next http.Handler) http.Handler {
		return pylon.WithStage(&handler{opts: opts, next: next, afterFunc: af},
			pylon.Stage{Name: "idempotency", Roles: pylon.RoleNeedsSubject | pylon.RoleStoredResponses})
	}
}

type handler struct {
	opts Options
	next http.Handler
	// afterFunc starts the timers renewing claims.
	afterFunc func(time.Duration, func()) timer
	// noSubjectLogged is set once a request without a subject was logged.
	noSubjectLogged atomic.Bool
	// noClientLogged is set once a request without a client was logged.
	noClientLogged atomic.Bool
}

// parseKey reads the key: an RFC 8941 sf-string ("...") as the draft
// specifies, or a bare token as many clients send.
func parseKey(vv []string) (string, bool) {
	if len(vv) != 1 {
		return "", false
	}
	v := strings.TrimSpace(vv[0])
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		v = v[1 : len(v)-1]
	}
	if v == "" || len(v) > maxKeyLen || strings.ContainsAny(v, "\"\\") {
		return "", false
	}
	for i := 0; i < len(v); i++ {
		if v[i] < 0x20 || v[i] > 0x7e {
			return "", false
		}
	}
	return v, true
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	o := &h.opts
	vv := r.Header[o.Header]
	if vv == nil {
		if o.Required {
			pylon.Error(w, r, http.StatusBadRequest, "This route requires an "+o.Header+" header.")
			return
		}
		h.next.ServeHTTP(w, r)
		return
	}
	// A key belongs to its client: the authenticated subject (with the
	// authentication that named it), else the client's address.
	info := pylon.Info(r.Context())
	client, subject, route := "", "", r.Pattern
	if info != nil {
		if info.Authenticated() {
			client, subject = info.Auth, info.SubjectKey()
			if subject == "" {
				// Authenticated, but not as anyone in particular: this
				// client cannot be told apart from the others like it,
				// so its key is not used at all.
				h.logNoSubject(r, info)
				h.next.ServeHTTP(w, r)
				return
			}
		} else if info.ClientIP.IsValid() {
			client, subject = "ip", info.ClientIP.String()
		}
		if info.Route != "" {
			route = info.Route
		}
	}
	if subject == "" {
		// Neither authenticated nor with a client address (a unix-socket
		// listener, or no Gateway): all such clients would share one key
		// space, so the key is not used.
		h.logNoClient(r, route)
		h.next.ServeHTTP(w, r)
		return
	}
	ik, ok := parseKey(vv)
	if !ok {
		pylon.Error(w, r, http.StatusBadRequest, "The "+o.Header+" header is not a valid key.")
		return
	}
	body, err := readBody(r, o.MaxBodyBytes)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			pylon.Error(w, r, http.StatusRequestEntityTooLarge, "The request body is larger than this route accepts.")
		} else {
			pylon.Error(w, r, http.StatusBadRequest, "The request body could not be read.")
		}
		return
	}
	key := digest(client, subject, route, ik)
	fp := digest(r.Method, r.URL.RequestURI(), string(body))
	token := newToken()

	e, err := o.Store.Begin(r.Context(), key, token, fp, o.LockTimeout)
	switch {
	case errors.Is(err, ErrInFlight):
		w.Header().Set("Retry-After", "1")
		pylon.Error(w, r, http.StatusConflict, "A request with this "+o.Header+" is still being processed.")
		return
	case err != nil:
		pylon.Error(w, r, http.StatusServiceUnavailable, "The idempotency store is unavailable.")
		return
	case e != nil && e.Fingerprint != fp:
		pylon.Error(w, r, http.StatusUnprocessableEntity, "This "+o.Header+" was used with a different request.")
		return
	case e != nil:
		dst := w.Header()
		for k, vv := range e.Header {
			dst[k] = vv
		}
		dst.Set(o.ReplayHeader, "true")
		w.WriteHeader(e.Status)
		if r.Method != http.MethodHead {
			_, _ = w.Write(e.Body)
		}
		return
	}

	// This request holds the claim: run it, keeping the claim while it
	// runs, and store its answer.
	ctx := context.WithoutCancel(r.Context()) // the request's may be done
	keeper := h.keepClaim(ctx, route, key, token)
	rec := &recorder{ResponseWriter: w, max: o.MaxResponseBytes, before: w.Header().Clone()}
	keep := false // the claim is left to expire, neither stored nor released
	stored := false
	defer func() {
		keeper.stop()
		if !stored && !keep {
			// A 5xx, a refusal, a streamed, oversized or missing answer,
			// or a panic: the next try runs again.
			_ = o.Store.Release(ctx, key, token)
		}
	}()
	h.next.ServeHTTP(rec, r)
	keeper.stop() // before Complete: no renewal after the claim ends
	if (info != nil && info.ClientCanceled) || r.Context().Err() != nil {
		// The client went away after the request was passed on: it may
		// have run, and its answer is unknown. Neither stored nor
		// released: the claim expires after LockTimeout, and until then a
		// retry is answered 409 instead of running it again.
		keep = true
		return
	}
	if rec.status == 0 && !rec.skip && !rec.hijacked {
		rec.WriteHeader(http.StatusOK) // as net/http sends when nothing was written
	}
	if rec.status == 0 || rec.skip || !storable(rec.status, info) {
		return
	}
	ent := &Entry{Fingerprint: fp, Status: rec.status, Header: rec.header, Body: rec.body}
	rec.addTrailers(ent.Header)
	if rec.grpc && !grpcOK(ent.Header) {
		return
	}
	switch err := o.Store.Complete(ctx, key, token, ent, o.TTL); {
	case err == nil:
		stored = true
	case errors.Is(err, ErrClaimLost):
		o.Logger.LogAttrs(ctx, slog.LevelWarn, "idempotency: response not stored: another request took the key while this one ran",
			slog.String("route", route))
	}
}

// storable reports whether an answer with status is stored: not a 5xx,
// nor a refusal that says the request did not run: 408 (RFC 9110
// §15.5.9), 429 (RFC 6585 §4), or any answer of a request an overload
// limit shed (RequestInfo.Shed).
func storable(status int, info *pylon.RequestInfo) bool {
	switch {
	case status >= 500, status == http.StatusRequestTimeout, status == http.StatusTooManyRequests:
		return false
	case info != nil && info.Shed != "":
		return false
	}
	return true
}

// grpcOK reports whether a gRPC response's final grpc-status, its trailer
// or else its header (a trailers-only response), is 0 (OK).
func grpcOK(h http.Header) bool {
	v := h[http.TrailerPrefix+"Grpc-Status"]
	if v == nil {
		v = h["Grpc-Status"]
	}
	return len(v) == 1 && strings.TrimSpace(v[0]) == "0"
}

// logNoSubject logs, once per route, a request that was authenticated
// without a subject and so passed on without using its key.
func (h *handler) logNoSubject(r *http.Request, info *pylon.RequestInfo) {
	if h.noSubjectLogged.Load() || !h.noSubjectLogged.CompareAndSwap(false, true) {
		return
	}
	route := info.Route
	if route == "" {
		route = r.Pattern
	}
	h.opts.Logger.LogAttrs(r.Context(), slog.LevelDebug,
		"idempotency: request authenticated without a subject; its key is not used (not replayed, not stored)",
		slog.String("route", route), slog.String("auth", info.Auth))
}

// logNoClient logs, once per route, a request that was neither
// authenticated nor from a known client address, and so passed on without
// using its key.
func (h *handler) logNoClient(r *http.Request, route string) {
	if h.noClientLogged.Load() || !h.noClientLogged.CompareAndSwap(false, true) {
		return
	}
	h.opts.Logger.LogAttrs(r.Context(), slog.LevelDebug,
		"idempotency: request without authentication nor client address; its key is not used (not replayed, not stored)",
		slog.String("route", route))
}

// keepClaim starts renewing the claim on key every LockTimeout/3, until
// the keeper it returns is stopped.
func (h *handler) keepClaim(ctx context.Context, route, key, token string) *claimKeeper {
	k := &claimKeeper{h: h, ctx: ctx, route: route, key: key, token: token,
		period: max(h.opts.LockTimeout/3, time.Millisecond)}
	k.mu.Lock()
	k.t = h.afterFunc(k.period, k.renew)
	k.mu.Unlock()
	return k
}

// claimKeeper renews one request's claim while the request runs: a timer
// that extends it, then starts again, until stop. No goroutine waits for
// it in between.
type claimKeeper struct {
	h                 *handler
	ctx               context.Context
	route, key, token string
	period            time.Duration
	running           sync.WaitGroup // a renewal in progress

	mu      sync.Mutex
	t       timer
	stopped bool
}

// renew extends the claim, and starts the timer again unless the keeper
// was stopped or the claim was lost.
func (k *claimKeeper) renew() {
	k.mu.Lock()
	if k.stopped {
		k.mu.Unlock()
		return
	}
	k.running.Add(1)
	k.mu.Unlock()
	defer k.running.Done()

	o := &k.h.opts
	err := o.Store.Extend(k.ctx, k.key, k.token, o.LockTimeout)
	lost := errors.Is(err, ErrClaimLost)
	switch {
	case lost:
		o.Logger.LogAttrs(k.ctx, slog.LevelWarn, "idempotency: claim lost to another request while this one ran",
			slog.String("route", k.route))
	case err != nil: // tried again at the next period, within the lock
		o.Logger.LogAttrs(k.ctx, slog.LevelWarn, "idempotency: claim not renewed",
			slog.String("route", k.route), slog.String("error", err.Error()))
	}
	k.mu.Lock()
	if !k.stopped && !lost {
		k.t.Reset(k.period)
	}
	k.mu.Unlock()
}

// stop stops the renewals and returns once none is in progress, so that
// none runs after the claim ended. It may be called again.
func (k *claimKeeper) stop() {
	k.mu.Lock()
	if k.stopped {
		k.mu.Unlock()
		return
	}
	k.stopped = true
	k.t.Stop()
	k.mu.Unlock()
	k.running.Wait()
}

func readBody(r *http.Request, max int64) ([]byte, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	b, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, max))
	if err != nil {
		return nil, err
	}
	r.Body = io.NopCloser(bytes.NewReader(b))
	r.ContentLength = int64(len(b))
	return b, nil
}

// digest hashes parts, separated so that they cannot run into each other.
func digest(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		_, _ = io.WriteString(h, p)
		_, _ = h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// recorder passes the response through and keeps a copy of it, up to max
// bytes of body.
type recorder struct {
	http.ResponseWriter
	max    int
	status int
	// before is the header as the middleware was entered, set by the
	// middlewares outside it; header holds only the fields the inner
	// chain added or changed, sent the ones sent at WriteHeader.
	before, header, sent http.Header
	body                 []byte
	skip                 bool // too large, an event stream or an upgrade: not stored
	hijacked             bool // the connection was taken: nothing to store
	grpc                 bool // a gRPC response: stored only with grpc-status 0
}

func (r *recorder) WriteHeader(code int) {
	switch {
	case r.status != 0:
	case code == http.StatusSwitchingProtocols:
		r.skip = true // an upgrade: the connection is the client's now
	case code >= 200:
		r.status = code
		live := r.ResponseWriter.Header()
		r.sent = live.Clone()
		r.header = make(http.Header, len(r.sent))
		for k, vv := range r.sent {
			if k != "Date" && !slices.Equal(vv, r.before[k]) {
				r.header[k] = vv
			}
		}
		if ct := live["Content-Type"]; len(ct) > 0 && strings.HasPrefix(ct[0], "text/event-stream") {
			r.skip = true // a stream of events, not an answer to replay
		}
		r.grpc = pylon.IsGRPC(&http.Request{Header: live})
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.WriteHeader(http.StatusOK)
	}
	if !r.skip {
		if len(r.body)+len(p) > r.max {
			r.skip, r.body = true, nil
		} else {
			r.body = append(r.body, p...)
		}
	}
	return r.ResponseWriter.Write(p)
}

// Flush sends what was written. A flush says nothing of the answer (a
// Backend flushes every answer of unknown length), so it is still
// recorded: an event stream, or a body larger than max, is not.
func (r *recorder) Flush() {
	if r.status == 0 {
		r.WriteHeader(http.StatusOK) // as a flush before WriteHeader does
	}
	_ = http.NewResponseController(r.ResponseWriter).Flush()
}

// Hijack hands the connection over, as the wrapped writer does: nothing is
// stored after it.
func (r *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := http.NewResponseController(r.ResponseWriter).Hijack()
	if err == nil {
		r.hijacked = true
	}
	return c, rw, err
}

// addTrailers adds the response's trailers to h under keys prefixed with
// http.TrailerPrefix, as a handler sets them: those set with the prefix,
// and those declared in the Trailer header and set after WriteHeader. A
// declared name never overwrites a prefixed entry, nor is taken when its
// value is still the header's sent at WriteHeader (a field that is both a
// header and a trailer, as Server-Timing may be).
func (r *recorder) addTrailers(h http.Header) {
	live := r.ResponseWriter.Header()
	for k, vv := range live {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			h[k] = slices.Clone(vv)
		}
	}
	for _, v := range r.sent["Trailer"] {
		for name := range strings.SplitSeq(v, ",") {
			name = http.CanonicalHeaderKey(strings.TrimSpace(name))
			if name == "" {
				continue
			}
			if _, ok := h[http.TrailerPrefix+name]; ok {
				continue
			}
			if vv, ok := live[name]; ok && !slices.Equal(vv, r.sent[name]) {
				h[http.TrailerPrefix+name] = slices.Clone(vv)
			}
		}
	}
}

// Unwrap returns the wrapped writer, for http.ResponseController.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
