// Package apikey authenticates requests by an API key sent in a header,
// against a lookup function the user supplies or a static set of keys
// compared in constant time. The key's owner becomes the request's subject
// (pylon.Info(ctx).Subject), which rate limiting can count against.
package apikey

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"log/slog"
	"net/http"

	"github.com/pylon-gateway/pylon"
)

// Sentinel errors, logged as the reason a request was rejected.
var (
	// ErrMissingKey means the request carried no key.
	ErrMissingKey = errors.New("apikey: no key")
	// ErrInvalidKey means the key is too long, sent more than once, or
	// unknown to the lookup.
	ErrInvalidKey = errors.New("apikey: invalid key")
	// ErrLookup wraps an error returned by the lookup function; the
	// request is answered 503.
	ErrLookup = errors.New("apikey: lookup failed")
)

// Lookup returns the owner of key. ok is false when the key is unknown;
// a non-nil error means the lookup itself failed (a store is down) and the
// request is answered 503 rather than 401. It must be safe for concurrent
// use and should compare keys in constant time.
type Lookup func(ctx context.Context, key string) (owner string, ok bool, err error)

// Static returns a Lookup over a fixed set of keys mapped to their owners.
// Each lookup hashes the presented key and compares it with every known
// key's hash in constant time, so neither the time taken nor an early exit
// tells which key, or which prefix, was close. Empty keys are ignored.
func Static(keys map[string]string) Lookup {
	type entry struct {
		sum   [sha256.Size]byte
		owner string
	}
	entries := make([]entry, 0, len(keys))
	for k, owner := range keys {
		if k != "" {
			entries = append(entries, entry{sha256.Sum256([]byte(k)), owner})
		}
	}
	return func(_ context.Context, key string) (string, bool, error) {
		sum := sha256.Sum256([]byte(key))
		found := -1
		for i := range entries {
			if subtle.ConstantTimeCompare(sum[:], entries[i].sum[:]) == 1 {
				found = i
			}
		}
		if found < 0 {
			return "", false, nil
		}
		return entries[found].owner, true, nil
	}
}

// Options configures RequireWithOptions.
type Options struct {
	// Lookup finds a key's owner. Required: nil panics when the middleware
	// is built, at start-up.
	Lookup Lookup
	// Header is the request header holding the key. Zero means "X-API-Key".
	Header string
	// MaxKeyBytes is the longest key looked up; longer keys are rejected
	// without a lookup. Zero means 256.
	MaxKeyBytes int
	// Forward keeps the key header on the request passed on. False (the
	// default) deletes it, so the key never reaches an upstream.
	Forward bool
	// Logger receives the reason of each rejection at Debug level (the
	// rejection is recorded in pylon.RequestInfo and logged once, by the
	// access log). Nil means slog.Default().
	Logger *slog.Logger
}

// Require returns a middleware that admits requests whose X-API-Key header
// holds a key that lookup knows. See RequireWithOptions.
func Require(lookup Lookup) func(http.Handler) http.Handler {
	return RequireWithOptions(Options{Lookup: lookup})
}

// RequireWithOptions returns a middleware that authenticates each request by
// its API key. A missing or unknown key is answered 401, a failed lookup
// 503, both as problem+json without detail; the reason is logged. On
// success the owner is in the request context (Owner) and in
// pylon.Info(ctx).Subject, with "apikey" in its Auth.
func RequireWithOptions(o Options) func(http.Handler) http.Handler {
	if o.Lookup == nil {
		panic("apikey: Options.Lookup is nil")
	}
	header := http.CanonicalHeaderKey(o.Header)
	if header == "" {
		header = "X-Api-Key"
	}
	maxLen := o.MaxKeyBytes
	if maxLen <= 0 {
		maxLen = 256
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	challenge := `ApiKey header="` + header + `"`
	stage := pylon.Stage{Name: "apikey.Require", Roles: pylon.RoleAuthenticate}
	return func(next http.Handler) http.Handler {
		return pylon.WithStage(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			vals := r.Header[header]
			var err error
			var code string // pylon.RequestInfo.AuthFailure
			switch {
			case len(vals) == 0 || vals[0] == "":
				err, code = ErrMissingKey, "missing_key"
			case len(vals) > 1 || len(vals[0]) > maxLen:
				err, code = ErrInvalidKey, "invalid_key"
			}
			var owner string
			if err == nil {
				var ok bool
				owner, ok, err = o.Lookup(r.Context(), vals[0])
				if err != nil {
					err, code = errors.Join(ErrLookup, err), "unavailable"
				} else if !ok {
					err, code = ErrInvalidKey, "unknown_key"
				}
			}
			if err != nil {
				status := http.StatusUnauthorized
				if errors.Is(err, ErrLookup) {
					status = http.StatusServiceUnavailable
				} else {
					w.Header().Set("WWW-Authenticate", challenge)
				}
				log.LogAttrs(r.Context(), slog.LevelDebug, "apikey: request rejected",
					slog.Int("status", status), slog.String("reason", err.Error()),
					slog.String("method", r.Method), slog.String("path", r.URL.Path))
				if info := pylon.Info(r.Context()); info != nil && info.Error == "" {
					info.Error = err.Error()
					info.AuthFailure = code
				}
				pylon.WriteProblem(w, r, pylon.Problem{Status: status})
				return
			}
			if !o.Forward {
				r.Header.Del(header)
			}
			if info := pylon.Info(r.Context()); info != nil {
				info.Subject, info.SubjectScope, info.Auth = owner, "", "apikey"
			}
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ownerKey{}, owner)))
		}), stage)
	}
}

type ownerKey struct{}

// Owner returns the owner of the API key that authenticated the request,
// and false when the request did not pass through Require.
func Owner(ctx context.Context) (string, bool) {
	o, ok := ctx.Value(ownerKey{}).(string)
	return o, ok
}
