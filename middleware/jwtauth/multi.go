package jwtauth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// TokenVerifier verifies a bearer token and returns its claims: a
// *Verifier, a *Multi, or a verifier of another kind of token (such as
// introspect.Introspector for opaque tokens), so that Require applies the
// same rules and forwards claims the same way whatever the token. Errors
// wrap this package's sentinel errors; ErrUnavailable is answered 503.
//
// A TokenVerifier that also has a method Mechanism() string names what
// Require records in pylon.RequestInfo.Auth; others record "jwt".
type TokenVerifier interface {
	Verify(ctx context.Context, token string) (*Claims, error)
}

// Multi chooses among several Verifiers, one per issuer, by the token's
// "iss" claim: several Keycloak realms, Azure AD tenants, or two providers
// during a migration, each with its own keys, audiences and algorithms.
// The "iss" is read before verification only to choose; the chosen
// Verifier then checks the signature and the issuer as usual, so a token
// naming an issuer it was not signed by fails.
//
// Behind Require, a Multi of several issuers records the token's issuer as
// pylon.RequestInfo.SubjectScope: a "sub" is unique only within its issuer,
// so rate limits, per-subject caches and idempotency keys count the same
// "sub" from two issuers as two clients.
//
// Multi is safe for concurrent use.
type Multi struct {
	byIss  map[string]*Verifier
	list   []*Verifier
	maxTok int
}

// NewMulti returns a Multi over vs. Each Verifier must check its issuer
// (no SkipIssuerCheck) and no two may share an issuer: both are
// configuration errors wrapping ErrConfig.
func NewMulti(vs ...*Verifier) (*Multi, error) {
	if len(vs) == 0 {
		return nil, fmt.Errorf("%w: NewMulti needs at least one Verifier", ErrConfig)
	}
	m := &Multi{byIss: make(map[string]*Verifier, len(vs)), list: vs}
	for i, v := range vs {
		if v == nil {
			return nil, fmt.Errorf("%w: NewMulti: Verifier %d is nil", ErrConfig, i)
		}
		if v.opts.SkipIssuerCheck {
			return nil, fmt.Errorf("%w: NewMulti: Verifier %d skips the issuer check", ErrConfig, i)
		}
		if _, dup := m.byIss[v.opts.Issuer]; dup {
			return nil, fmt.Errorf("%w: NewMulti: issuer %q appears twice", ErrConfig, v.opts.Issuer)
		}
		m.byIss[v.opts.Issuer] = v
		m.maxTok = max(m.maxTok, v.maxTok)
	}
	return m, nil
}

// Verify checks token with the Verifier of its issuer. A token whose "iss"
// names none of them fails with ErrIssuer.
func (m *Multi) Verify(ctx context.Context, token string) (*Claims, error) {
	if token == "" {
		return nil, ErrMissingToken
	}
	if len(token) > m.maxTok {
		return nil, ErrTokenTooLarge
	}
	// A token seen before is in the cache of the Verifier that verified
	// it: look there first, without decoding anything.
	for _, v := range m.list {
		if c, err, ok := v.cached(token, v.now(), v.keys.Load()); ok {
			return c, err
		}
	}
	iss, err := peekIssuer(token)
	if err != nil {
		return nil, err
	}
	v, ok := m.byIss[iss]
	if !ok {
		return nil, fmt.Errorf("%w: %q is not a configured issuer", ErrIssuer, truncate(iss))
	}
	return v.Verify(ctx, token)
}

// Close closes every Verifier.
func (m *Multi) Close() error {
	var errs []error
	for _, v := range m.list {
		errs = append(errs, v.Close())
	}
	return errors.Join(errs...)
}

// peekIssuer reads the unverified "iss" of a compact JWS, only to choose
// the Verifier that will check it.
func peekIssuer(token string) (string, error) {
	_, rest, ok1 := strings.Cut(token, ".")
	p64, _, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || !isB64URL(p64) {
		return "", fmt.Errorf("%w: not three base64url parts", ErrMalformed)
	}
	payload, err := base64.RawURLEncoding.Strict().DecodeString(p64)
	if err != nil {
		return "", fmt.Errorf("%w: payload encoding", ErrMalformed)
	}
	var c struct {
		Iss *string `json:"iss"`
	}
	if err := json.Unmarshal(payload, &c); err != nil {
		return "", fmt.Errorf("%w: claims", ErrMalformed)
	}
	if c.Iss == nil {
		return "", fmt.Errorf("%w: no iss", ErrIssuer)
	}
	return *c.Iss, nil
}
