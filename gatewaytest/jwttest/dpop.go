package jwttest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
)

// DPoPKey is a client's DPoP key (RFC 9449): it mints proofs, and names
// itself in the "cnf" claim of the tokens bound to it.
type DPoPKey struct {
	alg  string
	priv any
	pub  jwk.Key
	jkt  string
	now  func() time.Time
}

// NewDPoPKey returns a new key for alg: "ES256" (also for empty),
// "RS256", "PS256" or "EdDSA". It panics when the key cannot be made.
func NewDPoPKey(alg string) *DPoPKey {
	if alg == "" {
		alg = "ES256"
	}
	k := &DPoPKey{alg: alg, now: time.Now}
	var err error
	switch alg {
	case "ES256":
		k.priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "RS256", "PS256":
		k.priv, err = rsa.GenerateKey(rand.Reader, 2048)
	case "EdDSA":
		_, k.priv, err = ed25519.GenerateKey(rand.Reader)
	default:
		panic("jwttest: no DPoP key for algorithm " + alg)
	}
	if err != nil {
		panic("jwttest: " + err.Error())
	}
	pub := k.priv.(crypto.Signer).Public()
	if k.pub, err = jwk.FromRaw(pub); err != nil {
		panic("jwttest: " + err.Error())
	}
	tp, err := k.pub.Thumbprint(crypto.SHA256)
	if err != nil {
		panic("jwttest: " + err.Error())
	}
	k.jkt = base64.RawURLEncoding.EncodeToString(tp)
	return k
}

// SetNow sets the clock of the default "iat". Nil means time.Now.
func (k *DPoPKey) SetNow(now func() time.Time) {
	if now == nil {
		now = time.Now
	}
	k.now = now
}

// Thumbprint returns the key's RFC 7638 SHA-256 thumbprint, base64url:
// the "jkt" of tokens bound to it.
func (k *DPoPKey) Thumbprint() string { return k.jkt }

// Confirmation returns the "cnf" claim of a token bound to the key:
// {"jkt": Thumbprint()}.
func (k *DPoPKey) Confirmation() map[string]any { return map[string]any{"jkt": k.jkt} }

// Public returns the public key as a JWK.
func (k *DPoPKey) Public() jwk.Key { return k.pub }

// Proof returns a proof for a request with method to url (the query and
// fragment are dropped, as RFC 9449 §4.2 asks) presenting accessToken,
// with a fresh "jti" and "iat" now.
func (k *DPoPKey) Proof(method, url, accessToken string) string {
	return k.ProofWith(DPoPProof{Method: method, URL: url, AccessToken: accessToken})
}

// DPoPProof describes a proof for ProofWith.
type DPoPProof struct {
	// Method is the "htm".
	Method string
	// URL is the "htu" (its query and fragment are dropped).
	URL string
	// AccessToken gives the "ath". Empty means no "ath".
	AccessToken string
	// IssuedAt is the "iat". Zero means now.
	IssuedAt time.Time
	// ID is the "jti". Empty means a random one.
	ID string
	// Header overrides protected header parameters ("typ", "alg" is not
	// one of them); a nil value removes one ("jwk").
	Header map[string]any
	// Claims overrides claims; a nil value removes one.
	Claims map[string]any
	// Alg is the signature algorithm. Empty means the key's.
	Alg string
	// Key, when set, signs the proof instead of the key's own private key
	// (a proof whose "jwk" is not its signer).
	Key any
}

// ProofWith returns a proof as p describes.
func (k *DPoPKey) ProofWith(p DPoPProof) string {
	htu := p.URL
	for i := 0; i < len(htu); i++ {
		if htu[i] == '?' || htu[i] == '#' {
			htu = htu[:i]
			break
		}
	}
	iat := p.IssuedAt
	if iat.IsZero() {
		iat = k.now()
	}
	id := p.ID
	if id == "" {
		var b [16]byte
		_, _ = rand.Read(b[:])
		id = base64.RawURLEncoding.EncodeToString(b[:])
	}
	claims := map[string]any{"htm": p.Method, "htu": htu, "iat": iat.Unix(), "jti": id}
	if p.AccessToken != "" {
		sum := sha256.Sum256([]byte(p.AccessToken))
		claims["ath"] = base64.RawURLEncoding.EncodeToString(sum[:])
	}
	for n, v := range p.Claims {
		if v == nil {
			delete(claims, n)
		} else {
			claims[n] = v
		}
	}
	hdr := map[string]any{"typ": "dpop+jwt", "jwk": k.pub}
	for n, v := range p.Header {
		if v == nil {
			delete(hdr, n)
		} else {
			hdr[n] = v
		}
	}
	alg, key := p.Alg, p.Key
	if alg == "" {
		alg = k.alg
	}
	if key == nil {
		key = k.priv
	}
	return Sign(hdr, claims, alg, key)
}

// CertConfirmation returns the "cnf" claim of a token bound to a client
// certificate (RFC 8705 §3.1): {"x5t#S256": base64url SHA-256 of its
// DER}.
func CertConfirmation(cert *x509.Certificate) map[string]any {
	sum := sha256.Sum256(cert.Raw)
	return map[string]any{"x5t#S256": base64.RawURLEncoding.EncodeToString(sum[:])}
}

// Private returns the private key (*ecdsa.PrivateKey, *rsa.PrivateKey or
// ed25519.PrivateKey).
func (k *DPoPKey) Private() any { return k.priv }
