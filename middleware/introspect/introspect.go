// Package introspect authenticates opaque bearer tokens with OAuth 2.0
// Token Introspection (RFC 7662): the gateway asks the authorization
// server's introspection endpoint about each token, authenticating itself
// with client_secret_basic, and keeps the answers in a bounded cache.
//
// An [Introspector] is a [jwtauth.TokenVerifier]: it returns the same
// [jwtauth.Claims] a JWT would, so [jwtauth.Require] and
// [jwtauth.RequireWithOptions] apply the same rules (scopes, roles,
// predicates) and forward claims as headers the same way, and record
// "introspection" in pylon.RequestInfo.Auth.
//
// An active answer admits only an access token, as a JWT must be one: an
// answer whose "token_type" (RFC 7662 §2.2) is present and is not
// "Bearer", "DPoP" or "access_token" (compared ignoring case), or whose
// Keycloak-style "typ" claim is "Refresh" or "Offline" (refresh tokens) is
// refused with jwtauth.ErrTokenType, and so is one that looks like an
// OpenID Connect ID token by jwtauth's rule ([jwtauth.Claims.IsIDToken])
// unless Options.AllowIDTokens. Options.AuthorizedParties checks "azp" or
// "client_id" as jwtauth.Options.AuthorizedParties does. jwtauth.Require
// answers these refusals 401 invalid_token, as for JWTs.
//
// An active answer is cached until the token's "exp" and never longer than
// Options.CacheTTL; an inactive answer for Options.NegativeTTL; a failure
// to reach the endpoint is never cached and answers 503. Concurrent
// requests with the same token share one introspection call.
package introspect

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/pylon-gateway/pylon/internal/authcache"
	"github.com/pylon-gateway/pylon/middleware/jwtauth"
)

// Sentinel errors. Verify also returns jwtauth's: ErrMissingToken,
// ErrTokenTooLarge, ErrExpired, ErrNotYetValid, ErrIssuer, ErrAudience,
// ErrTokenType, ErrAuthorizedParty, and ErrUnavailable (wrapped with the
// cause) when the endpoint cannot answer.
var (
	// ErrInactive means the authorization server answered "active": false
	// (an unknown, expired or revoked token).
	ErrInactive = errors.New("introspect: token not active")
	// ErrConfig is wrapped by every configuration error New returns.
	ErrConfig = errors.New("introspect: invalid configuration")
)

// Options configures an Introspector. URL and ClientID are required.
type Options struct {
	// URL is the introspection endpoint (RFC 7662 §2), http or https.
	URL string
	// ClientID and ClientSecret authenticate the gateway to the endpoint
	// with HTTP Basic (client_secret_basic, RFC 6749 §2.3.1: both are
	// form-encoded before base64). ClientID is required.
	ClientID     string
	ClientSecret string
	// TokenTypeHint is sent as token_type_hint. Zero means
	// "access_token"; "-" sends none.
	TokenTypeHint string

	// Issuer, when set, is the required "iss" of an active answer.
	// Empty means the answer's "iss" is not checked.
	Issuer string
	// Audience, when set, lists the accepted "aud" values: an active
	// answer must carry one of them. Empty means no check.
	Audience []string
	// AuthorizedParties lists the clients whose tokens are accepted: an
	// active answer's "azp", or its "client_id" (RFC 7662 §2.2) when it
	// has no "azp", must be one of them. Empty means no check.
	AuthorizedParties []string
	// AllowIDTokens accepts answers that look like OpenID Connect ID
	// tokens ("at_hash", "c_hash" or "s_hash", or a "typ" claim of "ID";
	// see jwtauth.Claims.IsIDToken). False (the default) refuses them, as
	// jwtauth.Options.AllowIDTokens does: an ID token is meant for the
	// client that logged in, not for an API. Refresh tokens are refused
	// either way.
	AllowIDTokens bool

	// HTTPClient calls the endpoint. Nil means a client of its own.
	HTTPClient *http.Client
	// Timeout bounds one introspection call. Zero means 5s.
	Timeout time.Duration
	// MaxResponseBytes bounds an endpoint answer. Zero means 64 KiB.
	MaxResponseBytes int64
	// MaxTokenBytes is the longest token sent to the endpoint; longer
	// ones are refused at once. Zero means 8 KiB.
	MaxTokenBytes int

	// CacheSize bounds the answer cache in entries. Zero means 10000; a
	// negative value disables the cache.
	CacheSize int
	// CacheTTL is the longest an active answer is kept; it is never kept
	// past the token's "exp". Zero means 2m.
	CacheTTL time.Duration
	// NegativeTTL is how long an inactive answer is kept, so a client
	// replaying a bad token does not cost a call each time. Zero means
	// 10s; a negative value disables negative caching.
	NegativeTTL time.Duration

	// Logger receives endpoint failures. Nil means slog.Default().
	Logger *slog.Logger
	// Now returns the current time. Nil means time.Now.
	Now func() time.Time
}

// Introspector verifies opaque tokens at an introspection endpoint. It is
// safe for concurrent use and starts no goroutine.
type Introspector struct {
	o         Options
	auth      string // Authorization header value
	client    *http.Client
	ownClient bool
	aud       map[string]struct{}
	azp       map[string]struct{}
	cache     *authcache.Cache[answer, struct{}]
	sf        singleflight.Group
	now       func() time.Time
	log       *slog.Logger
}

// answer is a cached decision: claims, or the error an inactive token got.
type answer struct {
	claims *jwtauth.Claims
	err    error
}

// New returns an Introspector, or an error wrapping ErrConfig.
func New(o Options) (*Introspector, error) {
	u, err := url.Parse(o.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("%w: URL %q is not an http(s) URL", ErrConfig, o.URL)
	}
	if o.ClientID == "" {
		return nil, fmt.Errorf("%w: ClientID is required (RFC 7662 §2.1: the endpoint authenticates its callers)", ErrConfig)
	}
	i := &Introspector{o: o, client: o.HTTPClient, now: o.Now, log: o.Logger}
	i.o.Timeout = cmpOr(o.Timeout, 5*time.Second)
	i.o.MaxResponseBytes = cmpOr(o.MaxResponseBytes, 64<<10)
	i.o.MaxTokenBytes = cmpOr(o.MaxTokenBytes, 8<<10)
	i.o.CacheTTL = cmpOr(o.CacheTTL, 2*time.Minute)
	if o.NegativeTTL == 0 {
		i.o.NegativeTTL = 10 * time.Second
	}
	switch o.TokenTypeHint {
	case "":
		i.o.TokenTypeHint = "access_token"
	case "-":
		i.o.TokenTypeHint = ""
	}
	cred := url.QueryEscape(o.ClientID) + ":" + url.QueryEscape(o.ClientSecret)
	i.auth = "Basic " + base64.StdEncoding.EncodeToString([]byte(cred))
	if i.client == nil {
		i.client = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
		i.ownClient = true
	}
	if len(o.Audience) > 0 {
		i.aud = map[string]struct{}{}
		for _, a := range o.Audience {
			i.aud[a] = struct{}{}
		}
	}
	if len(o.AuthorizedParties) > 0 {
		i.azp = map[string]struct{}{}
		for _, a := range o.AuthorizedParties {
			i.azp[a] = struct{}{}
		}
	}
	if i.now == nil {
		i.now = time.Now
	}
	if i.log == nil {
		i.log = slog.Default()
	}
	if o.CacheSize >= 0 {
		i.cache = authcache.New[answer, struct{}](cmpOr(o.CacheSize, 10000))
	}
	return i, nil
}

func cmpOr[T int | int64 | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// Mechanism returns "introspection", what jwtauth.Require records in
// pylon.RequestInfo.Auth for requests this Introspector admitted.
func (i *Introspector) Mechanism() string { return "introspection" }

// Verify returns the claims of an active token. Errors are for logs, never
// for clients; an endpoint that cannot answer gives an error wrapping
// jwtauth.ErrUnavailable.
func (i *Introspector) Verify(ctx context.Context, token string) (*jwtauth.Claims, error) {
	if token == "" {
		return nil, jwtauth.ErrMissingToken
	}
	if len(token) > i.o.MaxTokenBytes {
		return nil, jwtauth.ErrTokenTooLarge
	}
	now := i.now()
	if i.cache != nil {
		if a, ok := i.cache.Get(token, now.UnixNano(), struct{}{}); ok {
			return a.claims, a.err
		}
	}
	ch := i.sf.DoChan(token, func() (any, error) {
		return i.introspect(context.WithoutCancel(ctx), token)
	})
	var res singleflight.Result
	select {
	case res = <-ch:
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %v", jwtauth.ErrUnavailable, ctx.Err())
	}
	if res.Err != nil {
		return nil, res.Err
	}
	a := res.Val.(answer)
	return a.claims, a.err
}

// introspect asks the endpoint and caches the answer.
func (i *Introspector) introspect(ctx context.Context, token string) (answer, error) {
	ctx, cancel := context.WithTimeout(ctx, i.o.Timeout)
	defer cancel()
	form := url.Values{"token": {token}}
	if i.o.TokenTypeHint != "" {
		form.Set("token_type_hint", i.o.TokenTypeHint)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, i.o.URL, strings.NewReader(form.Encode()))
	if err != nil {
		return answer{}, fmt.Errorf("%w: %v", jwtauth.ErrUnavailable, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", i.auth)
	resp, err := i.client.Do(req)
	if err != nil {
		i.log.Warn("introspect: endpoint unreachable", "err", err)
		return answer{}, fmt.Errorf("%w: introspect: %v", jwtauth.ErrUnavailable, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		// 401 here means the gateway's own credentials were refused.
		i.log.Warn("introspect: endpoint refused the call", "status", resp.StatusCode)
		return answer{}, fmt.Errorf("%w: introspect: endpoint answered %d", jwtauth.ErrUnavailable, resp.StatusCode)
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "application/json" && !strings.HasSuffix(mt, "+json") {
		return answer{}, fmt.Errorf("%w: introspect: endpoint answered media type %q", jwtauth.ErrUnavailable, mt)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, i.o.MaxResponseBytes+1))
	if err != nil || int64(len(body)) > i.o.MaxResponseBytes {
		return answer{}, fmt.Errorf("%w: introspect: answer unreadable or larger than %d bytes", jwtauth.ErrUnavailable, i.o.MaxResponseBytes)
	}
	var raw map[string]any
	if err := json.Unmarshal(body, &raw); err != nil {
		return answer{}, fmt.Errorf("%w: introspect: answer is not a JSON object", jwtauth.ErrUnavailable)
	}
	now := i.now()
	if active, _ := raw["active"].(bool); !active {
		a := answer{err: ErrInactive}
		if i.cache != nil && i.o.NegativeTTL > 0 {
			i.cache.Put(token, a, now.Add(i.o.NegativeTTL).UnixNano(), struct{}{}, now.UnixNano())
		}
		return a, nil
	}
	c, err := jwtauth.NewClaims(raw)
	if err != nil {
		return answer{}, fmt.Errorf("%w: introspect: claims of the wrong type", jwtauth.ErrUnavailable)
	}
	if err := i.check(c, now); err != nil {
		return answer{err: err}, nil
	}
	if i.cache != nil {
		until := now.Add(i.o.CacheTTL)
		if !c.ExpiresAt.IsZero() && c.ExpiresAt.Before(until) {
			until = c.ExpiresAt
		}
		i.cache.Put(token, answer{claims: c}, until.UnixNano(), struct{}{}, now.UnixNano())
	}
	return answer{claims: c}, nil
}

// check applies the same time, issuer, audience and access-token rules as
// a JWT, on top of the server's "active".
func (i *Introspector) check(c *jwtauth.Claims, now time.Time) error {
	if !c.ExpiresAt.IsZero() && !now.Before(c.ExpiresAt) {
		return jwtauth.ErrExpired
	}
	if !c.NotBefore.IsZero() && now.Before(c.NotBefore) {
		return jwtauth.ErrNotYetValid
	}
	if i.o.Issuer != "" && c.Issuer != i.o.Issuer {
		return jwtauth.ErrIssuer
	}
	if i.aud != nil && !slices.ContainsFunc(c.Audience, func(a string) bool {
		_, ok := i.aud[a]
		return ok
	}) {
		return jwtauth.ErrAudience
	}
	if tt, ok := c.Raw()["token_type"]; ok {
		if s, _ := tt.(string); !accessTokenType(s) {
			return fmt.Errorf("%w: token_type %.64q", jwtauth.ErrTokenType, s)
		}
	}
	if typ := c.String("typ"); strings.EqualFold(typ, "Refresh") || strings.EqualFold(typ, "Offline") {
		return fmt.Errorf("%w: typ %.64q", jwtauth.ErrTokenType, typ)
	}
	if !i.o.AllowIDTokens && c.IsIDToken() {
		return fmt.Errorf("%w: an ID token", jwtauth.ErrTokenType)
	}
	if i.azp != nil {
		party := c.AuthorizedParty()
		if _, ok := i.azp[party]; !ok {
			return fmt.Errorf("%w: %.64q", jwtauth.ErrAuthorizedParty, party)
		}
	}
	return nil
}

// accessTokenType reports whether an answer's "token_type" names an
// access token: the token types of RFC 6749 §7.1 a gateway accepts
// (Bearer, and DPoP, RFC 9449 §5, whose binding jwtauth.Require checks),
// or "access_token", the token_type_hint name some servers answer with.
func accessTokenType(t string) bool {
	return strings.EqualFold(t, "Bearer") || strings.EqualFold(t, "DPoP") || strings.EqualFold(t, "access_token")
}

// Forget removes token's cached answer, so the next request presenting it
// is introspected again.
func (i *Introspector) Forget(token string) {
	if i.cache != nil {
		i.cache.Remove(token)
	}
}

// Purge empties the answer cache.
func (i *Introspector) Purge() {
	if i.cache != nil {
		i.cache.Purge()
	}
}

// Close drops the idle connections of the Introspector's own HTTP client.
// It is idempotent; Verify keeps working after it.
func (i *Introspector) Close() error {
	if i.ownClient {
		i.client.CloseIdleConnections()
	}
	return nil
}
