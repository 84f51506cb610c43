// Package basicauth authenticates requests with HTTP Basic credentials
// (RFC 7617), for the internal tools that still use them: against a
// verifier the user supplies, or an htpasswd file of bcrypt hashes.
//
// The user becomes the request's subject (pylon.Info(ctx).Subject, with
// "basic" in Auth). An htpasswd check of an unknown user costs the bcrypt
// work of the file's most expensive hash, so with one cost in the file (as
// htpasswd -B writes it) the time taken does not tell which names are
// valid; a user whose hash has a lower cost answers faster.
package basicauth

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"

	"golang.org/x/crypto/bcrypt"

	"github.com/pylon-gateway/pylon"
)

// Sentinel errors, logged as the reason a request was rejected.
var (
	// ErrMissing means the request carried no Basic credentials.
	ErrMissing = errors.New("basicauth: no credentials")
	// ErrInvalid means the user or password is wrong, or the credentials
	// are malformed or too long.
	ErrInvalid = errors.New("basicauth: invalid credentials")
	// ErrVerify wraps an error returned by the Verifier; the request is
	// answered 503.
	ErrVerify = errors.New("basicauth: verifier failed")
	// ErrHtpasswd is wrapped by errors reading an htpasswd file.
	ErrHtpasswd = errors.New("basicauth: bad htpasswd")
)

// Verifier reports whether password is user's. A non-nil error means the
// check itself failed (a store is down): the request is answered 503. It
// must be safe for concurrent use and should take the same time whether
// or not user exists.
type Verifier func(ctx context.Context, user, password string) (ok bool, err error)

// MaxCost is the highest bcrypt cost Htpasswd accepts: a check at cost 16
// takes about four seconds of a core.
const MaxCost = 16

// Htpasswd returns a Verifier over an htpasswd document: one "user:hash"
// per line, blank lines and "#" comments ignored. Only bcrypt hashes
// ("$2y$", "$2a$", "$2b$", as htpasswd -B writes) are accepted; MD5, SHA-1,
// crypt and plain entries are errors, at start-up, rather than weak checks
// at request time, and so is a cost over MaxCost (each check of it would
// take seconds or more: a login would be a denial of service).
func Htpasswd(r io.Reader) (Verifier, error) {
	users := map[string][]byte{}
	cost := 0
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		user, hash, ok := strings.Cut(line, ":")
		if !ok || user == "" {
			return nil, fmt.Errorf("%w: line %d is not user:hash", ErrHtpasswd, n)
		}
		c, err := bcrypt.Cost([]byte(hash))
		if err != nil {
			return nil, fmt.Errorf("%w: line %d (user %q): not a bcrypt hash (use htpasswd -B)", ErrHtpasswd, n, user)
		}
		if c > MaxCost {
			return nil, fmt.Errorf("%w: line %d (user %q): bcrypt cost %d is over %d", ErrHtpasswd, n, user, c, MaxCost)
		}
		if _, dup := users[user]; dup {
			return nil, fmt.Errorf("%w: user %q appears twice", ErrHtpasswd, user)
		}
		users[user] = []byte(hash)
		cost = max(cost, c)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrHtpasswd, err)
	}
	// An unknown user is checked against this hash, of the highest cost
	// in the file, so that it costs what a known user costs.
	if cost == 0 {
		cost = bcrypt.DefaultCost
	}
	dummy, err := bcrypt.GenerateFromPassword([]byte("pylon-basicauth-dummy"), cost)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrHtpasswd, err)
	}
	return func(_ context.Context, user, password string) (bool, error) {
		hash, known := users[user]
		if !known {
			hash = dummy
		}
		ok := bcrypt.CompareHashAndPassword(hash, []byte(password)) == nil
		return ok && known, nil
	}, nil
}

// HtpasswdFile reads the htpasswd file at path once; see Htpasswd.
func HtpasswdFile(path string) (Verifier, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrHtpasswd, err)
	}
	defer f.Close()
	return Htpasswd(f)
}

// Options configures RequireWithOptions.
type Options struct {
	// Verify checks a user's password. Required: nil panics when the
	// middleware is built, at start-up.
	Verify Verifier
	// Realm is the realm of the challenge. Zero means "api".
	Realm string
	// MaxBytes bounds the decoded credentials; longer ones are rejected
	// without a check (bcrypt reads only 72 bytes of a password anyway).
	// Zero means 1024.
	MaxBytes int
	// Forward keeps the Authorization header on the request passed on.
	// False (the default) deletes it, so the password never reaches an
	// upstream.
	Forward bool
	// Logger receives the reason of each rejection at Debug level (the
	// rejection is recorded in pylon.RequestInfo and logged once, by the
	// access log). Nil means slog.Default().
	Logger *slog.Logger
}

// Require returns a middleware that admits requests whose Basic
// credentials v accepts. See RequireWithOptions.
func Require(v Verifier) pylon.Middleware {
	return RequireWithOptions(Options{Verify: v})
}

// RequireWithOptions returns a middleware that authenticates each request
// by its Basic credentials. Missing or wrong credentials are answered 401
// with `WWW-Authenticate: Basic realm="...", charset="UTF-8"`, a failed
// Verifier 503, both as problem+json without detail; the reason is logged.
// On success the user is pylon.Info(ctx).Subject, with "basic" in Auth.
func RequireWithOptions(o Options) pylon.Middleware {
	if o.Verify == nil {
		panic("basicauth: Options.Verify is nil")
	}
	maxLen := cmp.Or(o.MaxBytes, 1024)
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	realm := strings.NewReplacer(`"`, "", `\`, "").Replace(cmp.Or(o.Realm, "api"))
	challenge := `Basic realm="` + realm + `", charset="UTF-8"`
	stage := pylon.Stage{Name: "basicauth.Require", Roles: pylon.RoleAuthenticate}
	return func(next http.Handler) http.Handler {
		return pylon.WithStage(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			err, code := error(nil), ""
			user, pass, ok := "", "", false
			switch vals := r.Header["Authorization"]; {
			case len(vals) == 0:
				err, code = ErrMissing, "missing_credentials"
			case len(vals) > 1 || len(vals[0]) > maxLen*4/3+16:
				err, code = ErrInvalid, "invalid_credentials"
			default:
				if user, pass, ok = r.BasicAuth(); !ok {
					err, code = ErrMissing, "missing_credentials" // another scheme
				}
			}
			if err == nil {
				good, verr := o.Verify(r.Context(), user, pass)
				switch {
				case verr != nil:
					err, code = errors.Join(ErrVerify, verr), "unavailable"
				case !good:
					err, code = ErrInvalid, "invalid_credentials"
				}
			}
			if err != nil {
				status := http.StatusUnauthorized
				if errors.Is(err, ErrVerify) {
					status = http.StatusServiceUnavailable
				} else {
					w.Header().Set("WWW-Authenticate", challenge)
				}
				log.LogAttrs(r.Context(), slog.LevelDebug, "basicauth: request rejected",
					slog.Int("status", status), slog.String("reason", err.Error()),
					slog.String("method", r.Method), slog.String("path", r.URL.Path))
				if info := pylon.Info(r.Context()); info != nil && info.Error == "" {
					info.Error, info.AuthFailure = err.Error(), code
				}
				pylon.WriteProblem(w, r, pylon.Problem{Status: status})
				return
			}
			if !o.Forward {
				r.Header.Del("Authorization")
			}
			if info := pylon.Info(r.Context()); info != nil {
				info.Subject, info.SubjectScope, info.Auth = user, "", "basic"
			}
			next.ServeHTTP(w, r)
		}), stage)
	}
}
