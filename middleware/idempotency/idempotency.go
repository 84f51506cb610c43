// Package idempotency enforces idempotency keys at the gateway, after the
// IETF httpapi draft "The Idempotency-Key HTTP Header Field"
// (draft-ietf-httpapi-idempotency-key-header): for a route that opts in,
// the first response to a (subject, route, Idempotency-Key) is stored and
// replayed to every repeat, so that a client retrying a POST after a lost
// answer does not charge a card twice.
//
//   - A repeat with the same request (method, path, query and body hash)
//     gets the stored status, headers and body, marked with the
//     Idempotent-Replayed: true header (Options.ReplayHeader).
//   - A repeat while the first is still being processed gets 409 Conflict.
//   - The same key with a different request gets 422 Unprocessable Content.
//   - A route that requires a key answers a request without one 400.
//   - 5xx answers, and answers larger than MaxResponseBytes or streamed
//     (flushed), are not stored: the key is released, and a retry runs
//     again.
//
// Keys are stored per client: the authenticated subject
// (RequestInfo.Auth and SubjectKey), or on a route without authentication the
// client's address (RequestInfo.ClientIP), so that one client's key never
// replays another's answer. The middleware declares pylon.RoleNeedsSubject
// and pylon.RoleStoredResponses, so the Gateway refuses a route whose chain
// runs it before any of its authentications. Responses are kept in a
// [MemoryStore] (bounded in bytes, with a TTL) or, for several replicas, in
// Redis (pylonredis.NewIdempotencyStore).
package idempotency

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/pylon-gateway/pylon"
)

// ErrInFlight is returned by a Store's Begin while another request holds
// the key.
var ErrInFlight = errors.New("idempotency: request with this key in flight")

// Entry is a stored response.
type Entry struct {
	// Fingerprint is the hash of the request that produced it.
	Fingerprint string
	// Status is the response's status code.
	Status int
	// Header is the response's header.
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
type Store interface {
	// Begin claims key for a request with fingerprint fp for at most
	// lock. It returns (nil, nil) when the caller now holds the claim, the
	// stored entry when a response was stored, and ErrInFlight when
	// another request holds the claim.
	Begin(ctx context.Context, key, fp string, lock time.Duration) (*Entry, error)
	// Complete stores e under key for ttl, ending the claim.
	Complete(ctx context.Context, key string, e *Entry, ttl time.Duration) error
	// Release ends the claim on key without storing anything.
	Release(ctx context.Context, key string) error
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
	// dies before the response (a request still running holds its claim).
	// Zero means 1 minute.
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
}

// maxKeyLen bounds the Idempotency-Key accepted.
const maxKeyLen = 255

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
	opts.Header = http.CanonicalHeaderKey(opts.Header)
	return func(next http.Handler) http.Handler {
		return pylon.WithStage(&handler{opts: opts, next: next},
			pylon.Stage{Name: "idempotency", Roles: pylon.RoleNeedsSubject | pylon.RoleStoredResponses})
	}
}

type handler struct {
	opts Options
	next http.Handler
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
	// A key belongs to its client: the authenticated subject (with the
	// authentication that named it), else the client's address.
	client, subject, route := "", "", r.Pattern
	if info := pylon.Info(r.Context()); info != nil {
		if info.Authenticated() {
			client, subject = info.Auth, info.SubjectKey()
		} else if info.ClientIP.IsValid() {
			client, subject = "ip", info.ClientIP.String()
		}
		if info.Route != "" {
			route = info.Route
		}
	}
	key := digest(client, subject, route, ik)
	fp := digest(r.Method, r.URL.RequestURI(), string(body))

	e, err := o.Store.Begin(r.Context(), key, fp, o.LockTimeout)
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

	// This request holds the claim: run it, and store its answer.
	rec := &recorder{ResponseWriter: w, max: o.MaxResponseBytes}
	stored := false
	defer func() {
		if !stored {
			// A 5xx, a streamed or oversized answer, or a panic: the next
			// try runs again. The request's context may be done.
			_ = o.Store.Release(context.WithoutCancel(r.Context()), key)
		}
	}()
	h.next.ServeHTTP(rec, r)
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	if rec.status >= 500 || rec.skip {
		return
	}
	ent := &Entry{Fingerprint: fp, Status: rec.status, Header: rec.header, Body: rec.body}
	if err := o.Store.Complete(context.WithoutCancel(r.Context()), key, ent, o.TTL); err == nil {
		stored = true
	}
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
	header http.Header
	body   []byte
	skip   bool // too large or streamed: not stored
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 && code >= 200 {
		r.status = code
		r.header = r.ResponseWriter.Header().Clone()
		r.header.Del("Date")
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

// Flush sends what was written; a flushed (streamed) response is not
// stored.
func (r *recorder) Flush() {
	r.skip = true
	_ = http.NewResponseController(r.ResponseWriter).Flush()
}

// Unwrap returns the wrapped writer, for http.ResponseController.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
