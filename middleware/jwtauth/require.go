package jwtauth

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"golang.org/x/net/http/httpguts"

	"github.com/pylon-gateway/pylon"
)

// RequireOptions configures RequireWithOptions.
type RequireOptions struct {
	// Rules are checked in order after the token verified; the first that
	// fails answers 403. Nil means any valid token is admitted.
	Rules []Rule
	// Cookie is the name of a cookie read for the token when the request
	// has no Authorization header. Empty means no cookie.
	Cookie string
	// Header is the name of a header read for the token (its whole value)
	// when the request has no Authorization header. Empty means none.
	Header string
	// ForwardClaims maps an upstream header name to a claim path, e.g.
	// {"X-User-Id": "sub", "X-Tenant": "org.id"}. Every header named here
	// is deleted from the incoming request first, so a client can never
	// set it; it is then set from the claim when the claim is a string,
	// number or boolean. Nil means no header.
	ForwardClaims map[string]string
	// ForwardAuthorization keeps the Authorization header (and the token
	// header or cookie) on the request passed on. False strips the
	// Authorization header, the Header above and the Cookie above (the
	// other cookies are kept) before the next handler.
	ForwardAuthorization bool
	// DPoP, when set, accepts DPoP-bound tokens (RFC 9449):
	// "Authorization: DPoP <token>" with a proof in the "DPoP" header,
	// verified by DPoP, the challenge then naming DPoP and its algs. Nil
	// means the DPoP scheme is not accepted, and every token bound to a
	// DPoP key ("cnf" "jkt") is refused: such a token is only good with
	// its proof.
	DPoP *DPoP
	// Realm is the realm sent in WWW-Authenticate. Empty means
	// DefaultRealm.
	Realm string
	// Logger receives the reason of each rejection at Debug level: the
	// rejection itself is one event, recorded in pylon.RequestInfo (Error,
	// AuthFailure) and logged once by the access log. Nil means the
	// Verifier's Options.Logger when v is a *Verifier, else slog.Default().
	Logger *slog.Logger
}

// DefaultRealm is the realm of the WWW-Authenticate challenge when
// RequireOptions.Realm is empty: RFC 6750 §3 wants at least one auth-param.
const DefaultRealm = "api"

// Require returns a middleware that admits requests carrying a bearer token
// that v verifies and that passes every rule. See RequireWithOptions.
func Require(v TokenVerifier, rules ...Rule) func(http.Handler) http.Handler {
	return RequireWithOptions(v, RequireOptions{Rules: rules})
}

// RequireWithOptions returns a middleware that authenticates each request
// with v (a *Verifier, a *Multi or any TokenVerifier) and authorizes it
// with o.Rules.
//
// A request without a token gets 401 with `WWW-Authenticate: Bearer
// realm="api"`; an
// invalid token gets 401 with error="invalid_token"; a valid token that
// fails a rule gets 403 with error="insufficient_scope". Each is a
// problem+json response carrying no detail of the failure, which is
// logged instead. On success the claims are in the request context
// (FromContext), the subject in pylon.Info(ctx).Subject and "jwt" (or the
// verifier's Mechanism) in its Auth, which caches and rate limits after it
// read. With a Multi of several issuers the token's issuer is also its
// SubjectScope, so that two issuers' equal "sub"s are two clients to rate
// limits, per-subject caches and idempotency keys. A verifier that
// answers ErrUnavailable (or ErrNoKeys, or ErrClosed: the token could not
// be checked, which says nothing of it) gets 503 without a challenge.
//
// Tokens bound to their holder are checked whatever the verifier: one
// whose "cnf" has "x5t#S256" (RFC 8705) is admitted only over a TLS
// connection whose client certificate has that SHA-256 thumbprint, and
// one whose "cnf" has "jkt" only with the scheme DPoP and a valid proof of
// that key (see RequireOptions.DPoP); both otherwise get 401
// invalid_token.
func RequireWithOptions(v TokenVerifier, o RequireOptions) func(http.Handler) http.Handler {
	if v == nil {
		panic("jwtauth: RequireWithOptions with a nil Verifier")
	}
	mech := "jwt"
	if m, ok := v.(interface{ Mechanism() string }); ok {
		mech = m.Mechanism()
	}
	// A Multi of several issuers admits subjects of several namespaces:
	// the issuer then tells equal "sub"s apart (RequestInfo.SubjectScope).
	scoped := false
	if m, ok := v.(*Multi); ok {
		scoped = len(m.list) > 1
	}
	log := o.Logger
	if log == nil {
		if vl, ok := v.(interface{ logger() *slog.Logger }); ok {
			log = vl.logger()
		}
	}
	if log == nil {
		log = slog.Default()
	}
	realm := `realm="` + strings.NewReplacer(`"`, "", `\`, "").Replace(cmp.Or(o.Realm, DefaultRealm)) + `", `
	// RFC 6750 §3: the challenge carries at least one auth-param.
	missing := strings.TrimSuffix("Bearer "+realm, ", ")
	invalid := "Bearer " + realm + `error="invalid_token"`
	forbidden := "Bearer " + realm + `error="insufficient_scope"`
	var dpopInvalid, dpopProof, dpopForbidden string
	if d := o.DPoP; d != nil {
		// RFC 9449 §7.1: the DPoP challenge lists the proof algorithms.
		algs := `, algs="` + d.Algorithms() + `"`
		missing += ", DPoP " + realm + strings.TrimPrefix(algs, ", ")
		dpopInvalid = "DPoP " + realm + `error="invalid_token"` + algs
		dpopProof = "DPoP " + realm + `error="invalid_dpop_proof"` + algs
		dpopForbidden = "DPoP " + realm + `error="insufficient_scope"` + algs
	}
	fwdNames := make([]string, 0, len(o.ForwardClaims))
	fwdPaths := make([]string, 0, len(o.ForwardClaims))
	for name, path := range o.ForwardClaims {
		fwdNames = append(fwdNames, http.CanonicalHeaderKey(name))
		fwdPaths = append(fwdPaths, path)
	}
	headerName := http.CanonicalHeaderKey(o.Header)

	stage := pylon.Stage{Name: "jwtauth.Require", Roles: pylon.RoleAuthenticate}
	return func(next http.Handler) http.Handler {
		return pylon.WithStage(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			token, isDPoP, ok := tokenFrom(r, o.Cookie, headerName, o.DPoP != nil)
			if !ok {
				reject(w, r, log, http.StatusUnauthorized, invalid, ErrMalformed)
				return
			}
			if token == "" {
				reject(w, r, log, http.StatusUnauthorized, missing, ErrMissingToken)
				return
			}
			c, err := v.Verify(r.Context(), token)
			if err != nil {
				if unavailable(err) {
					// The token may be fine: no challenge, and a status
					// that tells the client to come back.
					reject(w, r, log, http.StatusServiceUnavailable, "", err)
					return
				}
				reject(w, r, log, http.StatusUnauthorized, cmp.Or(when(isDPoP, dpopInvalid), invalid), err)
				return
			}
			if c.x5t != "" || c.jkt != "" || isDPoP {
				if err := checkBinding(r, o.DPoP, c, token, isDPoP); err != nil {
					switch {
					case errors.Is(err, ErrUnavailable):
						reject(w, r, log, http.StatusServiceUnavailable, "", err)
					case errors.Is(err, ErrDPoPProof):
						reject(w, r, log, http.StatusUnauthorized, dpopProof, err)
					default:
						reject(w, r, log, http.StatusUnauthorized, cmp.Or(when(c.jkt != "" || isDPoP, dpopInvalid), invalid), err)
					}
					return
				}
			}
			for _, rule := range o.Rules {
				if err := rule(c); err != nil {
					if !errors.Is(err, ErrForbidden) {
						err = errors.Join(ErrForbidden, err)
					}
					reject(w, r, log, http.StatusForbidden, cmp.Or(when(isDPoP, dpopForbidden), forbidden), err)
					return
				}
			}
			for i, name := range fwdNames {
				r.Header.Del(name)
				if val := c.String(fwdPaths[i]); val != "" && httpguts.ValidHeaderFieldValue(val) {
					r.Header[name] = []string{val}
				}
			}
			if !o.ForwardAuthorization {
				r.Header.Del("Authorization")
				if isDPoP {
					r.Header.Del("Dpop")
				}
				if headerName != "" {
					r.Header.Del(headerName)
				}
				if o.Cookie != "" {
					dropCookie(r, o.Cookie)
				}
			}
			if info := pylon.Info(r.Context()); info != nil {
				info.Subject, info.SubjectScope, info.Auth = c.Subject, "", mech
				if scoped {
					info.SubjectScope = c.Issuer
				}
			}
			next.ServeHTTP(w, r.WithContext(NewContext(r.Context(), c)))
		}), stage)
	}
}

// unavailable reports whether err means the token could not be checked,
// not that it is bad: the verifier has no keys yet (its key set endpoint
// failing), was closed, or a service it asks is down. The client gets 503
// and no challenge, so that it does not throw a good token away.
func unavailable(err error) bool {
	return errors.Is(err, ErrUnavailable) || errors.Is(err, ErrNoKeys) || errors.Is(err, ErrClosed)
}

// when returns s when cond holds, else "".
func when(cond bool, s string) string {
	if cond {
		return s
	}
	return ""
}

// checkBinding enforces a token's "cnf": the client certificate of
// RFC 8705 and the DPoP key of RFC 9449.
func checkBinding(r *http.Request, d *DPoP, c *Claims, token string, isDPoP bool) error {
	if c.x5t != "" && certThumbprint(r) != c.x5t {
		return ErrCertificateBinding
	}
	switch {
	case c.jkt == "" && isDPoP:
		return fmt.Errorf("%w: DPoP scheme with an unbound token", ErrDPoPBinding)
	case c.jkt == "":
		return nil
	case !isDPoP || d == nil:
		return fmt.Errorf("%w: presented without its proof", ErrDPoPBinding)
	}
	proofs := r.Header["Dpop"]
	if len(proofs) > 1 {
		return fmt.Errorf("%w: more than one DPoP header", ErrDPoPProof)
	}
	proof := ""
	if len(proofs) == 1 {
		proof = proofs[0]
	}
	return d.Verify(r, proof, token, c.jkt)
}

// tokenFrom finds the token: the Authorization header when present (it
// must then be a single "Bearer" credential, or "DPoP" when dpop is set),
// else the header, else the cookie. ok is false for a malformed
// Authorization header.
func tokenFrom(r *http.Request, cookie, header string, dpop bool) (token string, isDPoP, ok bool) {
	if vals := r.Header["Authorization"]; len(vals) > 0 {
		if len(vals) > 1 {
			return "", false, false
		}
		scheme, tok, found := strings.Cut(vals[0], " ")
		if found && dpop && strings.EqualFold(scheme, "DPoP") {
			return strings.TrimSpace(tok), true, true
		}
		if !found || !strings.EqualFold(scheme, "Bearer") {
			return "", false, true // another scheme: no bearer token
		}
		return strings.TrimSpace(tok), false, true
	}
	if header != "" {
		if vals := r.Header[header]; len(vals) > 0 {
			if len(vals) > 1 {
				return "", false, false
			}
			return strings.TrimSpace(vals[0]), false, true
		}
	}
	if cookie != "" {
		if ck, err := r.Cookie(cookie); err == nil {
			return ck.Value, false, true
		}
	}
	return "", false, true
}

func reject(w http.ResponseWriter, r *http.Request, log *slog.Logger, status int, challenge string, reason error) {
	log.LogAttrs(r.Context(), slog.LevelDebug, "jwtauth: request rejected",
		slog.Int("status", status), slog.String("reason", reason.Error()),
		slog.String("method", r.Method), slog.String("path", r.URL.Path))
	if info := pylon.Info(r.Context()); info != nil && info.Error == "" {
		info.Error = reason.Error()
		info.AuthFailure = failureCode(reason)
	}
	if challenge != "" {
		w.Header().Set("WWW-Authenticate", challenge)
	}
	pylon.WriteProblem(w, r, pylon.Problem{Status: status})
}

// failureCode maps a rejection's reason to the bounded code recorded in
// pylon.RequestInfo.AuthFailure for metrics.
func failureCode(reason error) string {
	switch {
	case errors.Is(reason, ErrMissingToken):
		return "missing_token"
	case errors.Is(reason, ErrForbidden):
		return "insufficient_scope"
	case errors.Is(reason, ErrExpired):
		return "expired"
	case errors.Is(reason, ErrRevoked):
		return "revoked"
	case errors.Is(reason, ErrUnknownKey):
		return "unknown_key"
	case errors.Is(reason, ErrDPoPProof):
		return "invalid_dpop_proof"
	case errors.Is(reason, ErrDPoPBinding), errors.Is(reason, ErrCertificateBinding):
		return "unbound_token"
	case errors.Is(reason, ErrNoKeys), errors.Is(reason, ErrJWKS), errors.Is(reason, ErrClosed), errors.Is(reason, ErrUnavailable):
		return "unavailable"
	}
	return "invalid_token"
}

// dropCookie removes the cookies called name from r's Cookie header,
// keeping the others as they were sent.
func dropCookie(r *http.Request, name string) {
	lines := r.Header["Cookie"]
	if len(lines) == 0 {
		return
	}
	var kept []string
	for _, line := range lines {
		for part := range strings.SplitSeq(line, ";") {
			p := strings.TrimSpace(part)
			if n, _, _ := strings.Cut(p, "="); p != "" && strings.TrimSpace(n) != name {
				kept = append(kept, p)
			}
		}
	}
	if len(kept) == 0 {
		r.Header.Del("Cookie")
		return
	}
	r.Header["Cookie"] = []string{strings.Join(kept, "; ")}
}
