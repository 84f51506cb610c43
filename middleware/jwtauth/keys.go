package jwtauth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"fmt"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
)

// StaticKey is a verification key given in code rather than in a JWKS.
type StaticKey struct {
	// ID is the key ID matched against a token's "kid": a token with a
	// "kid" is tried only against the keys of that ID, so a key without
	// one never verifies it. A token without a "kid" is tried against
	// every key, with or without an ID (the first few that fit its
	// algorithm).
	ID string
	// Algorithm is the one algorithm this key verifies ("RS256", "ES256",
	// "EdDSA", "HS256", ...). Empty means any allowed algorithm that fits
	// the key's type.
	Algorithm string
	// Key is the public key: *rsa.PublicKey, *ecdsa.PublicKey,
	// ed25519.PublicKey, or a []byte secret for the HS algorithms.
	Key any
}

// minRSABits is the smallest RSA modulus accepted for verification.
const minRSABits = 2048

// algInfo describes what a signature algorithm needs of a key.
type algInfo struct {
	family   string // "RSA", "EC", "OKP", "oct"
	curve    elliptic.Curve
	verifier jws.Verifier
}

var knownAlgs = map[string]algInfo{}

func init() {
	add := func(family string, curve elliptic.Curve, algs ...jwa.SignatureAlgorithm) {
		for _, a := range algs {
			v, err := jws.NewVerifier(a)
			if err != nil {
				panic(err) // jwx registers all of these
			}
			knownAlgs[a.String()] = algInfo{family: family, curve: curve, verifier: v}
		}
	}
	add("RSA", nil, jwa.RS256, jwa.RS384, jwa.RS512, jwa.PS256, jwa.PS384, jwa.PS512)
	add("EC", elliptic.P256(), jwa.ES256)
	add("EC", elliptic.P384(), jwa.ES384)
	add("EC", elliptic.P521(), jwa.ES512)
	add("OKP", nil, jwa.EdDSA)
	// RFC 9864's fully-specified name for EdDSA over Ed25519, which
	// oidc-provider and jose sign with. jwx v2 knows only "EdDSA"; the
	// signature is the same. Ed448 is not supported: no Ed448 key is ever
	// accepted, so neither is its name.
	ed := knownAlgs[jwa.EdDSA.String()]
	knownAlgs["Ed25519"] = ed
	add("oct", nil, jwa.HS256, jwa.HS384, jwa.HS512)
}

// key is one usable verification key.
type key struct {
	id     string
	alg    string // the key's own "alg"; empty means any fitting algorithm
	family string
	curve  elliptic.Curve
	raw    any
}

// fits reports whether k may verify a token signed with alg.
func (k *key) fits(alg string, info algInfo) bool {
	if k.alg != "" && k.alg != alg && !(isEd25519(k.alg) && isEd25519(alg)) {
		return false
	}
	if k.family != info.family {
		return false
	}
	return info.curve == nil || k.curve == info.curve
}

// isEd25519 reports whether alg names EdDSA, which for the only OKP keys
// accepted (Ed25519) is the same algorithm as RFC 9864's "Ed25519".
func isEd25519(alg string) bool { return alg == "EdDSA" || alg == "Ed25519" }

// keySet is an immutable set of keys; a refresh replaces it whole.
type keySet struct {
	byID  map[string][]*key
	noKID []*key // every key, tried for tokens without a "kid"
}

func (s *keySet) candidates(kid string) []*key {
	if s == nil {
		return nil
	}
	if kid == "" {
		return s.noKID
	}
	return s.byID[kid]
}

func (s *keySet) len() int {
	if s == nil {
		return 0
	}
	return len(s.noKID)
}

// newKey checks a raw public key and wraps it. It returns an error for key
// types, sizes and curves it will not use.
func newKey(id, alg string, raw any) (*key, error) {
	k := &key{id: id, alg: alg}
	switch r := raw.(type) {
	case *rsa.PublicKey:
		if r.N == nil || r.N.BitLen() < minRSABits {
			return nil, fmt.Errorf("RSA key shorter than %d bits", minRSABits)
		}
		k.family, k.raw = "RSA", r
	case *rsa.PrivateKey:
		return newKey(id, alg, &r.PublicKey)
	case *ecdsa.PublicKey:
		switch r.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
		default:
			return nil, fmt.Errorf("unsupported EC curve")
		}
		k.family, k.curve, k.raw = "EC", r.Curve, r
	case *ecdsa.PrivateKey:
		return newKey(id, alg, &r.PublicKey)
	case ed25519.PublicKey:
		if len(r) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("bad Ed25519 key size")
		}
		k.family, k.raw = "OKP", r
	case ed25519.PrivateKey:
		pub, _ := r.Public().(ed25519.PublicKey)
		return newKey(id, alg, pub)
	case []byte:
		if len(r) < 32 {
			return nil, fmt.Errorf("HMAC secret shorter than 32 bytes")
		}
		k.family, k.raw = "oct", append([]byte(nil), r...)
	default:
		return nil, fmt.Errorf("unsupported key type %T", raw)
	}
	if alg != "" {
		info, ok := knownAlgs[alg]
		if !ok {
			return nil, fmt.Errorf("unsupported key algorithm %q", alg)
		}
		if !k.fits(alg, info) {
			return nil, fmt.Errorf("key algorithm %q does not fit the key type", alg)
		}
	}
	return k, nil
}

func buildSet(keys []*key) *keySet {
	s := &keySet{byID: make(map[string][]*key, len(keys)), noKID: keys}
	for _, k := range keys {
		if k.id != "" {
			s.byID[k.id] = append(s.byID[k.id], k)
		}
	}
	return s
}

// parseJWKS parses a JWKS document into a key set. Keys that cannot be
// used (unknown key types such as "AKP", RSA keys without "e", EC keys
// without "y", private-only types, encryption keys, short RSA keys,
// unknown curves) are skipped and reported in skipped, and the rest of the
// set is used (RFC 7517 §5); a document with no usable key is an error.
// The key set never fetches anything: "x5u" and "jku" members are ignored.
func parseJWKS(doc []byte, maxKeys int) (set *keySet, skipped []string, err error) {
	var parsed struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(doc, &parsed); err != nil {
		return nil, nil, fmt.Errorf("%w: not a JWK Set: %v", ErrJWKS, err)
	}
	if parsed.Keys == nil {
		return nil, nil, fmt.Errorf("%w: no \"keys\" member", ErrJWKS)
	}
	if len(parsed.Keys) > maxKeys {
		return nil, nil, fmt.Errorf("%w: %d keys, more than the limit of %d", ErrJWKS, len(parsed.Keys), maxKeys)
	}
	var keys []*key
	for i, rawKey := range parsed.Keys {
		jk, err := jwk.ParseKey(rawKey)
		if err != nil {
			skipped = append(skipped, fmt.Sprintf("key %d (kid %q): %v", i, truncate(peekKID(rawKey)), err))
			continue
		}
		if use := jk.KeyUsage(); use != "" && use != "sig" {
			skipped = append(skipped, fmt.Sprintf("kid %q: use %q", truncate(jk.KeyID()), use))
			continue
		}
		var raw any
		if err := jk.Raw(&raw); err != nil {
			skipped = append(skipped, fmt.Sprintf("kid %q: %v", truncate(jk.KeyID()), err))
			continue
		}
		alg := ""
		if a := jk.Algorithm(); a != nil {
			alg = a.String()
		}
		k, err := newKey(jk.KeyID(), alg, raw)
		if err != nil {
			skipped = append(skipped, fmt.Sprintf("kid %q: %v", truncate(jk.KeyID()), err))
			continue
		}
		if k.family == "oct" {
			// A symmetric secret published in a JWKS is a misconfiguration:
			// anyone who can read the set could mint tokens.
			skipped = append(skipped, fmt.Sprintf("kid %q: symmetric key in a JWKS", truncate(jk.KeyID())))
			continue
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, skipped, fmt.Errorf("%w: no usable key in the set", ErrJWKS)
	}
	return buildSet(keys), skipped, nil
}

// peekKID returns the "kid" of a key that jwx could not parse, for logs.
func peekKID(raw []byte) string {
	var k struct {
		Kid string `json:"kid"`
	}
	_ = json.Unmarshal(raw, &k)
	return k.Kid
}
