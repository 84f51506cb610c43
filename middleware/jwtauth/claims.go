package jwtauth

import (
	"context"
	"encoding/json"
	"strings"
	"time"
)

// Claims are the verified claims of a token. A Claims value may be shared
// by every request that presents the same token (the verified-token cache
// hands out the same pointer): treat it, and the maps and slices it
// returns, as read-only.
type Claims struct {
	// Subject is the "sub" claim.
	Subject string
	// Issuer is the "iss" claim.
	Issuer string
	// Audience holds the "aud" claim (a string or an array of strings).
	Audience []string
	// ID is the "jti" claim.
	ID string
	// ExpiresAt is the "exp" claim.
	ExpiresAt time.Time
	// NotBefore is the "nbf" claim; zero when absent.
	NotBefore time.Time
	// IssuedAt is the "iat" claim; zero when absent.
	IssuedAt time.Time
	// Scopes holds the space-separated "scope" claim, or the "scp" claim
	// (an array of strings, or a space-separated string) when "scope" is
	// absent.
	Scopes []string

	raw map[string]any
	x5t string // cnf "x5t#S256": bound to a client certificate (RFC 8705)
	jkt string // cnf "jkt": bound to a DPoP key (RFC 9449)
}

// Binding returns the token's confirmation ("cnf") members that bind it
// to its holder: x5t, the base64url SHA-256 thumbprint of a client
// certificate (RFC 8705 §3.1), and jkt, the JWK thumbprint of a DPoP key
// (RFC 9449 §6.1). Empty strings mean an unbound bearer token.
func (c *Claims) Binding() (x5t, jkt string) { return c.x5t, c.jkt }

// Raw returns every claim of the token as decoded by encoding/json
// (numbers are float64). The map is shared: do not modify it.
func (c *Claims) Raw() map[string]any { return c.raw }

// Get returns the claim at a dot-separated path: "sub", or
// "realm_access.roles" for a member of a nested object. A claim whose name
// contains a dot is found too when it exists at the top level.
func (c *Claims) Get(path string) (any, bool) {
	if v, ok := c.raw[path]; ok {
		return v, true
	}
	var cur any = c.raw
	for part := range strings.SplitSeq(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[part]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// String returns the claim at path when it is a string, or when it is a
// number or a boolean formatted as JSON; otherwise "".
func (c *Claims) String(path string) string {
	v, ok := c.Get(path)
	if !ok {
		return ""
	}
	switch v := v.(type) {
	case string:
		return v
	case float64, bool:
		b, _ := json.Marshal(v)
		return string(b)
	}
	return ""
}

// Strings returns the claim at path as a list of strings: an array's
// string members, or a string split on spaces. Other values give nil.
func (c *Claims) Strings(path string) []string {
	v, ok := c.Get(path)
	if !ok {
		return nil
	}
	return toStrings(v)
}

// IsIDToken reports whether the claims are those of an OpenID Connect ID
// token rather than an access token: they carry "at_hash", "c_hash",
// "s_hash" or "nonce" (claims only ID tokens carry: OpenID Connect Core
// §2 and §3.3.2.11; an RFC 9068 access token has none of them), or a
// Keycloak "typ" claim of "ID". Verifier refuses such tokens unless Options.AllowIDTokens; other
// TokenVerifiers (introspect) apply the same rule through it.
func (c *Claims) IsIDToken() bool {
	if c.String("typ") == "ID" {
		return true
	}
	for _, name := range [...]string{"at_hash", "c_hash", "s_hash", "nonce"} {
		if _, ok := c.raw[name]; ok {
			return true
		}
	}
	return false
}

// AuthorizedParty returns the client the token was issued to: its "azp"
// claim, or its "client_id" claim (RFC 9068 §2.2, RFC 7662 §2.2) when it
// has no "azp"; "" when it has neither. It is what
// Options.AuthorizedParties is checked against.
func (c *Claims) AuthorizedParty() string {
	if party, _ := c.raw["azp"].(string); party != "" {
		return party
	}
	party, _ := c.raw["client_id"].(string)
	return party
}

// HasScope reports whether the token grants scope s.
func (c *Claims) HasScope(s string) bool {
	for _, have := range c.Scopes {
		if have == s {
			return true
		}
	}
	return false
}

func toStrings(v any) []string {
	switch v := v.(type) {
	case string:
		return strings.Fields(v)
	case []any:
		out := make([]string, 0, len(v))
		for _, e := range v {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// numericDate reads a NumericDate claim. ok is false when the claim is
// present but not a number.
func numericDate(raw map[string]any, name string) (t time.Time, present, ok bool) {
	v, present := raw[name]
	if !present {
		return time.Time{}, false, true
	}
	f, isNum := v.(float64)
	if !isNum || f < 0 || f > 1e12 {
		return time.Time{}, true, false
	}
	sec := int64(f)
	return time.Unix(sec, int64((f-float64(sec))*1e9)), true, true
}

// parseClaims decodes a JWT payload into Claims. It checks the types of the
// registered claims, not their values.
func parseClaims(payload []byte) (*Claims, error) {
	var raw map[string]any
	if err := json.Unmarshal(payload, &raw); err != nil || raw == nil {
		return nil, ErrMalformed
	}
	return NewClaims(raw)
}

// NewClaims returns the Claims of raw, a claim set decoded by
// encoding/json (an RFC 7662 introspection response, say). It checks the
// types of the registered claims ("sub", "iss", "jti" strings, "aud" a
// string or strings, "exp", "nbf", "iat" numbers), not their values, and
// fails with ErrMalformed. raw is kept, not copied: do not modify it
// afterwards.
func NewClaims(raw map[string]any) (*Claims, error) {
	if raw == nil {
		return nil, ErrMalformed
	}
	c := &Claims{raw: raw}
	var ok bool
	for _, f := range [...]struct {
		name string
		dst  *string
	}{{"sub", &c.Subject}, {"iss", &c.Issuer}, {"jti", &c.ID}} {
		if v, present := raw[f.name]; present {
			if *f.dst, ok = v.(string); !ok {
				return nil, ErrMalformed
			}
		}
	}
	if v, present := raw["aud"]; present {
		switch v := v.(type) {
		case string:
			c.Audience = []string{v}
		case []any:
			for _, e := range v {
				s, ok := e.(string)
				if !ok {
					return nil, ErrMalformed
				}
				c.Audience = append(c.Audience, s)
			}
		default:
			return nil, ErrMalformed
		}
	}
	for _, f := range [...]struct {
		name string
		dst  *time.Time
	}{{"exp", &c.ExpiresAt}, {"nbf", &c.NotBefore}, {"iat", &c.IssuedAt}} {
		t, _, ok := numericDate(raw, f.name)
		if !ok {
			return nil, ErrMalformed
		}
		*f.dst = t
	}
	if v, present := raw["cnf"]; present {
		cnf, ok := v.(map[string]any)
		if !ok {
			return nil, ErrMalformed
		}
		for _, f := range [...]struct {
			name string
			dst  *string
		}{{"x5t#S256", &c.x5t}, {"jkt", &c.jkt}} {
			if v, present := cnf[f.name]; present {
				if *f.dst, ok = v.(string); !ok || *f.dst == "" {
					return nil, ErrMalformed
				}
			}
		}
	}
	if v, present := raw["scope"]; present {
		c.Scopes = toStrings(v)
	} else if v, present := raw["scp"]; present {
		c.Scopes = toStrings(v)
	}
	return c, nil
}

type claimsKey struct{}

// NewContext returns a copy of ctx carrying c. Require calls it; tests of
// handlers behind Require may call it too.
func NewContext(ctx context.Context, c *Claims) context.Context {
	return context.WithValue(ctx, claimsKey{}, c)
}

// FromContext returns the verified claims stored by Require, or nil and
// false when the request was not authenticated by it.
func FromContext(ctx context.Context) (*Claims, bool) {
	c, ok := ctx.Value(claimsKey{}).(*Claims)
	return c, ok && c != nil
}
