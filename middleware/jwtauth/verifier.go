package jwtauth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pylon-gateway/pylon/internal/authcache"
)

// Options configures a Verifier. Exactly one key source must be set:
// JWKSURL or DiscoveryURL (remote), JWKS (a local document) or Keys.
// Issuer, Audience and Algorithms are required.
type Options struct {
	// JWKSURL is the URL of a remote JWK Set.
	JWKSURL string
	// DiscoveryURL is an OpenID Connect discovery document URL
	// (".../.well-known/openid-configuration") whose "jwks_uri" gives the
	// JWK Set. Its "issuer" must equal Issuer unless SkipIssuerCheck.
	DiscoveryURL string
	// JWKS is a local JWK Set document.
	JWKS []byte
	// Keys are static verification keys.
	Keys []StaticKey

	// Issuer is the required "iss". Empty is a configuration error unless
	// SkipIssuerCheck is set.
	Issuer string
	// Audience lists the accepted "aud" values; a token must carry at least
	// one of them. Empty is a configuration error unless SkipAudienceCheck
	// is set.
	Audience []string
	// SkipIssuerCheck disables the "iss" check. Only for tokens whose key
	// set belongs to a single issuer you trust for every audience.
	SkipIssuerCheck bool
	// SkipAudienceCheck disables the "aud" check. Only when the issuer mints
	// tokens for this gateway alone.
	SkipAudienceCheck bool
	// Algorithms lists the accepted signature algorithms ("RS256", "ES256",
	// "EdDSA", "PS256", "HS256", ...). Required: empty, "none" or an unknown
	// name is a configuration error.
	Algorithms []string
	// Skew is the clock skew tolerated on "exp", "nbf" and "iat".
	// Zero means 30s; a negative value means none.
	Skew time.Duration
	// MaxTokenBytes is the longest token accepted. Zero means 8 KiB.
	MaxTokenBytes int

	// LazyStart lets New succeed when the first fetch of a remote key set
	// fails; tokens are rejected with ErrNoKeys until a fetch succeeds.
	// False means New fails when the first fetch fails.
	LazyStart bool
	// HTTPClient fetches the remote key set and discovery document.
	// Nil means a client of its own with FetchTimeout.
	HTTPClient *http.Client
	// FetchTimeout bounds one fetch. Zero means 10s.
	FetchTimeout time.Duration
	// MaxJWKSBytes bounds the size of a fetched document. Zero means 1 MiB.
	MaxJWKSBytes int64
	// MaxKeys bounds the number of keys in a set. Zero means 100.
	MaxKeys int
	// MinRefreshInterval is the shortest time between two background
	// refreshes, and the retry delay after a failed one. Zero means 1m.
	MinRefreshInterval time.Duration
	// MaxRefreshInterval is the longest time between two background
	// refreshes, used when the server sends no cache headers.
	// Zero means 1h.
	MaxRefreshInterval time.Duration
	// UnknownKeyCooldown is the least time between two fetches caused by
	// tokens with an unknown "kid". Zero means 30s.
	UnknownKeyCooldown time.Duration

	// RequireType, when set, is the required "typ" header of a token,
	// compared case-insensitively and with or without the "application/"
	// prefix: "at+jwt" requires RFC 9068 JWT access tokens (§4), which also
	// refuses ID tokens and any other JWT the issuer signs. Empty means any
	// "typ" is accepted.
	RequireType string
	// AuthorizedParties lists the clients whose tokens are accepted: a
	// token's "azp" claim, or its "client_id" claim (RFC 9068) when it has
	// no "azp", must be one of them. Empty means no check.
	AuthorizedParties []string
	// AllowIDTokens accepts OpenID Connect ID tokens as access tokens.
	// False (the default) rejects a token carrying "at_hash", "c_hash" or
	// "s_hash" (claims only ID tokens carry), a Keycloak "typ" claim of
	// "ID", or a "typ" header of "id_token+jwt": an ID token is meant for
	// the client that logged in, not for an API.
	AllowIDTokens bool

	// CacheSize bounds the verified-token cache in entries. Only tokens
	// that verified are stored, each until its "exp" plus Skew.
	// Zero means 10000; a negative value disables the cache.
	CacheSize int
	// Revoked, when set, is asked about every token after verification,
	// on cache hits too; true rejects the token with ErrRevoked. It must
	// be fast and safe for concurrent use. Nil means no revocation.
	Revoked func(*Claims) bool

	// Logger receives key set refresh failures and skipped keys.
	// Nil means slog.Default().
	Logger *slog.Logger
	// Now returns the current time. Nil means time.Now.
	Now func() time.Time
}

// Verifier verifies tokens. It is safe for concurrent use. A Verifier with
// a remote key set runs a background refresh until Close is called.
type Verifier struct {
	opts    Options
	algs    map[string]algInfo
	aud     map[string]struct{}
	azp     map[string]struct{}
	typ     string // RequireType, lower case, without "application/"
	skew    time.Duration
	maxTok  int
	now     func() time.Time
	log     *slog.Logger
	keys    atomic.Pointer[keySet]
	remote  *remote
	cache   *authcache.Cache[*Claims, *keySet]
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	closing sync.Once

	skipMu     sync.Mutex
	skipLogged map[string]struct{} // unusable keys already logged
}

// New builds a Verifier. With a remote key set it fetches the set before
// returning (unless LazyStart) and starts the background refresh, which
// ctx does not bound: call Close to stop it. ctx bounds the first fetch.
func New(ctx context.Context, o Options) (*Verifier, error) {
	v := &Verifier{opts: o, algs: map[string]algInfo{}, aud: map[string]struct{}{}}
	if err := v.configure(); err != nil {
		return nil, err
	}
	switch {
	case len(o.Keys) > 0:
		keys := make([]*key, 0, len(o.Keys))
		for i, sk := range o.Keys {
			k, err := newKey(sk.ID, sk.Algorithm, sk.Key)
			if err != nil {
				return nil, fmt.Errorf("%w: Keys[%d] (%q): %v", ErrConfig, i, sk.ID, err)
			}
			keys = append(keys, k)
		}
		v.keys.Store(buildSet(keys))
	case len(o.JWKS) > 0:
		set, skipped, err := parseJWKS(o.JWKS, v.opts.MaxKeys)
		if err != nil {
			return nil, fmt.Errorf("%w: JWKS: %w", ErrConfig, err)
		}
		v.logSkipped("local JWKS", skipped)
		v.keys.Store(set)
	default:
		bg, cancel := context.WithCancel(context.Background())
		v.cancel = cancel
		v.remote = newRemote(v, bg)
		next, err := v.remote.refresh(ctx, false)
		if err != nil && !o.LazyStart {
			cancel()
			v.remote.close() // its idle connections, with their goroutines
			return nil, err
		}
		if err != nil {
			v.log.Warn("jwtauth: first key set fetch failed, starting without keys", "err", err)
		}
		v.wg.Add(1)
		go v.remote.loop(next)
	}
	return v, nil
}

func (v *Verifier) configure() error {
	o := &v.opts
	sources := 0
	if o.JWKSURL != "" || o.DiscoveryURL != "" {
		sources++
	}
	if len(o.JWKS) > 0 {
		sources++
	}
	if len(o.Keys) > 0 {
		sources++
	}
	if sources != 1 || (o.JWKSURL != "" && o.DiscoveryURL != "") {
		return fmt.Errorf("%w: set exactly one of JWKSURL, DiscoveryURL, JWKS or Keys", ErrConfig)
	}
	for _, u := range []string{o.JWKSURL, o.DiscoveryURL} {
		if u == "" {
			continue
		}
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "https" && p.Scheme != "http") || p.Host == "" {
			return fmt.Errorf("%w: %q is not an http(s) URL", ErrConfig, u)
		}
	}
	if o.Issuer == "" && !o.SkipIssuerCheck {
		return fmt.Errorf("%w: Issuer is required (or set SkipIssuerCheck)", ErrConfig)
	}
	if len(o.Audience) == 0 && !o.SkipAudienceCheck {
		return fmt.Errorf("%w: Audience is required (or set SkipAudienceCheck)", ErrConfig)
	}
	for _, a := range o.Audience {
		v.aud[a] = struct{}{}
	}
	if len(o.AuthorizedParties) > 0 {
		v.azp = map[string]struct{}{}
		for _, a := range o.AuthorizedParties {
			v.azp[a] = struct{}{}
		}
	}
	v.typ = normType(o.RequireType)
	if len(o.Algorithms) == 0 {
		return fmt.Errorf("%w: Algorithms is required", ErrConfig)
	}
	for _, a := range o.Algorithms {
		info, ok := knownAlgs[a]
		if !ok {
			return fmt.Errorf("%w: algorithm %q is not supported", ErrConfig, a)
		}
		if info.family == "oct" && len(o.Keys) == 0 {
			return fmt.Errorf("%w: algorithm %q needs a secret in Keys; it is never taken from a JWKS", ErrConfig, a)
		}
		v.algs[a] = info
	}
	v.skew = o.Skew
	if v.skew == 0 {
		v.skew = 30 * time.Second
	} else if v.skew < 0 {
		v.skew = 0
	}
	v.maxTok = cmpOr(o.MaxTokenBytes, 8<<10)
	o.FetchTimeout = cmpOr(o.FetchTimeout, 10*time.Second)
	o.MaxJWKSBytes = cmpOr(o.MaxJWKSBytes, 1<<20)
	o.MaxKeys = cmpOr(o.MaxKeys, 100)
	o.MinRefreshInterval = cmpOr(o.MinRefreshInterval, time.Minute)
	o.MaxRefreshInterval = cmpOr(o.MaxRefreshInterval, time.Hour)
	o.MaxRefreshInterval = max(o.MaxRefreshInterval, o.MinRefreshInterval)
	o.UnknownKeyCooldown = cmpOr(o.UnknownKeyCooldown, 30*time.Second)
	v.now = o.Now
	if v.now == nil {
		v.now = time.Now
	}
	v.log = o.Logger
	if v.log == nil {
		v.log = slog.Default()
	}
	if o.CacheSize >= 0 {
		v.cache = authcache.New[*Claims, *keySet](cmpOr(o.CacheSize, 10000))
	}
	return nil
}

func cmpOr[T int | int64 | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// logSkipped logs each unusable key once, not at every refresh. The
// memory of logged keys is bounded; past the bound a key may be logged
// again.
func (v *Verifier) logSkipped(source string, skipped []string) {
	v.skipMu.Lock()
	defer v.skipMu.Unlock()
	for _, s := range skipped {
		k := source + "\x00" + s
		if _, done := v.skipLogged[k]; done {
			continue
		}
		if len(v.skipLogged) >= 256 {
			clear(v.skipLogged)
		}
		if v.skipLogged == nil {
			v.skipLogged = map[string]struct{}{}
		}
		v.skipLogged[k] = struct{}{}
		v.log.Warn("jwtauth: key skipped; the rest of the set is used", "source", source, "reason", s)
	}
}

// Close stops the background refresh of a remote key set and waits for it
// to end. Verify keeps working with the last keys. Close is idempotent.
func (v *Verifier) Close() error {
	v.closing.Do(func() {
		if v.cancel != nil {
			v.cancel()
		}
		v.wg.Wait()
		if v.remote != nil {
			v.remote.close()
		}
	})
	return nil
}

// Forget removes token from the verified-token cache, so that the next
// request presenting it is verified again (and asked about revocation).
func (v *Verifier) Forget(token string) {
	if v.cache != nil {
		v.cache.Remove(token)
	}
}

// Purge empties the verified-token cache.
func (v *Verifier) Purge() {
	if v.cache != nil {
		v.cache.Purge()
	}
}

// Verify checks token and returns its claims. Errors wrap one of the
// package's sentinel errors and are meant for logs, never for clients.
func (v *Verifier) Verify(ctx context.Context, token string) (*Claims, error) {
	if token == "" {
		return nil, ErrMissingToken
	}
	if len(token) > v.maxTok {
		return nil, ErrTokenTooLarge
	}
	now := v.now()
	keys := v.keys.Load()
	if c, err, ok := v.cached(token, now, keys); ok {
		return c, err
	}
	c, keys, err := v.verify(ctx, token, now, keys)
	if err != nil {
		return nil, err
	}
	if v.opts.Revoked != nil && v.opts.Revoked(c) {
		return nil, ErrRevoked
	}
	if v.cache != nil {
		v.cache.Put(token, c, unixNanoCapped(c.ExpiresAt.Add(v.skew)), keys, now.UnixNano())
	}
	return c, nil
}

// cached answers from the verified-token cache; ok is false on a miss.
func (v *Verifier) cached(token string, now time.Time, keys *keySet) (c *Claims, err error, ok bool) {
	if v.cache == nil {
		return nil, nil, false
	}
	if c, ok = v.cache.Get(token, now.UnixNano(), keys); !ok {
		return nil, nil, false
	}
	if v.opts.Revoked != nil && v.opts.Revoked(c) {
		return nil, ErrRevoked, true
	}
	return c, nil, true
}

type header struct {
	Alg  string          `json:"alg"`
	Typ  string          `json:"typ"`
	Kid  string          `json:"kid"`
	Crit json.RawMessage `json:"crit"`
	B64  json.RawMessage `json:"b64"`
}

// isB64URL reports whether s is non-empty unpadded base64url text. The
// decoder alone would accept embedded newlines.
func isB64URL(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func (v *Verifier) verify(ctx context.Context, token string, now time.Time, keys *keySet) (*Claims, *keySet, error) {
	h64, rest, ok1 := strings.Cut(token, ".")
	p64, s64, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || !isB64URL(h64) || !isB64URL(p64) || !isB64URL(s64) {
		return nil, nil, fmt.Errorf("%w: not three base64url parts", ErrMalformed)
	}
	hb, err := base64.RawURLEncoding.Strict().DecodeString(h64)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: header encoding", ErrMalformed)
	}
	var hdr header
	if err := json.Unmarshal(hb, &hdr); err != nil {
		return nil, nil, fmt.Errorf("%w: header JSON", ErrMalformed)
	}
	if hdr.Crit != nil || hdr.B64 != nil {
		return nil, nil, fmt.Errorf("%w: unsupported header (crit/b64)", ErrMalformed)
	}
	info, ok := v.algs[hdr.Alg]
	if !ok {
		return nil, nil, fmt.Errorf("%w: %q", ErrAlgorithm, hdr.Alg)
	}
	sig, err := base64.RawURLEncoding.Strict().DecodeString(s64)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: signature encoding", ErrMalformed)
	}
	if keys.len() == 0 {
		if v.remote == nil {
			return nil, nil, ErrNoKeys
		}
		// Lazy start: try to get keys now (bounded by the cooldown).
		v.remote.refetch(ctx)
		if keys = v.keys.Load(); keys.len() == 0 {
			return nil, nil, ErrNoKeys
		}
	}
	cands := keys.candidates(hdr.Kid)
	if len(cands) == 0 && hdr.Kid != "" && v.remote != nil {
		// Whatever the refetch answers (done, failed, or in cooldown
		// because another request's refetch just ran), look again at the
		// current set: it may have been replaced since this request
		// loaded it.
		v.remote.refetch(ctx)
		keys = v.keys.Load()
		cands = keys.candidates(hdr.Kid)
	}
	if len(cands) == 0 {
		return nil, nil, fmt.Errorf("%w: kid %q", ErrUnknownKey, truncate(hdr.Kid))
	}
	signed := []byte(token[:len(h64)+1+len(p64)])
	verified, fitted, tries := false, false, 0
	for _, k := range cands {
		if !k.fits(hdr.Alg, info) {
			continue
		}
		fitted = true
		// A token without "kid" is tried against a few fitting keys only,
		// so that one request cannot cost a signature check per key.
		if tries++; tries > maxTries {
			break
		}
		if info.verifier.Verify(signed, sig, k.raw) == nil {
			verified = true
			break
		}
	}
	if !fitted {
		return nil, nil, fmt.Errorf("%w: %q does not fit key %q", ErrAlgorithm, hdr.Alg, truncate(hdr.Kid))
	}
	if !verified {
		return nil, nil, ErrSignature
	}
	payload, err := base64.RawURLEncoding.Strict().DecodeString(p64)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: payload encoding", ErrMalformed)
	}
	c, err := parseClaims(payload)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: claims", ErrMalformed)
	}
	if err := v.validate(c, now); err != nil {
		return nil, nil, err
	}
	if err := v.checkKind(c, hdr.Typ); err != nil {
		return nil, nil, err
	}
	return c, keys, nil
}

func (v *Verifier) validate(c *Claims, now time.Time) error {
	if c.ExpiresAt.IsZero() {
		return fmt.Errorf("%w: no exp", ErrExpired)
	}
	if !now.Before(c.ExpiresAt.Add(v.skew)) {
		return ErrExpired
	}
	if !c.NotBefore.IsZero() && now.Add(v.skew).Before(c.NotBefore) {
		return fmt.Errorf("%w: nbf", ErrNotYetValid)
	}
	if !c.IssuedAt.IsZero() && now.Add(v.skew).Before(c.IssuedAt) {
		return fmt.Errorf("%w: iat", ErrNotYetValid)
	}
	if !v.opts.SkipIssuerCheck && c.Issuer != v.opts.Issuer {
		return fmt.Errorf("%w: %q", ErrIssuer, truncate(c.Issuer))
	}
	if !v.opts.SkipAudienceCheck && !slices.ContainsFunc(c.Audience, func(a string) bool {
		_, ok := v.aud[a]
		return ok
	}) {
		return ErrAudience
	}
	return nil
}

// checkKind applies the access-token hygiene options: RequireType,
// AuthorizedParties and the refusal of ID tokens.
func (v *Verifier) checkKind(c *Claims, typ string) error {
	t := normType(typ)
	if v.typ != "" && t != v.typ {
		return fmt.Errorf("%w: typ %q", ErrTokenType, truncate(typ))
	}
	if !v.opts.AllowIDTokens && (t == "id_token+jwt" || c.IsIDToken()) {
		return fmt.Errorf("%w: an ID token", ErrTokenType)
	}
	if v.azp != nil {
		party := c.AuthorizedParty()
		if _, ok := v.azp[party]; !ok {
			return fmt.Errorf("%w: %q", ErrAuthorizedParty, truncate(party))
		}
	}
	return nil
}

// normType lower-cases a "typ" value and drops an "application/" prefix
// (RFC 7515 §4.1.9).
func normType(t string) string {
	t = strings.ToLower(t)
	return strings.TrimPrefix(t, "application/")
}

// maxTries bounds the keys tried for one token (several keys may share a
// kid, and a token without kid is tried against every fitting key).
const maxTries = 4

// truncate keeps attacker-chosen strings short in logs.
func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// logger is the logger the Verifier was given, which Require uses when its
// own options name none.
func (v *Verifier) logger() *slog.Logger { return v.log }

// unixNanoCapped is t.UnixNano(), or the largest int64 for a time past
// 2262, where UnixNano overflows (an "exp" claim may be far in the future).
func unixNanoCapped(t time.Time) int64 {
	if t.Unix() >= math.MaxInt64/int64(time.Second) {
		return math.MaxInt64
	}
	return t.UnixNano()
}
