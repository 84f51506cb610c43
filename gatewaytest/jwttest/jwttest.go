// Package jwttest issues JSON Web Tokens for tests: an Issuer holds RS256,
// ES256 and EdDSA keys, serves them as a JWKS (and an OpenID Connect
// discovery document) from an httptest server, mints tokens with any
// claims, rotates keys, and counts how often its key set was fetched.
//
// It is the only part of gatewaytest that imports jwx, so tests that do not
// need tokens do not compile it.
package jwttest

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
)

// Paths served by an Issuer's server.
const (
	// JWKSPath is the path of the key set.
	JWKSPath = "/jwks.json"
	// DiscoveryPath is the path of the OpenID Connect discovery document.
	DiscoveryPath = "/.well-known/openid-configuration"
)

// DefaultAudience is the "aud" minted unless the claims set another.
const DefaultAudience = "pylon-test"

// Issuer is a test token issuer with its own JWKS server. Create it with
// NewIssuer and Close it when done. Its methods are safe for concurrent use.
type Issuer struct {
	// URL is the server's base URL and the "iss" of minted tokens.
	URL string
	// JWKSURL is the URL of the key set.
	JWKSURL string
	// DiscoveryURL is the URL of the discovery document.
	DiscoveryURL string

	srv     *httptest.Server
	fetches atomic.Int64

	mu           sync.Mutex
	seq          int
	current      map[string]*signingKey // by algorithm family: "RS256", "ES256", "EdDSA"
	published    []*signingKey
	handler      http.Handler
	cacheControl string
	jwksURI      string // jwks_uri of the discovery document; empty means JWKSURL
	now          func() time.Time
}

type signingKey struct {
	kid  string
	alg  string
	priv any
	pub  any
}

// Algorithms are the algorithms an Issuer has a key for.
var Algorithms = []string{"RS256", "ES256", "EdDSA"}

// NewIssuer starts an Issuer with one key per algorithm in Algorithms, all
// published in its JWKS. It panics if a key cannot be generated, as
// httptest.NewServer panics when it cannot listen.
func NewIssuer() *Issuer {
	i := &Issuer{current: map[string]*signingKey{}, now: time.Now}
	for _, alg := range Algorithms {
		k := i.newKey(alg)
		i.current[alg] = k
		i.published = append(i.published, k)
	}
	i.srv = httptest.NewServer(http.HandlerFunc(i.serve))
	i.URL = i.srv.URL
	i.JWKSURL = i.srv.URL + JWKSPath
	i.DiscoveryURL = i.srv.URL + DiscoveryPath
	return i
}

// Close shuts the server down.
func (i *Issuer) Close() { i.srv.Close() }

// Client returns an HTTP client for the Issuer's server.
func (i *Issuer) Client() *http.Client { return i.srv.Client() }

// SetNow sets the clock used for the default "iat" and "exp" claims.
// Nil means time.Now.
func (i *Issuer) SetNow(now func() time.Time) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if now == nil {
		now = time.Now
	}
	i.now = now
}

func (i *Issuer) newKey(alg string) *signingKey {
	i.seq++
	k := &signingKey{alg: alg, kid: alg + "-" + strconv.Itoa(i.seq)}
	var err error
	switch alg {
	case "RS256":
		var p *rsa.PrivateKey
		p, err = rsa.GenerateKey(rand.Reader, 2048)
		if err == nil {
			k.priv, k.pub = p, &p.PublicKey
		}
	case "ES256":
		var p *ecdsa.PrivateKey
		p, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err == nil {
			k.priv, k.pub = p, &p.PublicKey
		}
	case "EdDSA":
		var pub ed25519.PublicKey
		var p ed25519.PrivateKey
		pub, p, err = ed25519.GenerateKey(rand.Reader)
		k.priv, k.pub = p, pub
	default:
		panic("jwttest: no key for algorithm " + alg)
	}
	if err != nil {
		panic("jwttest: generating key: " + err.Error())
	}
	return k
}

// family maps a signature algorithm to the Issuer key that signs it.
func family(alg string) string {
	switch alg {
	case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
		return "RS256"
	case "ES256":
		return "ES256"
	case "EdDSA", "Ed25519":
		return "EdDSA"
	}
	return ""
}

// KeyID returns the kid of the current key for alg ("RS256", "ES256",
// "EdDSA" or "Ed25519").
func (i *Issuer) KeyID(alg string) string {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.current[family(alg)].kid
}

// PublicKey returns the current public key for alg: *rsa.PublicKey,
// *ecdsa.PublicKey or ed25519.PublicKey.
func (i *Issuer) PublicKey(alg string) any {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.current[family(alg)].pub
}

// Rotate replaces the key for alg with a new one: the new key is published
// and the old one removed from the JWKS. It returns the new kid.
func (i *Issuer) Rotate(alg string) string {
	i.mu.Lock()
	defer i.mu.Unlock()
	old := i.current[family(alg)]
	k := i.newKey(old.alg)
	i.current[old.alg] = k
	for j, p := range i.published {
		if p == old {
			i.published[j] = k
		}
	}
	return k.kid
}

// Fetches returns how many times the JWKS was requested.
func (i *Issuer) Fetches() int { return int(i.fetches.Load()) }

// SetJWKSHandler makes h answer JWKS requests instead of the Issuer (to
// simulate an endpoint that is down, slow or returns garbage). Requests
// are still counted. Nil restores the Issuer's own answer.
func (i *Issuer) SetJWKSHandler(h http.Handler) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.handler = h
}

// SetJWKSURI sets the jwks_uri of the discovery document, to simulate a
// provider that moves its key set. Empty means JWKSURL.
func (i *Issuer) SetJWKSURI(u string) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.jwksURI = u
}

// SetCacheControl sets the Cache-Control header of JWKS responses.
// Empty means none.
func (i *Issuer) SetCacheControl(v string) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.cacheControl = v
}

// JWKS returns the published key set document.
func (i *Issuer) JWKS() []byte {
	i.mu.Lock()
	defer i.mu.Unlock()
	set := jwk.NewSet()
	for _, k := range i.published {
		jk, err := jwk.FromRaw(k.pub)
		if err != nil {
			panic("jwttest: " + err.Error())
		}
		_ = jk.Set(jwk.KeyIDKey, k.kid)
		_ = jk.Set(jwk.AlgorithmKey, jwa.SignatureAlgorithm(k.alg))
		_ = jk.Set(jwk.KeyUsageKey, "sig")
		_ = set.AddKey(jk)
	}
	b, err := json.Marshal(set)
	if err != nil {
		panic("jwttest: " + err.Error())
	}
	return b
}

func (i *Issuer) serve(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case JWKSPath:
		i.fetches.Add(1)
		i.mu.Lock()
		h, cc := i.handler, i.cacheControl
		i.mu.Unlock()
		if h != nil {
			h.ServeHTTP(w, r)
			return
		}
		body := i.JWKS()
		w.Header().Set("Content-Type", "application/jwk-set+json")
		if cc != "" {
			w.Header().Set("Cache-Control", cc)
		}
		_, _ = w.Write(body)
	case DiscoveryPath:
		i.mu.Lock()
		uri := i.jwksURI
		i.mu.Unlock()
		if uri == "" {
			uri = i.JWKSURL
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"issuer": i.URL, "jwks_uri": uri})
	default:
		http.NotFound(w, r)
	}
}

// Token describes a token for MintToken.
type Token struct {
	// Alg is the signature algorithm. Empty means "RS256". RS384, RS512
	// and PS* are signed with the RSA key; "Ed25519" (RFC 9864's
	// fully-specified name) with the EdDSA key.
	Alg string
	// KeyID is the "kid" header. Empty means the kid of the signing key;
	// "-" means no "kid" header.
	KeyID string
	// Header holds extra protected header parameters ("jku", "x5u",
	// "typ", ...). A jwk.Key value for "jwk" embeds a key.
	Header map[string]any
	// Claims are the token's claims. Unless NoDefaults, "iss" (the Issuer's
	// URL), "aud" (DefaultAudience), "sub" ("user-1"), "iat" (now) and
	// "exp" (now + 1h) are added when absent; a nil value removes a claim.
	Claims map[string]any
	// NoDefaults mints exactly Claims.
	NoDefaults bool
}

// Mint returns an RS256 token with the default claims overlaid by claims.
// It panics if the claims cannot be encoded as JSON.
func (i *Issuer) Mint(claims map[string]any) string {
	return i.MintToken(Token{Claims: claims})
}

// MintToken returns a token as t describes. It panics if t cannot be
// signed (an algorithm the Issuer has no key for, claims that are not
// JSON).
func (i *Issuer) MintToken(t Token) string {
	if t.Alg == "" {
		t.Alg = "RS256"
	}
	i.mu.Lock()
	k := i.current[family(t.Alg)]
	now := i.now()
	i.mu.Unlock()
	if k == nil {
		panic("jwttest: no key for algorithm " + t.Alg)
	}
	claims := map[string]any{}
	if !t.NoDefaults {
		claims["iss"] = i.URL
		claims["aud"] = DefaultAudience
		claims["sub"] = "user-1"
		claims["iat"] = now.Unix()
		claims["exp"] = now.Add(time.Hour).Unix()
	}
	for name, v := range t.Claims {
		if v == nil {
			delete(claims, name)
		} else {
			claims[name] = v
		}
	}
	hdr := maps.Clone(t.Header)
	if hdr == nil {
		hdr = map[string]any{}
	}
	switch t.KeyID {
	case "":
		hdr["kid"] = k.kid
	case "-":
	default:
		hdr["kid"] = t.KeyID
	}
	if _, ok := hdr["typ"]; !ok {
		hdr["typ"] = "JWT"
	}
	return Sign(hdr, claims, t.Alg, k.priv)
}

// Sign returns a compact JWS of claims with the protected header hdr,
// signed with alg and key (a private key, or a []byte secret for HS*). It
// panics when signing fails.
func Sign(hdr, claims map[string]any, alg string, key any) string {
	payload, err := json.Marshal(claims)
	if err != nil {
		panic("jwttest: claims: " + err.Error())
	}
	if alg == "Ed25519" {
		// jwx v2 does not know RFC 9864's name: sign by hand.
		priv, ok := key.(ed25519.PrivateKey)
		if !ok {
			panic("jwttest: Ed25519 needs an ed25519.PrivateKey")
		}
		h := maps.Clone(hdr)
		if h == nil {
			h = map[string]any{}
		}
		h["alg"] = "Ed25519"
		hb, err := json.Marshal(h)
		if err != nil {
			panic("jwttest: header: " + err.Error())
		}
		enc := base64.RawURLEncoding
		signed := enc.EncodeToString(hb) + "." + enc.EncodeToString(payload)
		return signed + "." + enc.EncodeToString(ed25519.Sign(priv, []byte(signed)))
	}
	h := jws.NewHeaders()
	for name, v := range hdr {
		if err := h.Set(name, v); err != nil {
			panic(fmt.Sprintf("jwttest: header %q: %v", name, err))
		}
	}
	out, err := jws.Sign(payload, jws.WithKey(jwa.SignatureAlgorithm(alg), key, jws.WithProtectedHeaders(h)))
	if err != nil {
		panic("jwttest: signing: " + err.Error())
	}
	return string(out)
}

// Compact assembles a compact JWS from a header, claims and a signature
// without signing anything: for tokens no honest issuer would make
// ("alg":"none", forged signatures).
func Compact(hdr, claims map[string]any, sig []byte) string {
	h, err := json.Marshal(hdr)
	if err != nil {
		panic("jwttest: header: " + err.Error())
	}
	c, err := json.Marshal(claims)
	if err != nil {
		panic("jwttest: claims: " + err.Error())
	}
	enc := base64.RawURLEncoding
	return enc.EncodeToString(h) + "." + enc.EncodeToString(c) + "." + enc.EncodeToString(sig)
}
