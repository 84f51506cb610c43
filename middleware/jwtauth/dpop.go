package jwtauth

import (
	"crypto"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"

	"github.com/pylon-gateway/pylon"
)

// DPoPOptions configures NewDPoP.
type DPoPOptions struct {
	// Algorithms lists the signature algorithms accepted for proofs.
	// Only asymmetric ones may be listed. Empty means ES256, ES384,
	// PS256, RS256 and EdDSA.
	Algorithms []string
	// Window is how old a proof's "iat" may be. Zero means 60s.
	Window time.Duration
	// Skew is how far in the future a proof's "iat" may be (clock skew).
	// Zero means 5s; a negative value means none.
	Skew time.Duration
	// ReplayCacheSize bounds the proof IDs ("jti") remembered against
	// replay, each for Window plus Skew (as long as its proof could be
	// accepted). When it is full of live entries, new proofs are answered
	// 503 rather than accepted unchecked: size it for the DPoP request
	// rate times Window. Zero means 262144.
	ReplayCacheSize int
	// MaxProofBytes is the longest proof accepted. Zero means 8 KiB.
	MaxProofBytes int
	// Now returns the current time. Nil means time.Now.
	Now func() time.Time
}

// DPoP verifies DPoP proofs (RFC 9449) for tokens bound to a key
// ("cnf": {"jkt": ...}). Set it in RequireOptions.DPoP: Require then
// accepts "Authorization: DPoP <token>" with a "DPoP" proof header, checks
// the proof and that the token is bound to the proof's key, and refuses a
// DPoP-bound token presented without its proof or as a Bearer token.
//
// A DPoP is safe for concurrent use and starts no goroutine.
type DPoP struct {
	algs    map[jwa.SignatureAlgorithm]struct{}
	algList string // for the challenge's algs parameter
	window  time.Duration
	skew    time.Duration
	maxLen  int
	now     func() time.Time
	seen    replayCache
}

var defaultDPoPAlgs = []string{"ES256", "ES384", "PS256", "RS256", "EdDSA"}

// NewDPoP returns a DPoP verifier, or an error wrapping ErrConfig.
func NewDPoP(o DPoPOptions) (*DPoP, error) {
	d := &DPoP{algs: map[jwa.SignatureAlgorithm]struct{}{}, now: o.Now}
	algs := o.Algorithms
	if len(algs) == 0 {
		algs = defaultDPoPAlgs
	}
	for _, a := range algs {
		info, ok := knownAlgs[a]
		if !ok || info.family == "oct" || a == "Ed25519" {
			return nil, fmt.Errorf("%w: DPoP algorithm %q is not supported (asymmetric JWS algorithms only)", ErrConfig, a)
		}
		d.algs[jwa.SignatureAlgorithm(a)] = struct{}{}
	}
	d.algList = strings.Join(algs, " ")
	d.window = cmpOr(o.Window, 60*time.Second)
	switch {
	case o.Skew == 0:
		d.skew = 5 * time.Second
	case o.Skew > 0:
		d.skew = o.Skew
	}
	d.maxLen = cmpOr(o.MaxProofBytes, 8<<10)
	if d.now == nil {
		d.now = time.Now
	}
	d.seen = replayCache{max: cmpOr(o.ReplayCacheSize, 262144), ttl: d.window + d.skew, seen: map[string]int64{}}
	return d, nil
}

// Algorithms returns the accepted proof algorithms, space-separated, as
// the WWW-Authenticate challenge's "algs" parameter lists them.
func (d *DPoP) Algorithms() string { return d.algList }

// Verify checks proof, the value of r's "DPoP" header, for a request
// presenting accessToken bound to the key whose RFC 7638 thumbprint is
// jkt: the proof's "typ" is "dpop+jwt", its "alg" is allowed, it carries
// a public "jwk" that verifies its signature and whose thumbprint is jkt,
// its "htm" is r's method, its "htu" is the request's URL (the scheme and
// host the gateway decided for the client, from pylon.RequestInfo, and
// the path, without query or fragment, compared after RFC 3986
// normalisation as RFC 9449 §4.3 asks), its "iat" is within the window,
// its "jti" was not seen before, and its "ath" is the hash of
// accessToken. Errors wrap ErrDPoPProof, ErrDPoPBinding (another key) or
// ErrUnavailable (a full replay cache).
func (d *DPoP) Verify(r *http.Request, proof, accessToken, jkt string) error {
	if proof == "" {
		return fmt.Errorf("%w: no DPoP proof", ErrDPoPBinding)
	}
	if len(proof) > d.maxLen {
		return fmt.Errorf("%w: too large", ErrDPoPProof)
	}
	msg, err := jws.Parse([]byte(proof), jws.WithCompact())
	if err != nil || len(msg.Signatures()) != 1 {
		return fmt.Errorf("%w: not a compact JWS", ErrDPoPProof)
	}
	hdr := msg.Signatures()[0].ProtectedHeaders()
	if !strings.EqualFold(hdr.Type(), "dpop+jwt") {
		return fmt.Errorf("%w: typ is not dpop+jwt", ErrDPoPProof)
	}
	alg := hdr.Algorithm()
	if _, ok := d.algs[alg]; !ok {
		return fmt.Errorf("%w: alg %q not allowed", ErrDPoPProof, truncate(alg.String()))
	}
	key := hdr.JWK()
	if key == nil {
		return fmt.Errorf("%w: no jwk header", ErrDPoPProof)
	}
	if _, private := key.Get("d"); private || key.KeyType() == "oct" {
		return fmt.Errorf("%w: jwk is not a public key", ErrDPoPProof)
	}
	if rk, ok := key.(jwk.RSAPublicKey); ok && len(rk.N())*8 < 2048 {
		return fmt.Errorf("%w: RSA key shorter than 2048 bits", ErrDPoPProof)
	}
	if _, err := jws.Verify([]byte(proof), jws.WithKey(alg, key)); err != nil {
		return fmt.Errorf("%w: signature", ErrDPoPProof)
	}
	var c struct {
		JTI string   `json:"jti"`
		HTM string   `json:"htm"`
		HTU string   `json:"htu"`
		IAT *float64 `json:"iat"`
		ATH string   `json:"ath"`
	}
	if err := json.Unmarshal(msg.Payload(), &c); err != nil {
		return fmt.Errorf("%w: claims", ErrDPoPProof)
	}
	if c.JTI == "" || len(c.JTI) > 256 || c.IAT == nil {
		return fmt.Errorf("%w: jti or iat missing", ErrDPoPProof)
	}
	if c.HTM != r.Method {
		return fmt.Errorf("%w: htm is not the request's method", ErrDPoPProof)
	}
	want, ok1 := normHTU(requestHTU(r))
	got, ok2 := normHTU(c.HTU)
	if !ok1 || !ok2 || got != want {
		return fmt.Errorf("%w: htu is not the request's URL", ErrDPoPProof)
	}
	now := d.now()
	iat := time.Unix(0, int64(*c.IAT*1e9))
	if *c.IAT < 0 || *c.IAT > 1e12 || iat.Before(now.Add(-d.window)) || iat.After(now.Add(d.skew)) {
		return fmt.Errorf("%w: iat outside the window", ErrDPoPProof)
	}
	sum := sha256.Sum256([]byte(accessToken))
	if subtle.ConstantTimeCompare([]byte(c.ATH), []byte(base64.RawURLEncoding.EncodeToString(sum[:]))) != 1 {
		return fmt.Errorf("%w: ath is not the access token's hash", ErrDPoPProof)
	}
	tp, err := key.Thumbprint(crypto.SHA256)
	if err != nil {
		return fmt.Errorf("%w: jwk thumbprint", ErrDPoPProof)
	}
	if base64.RawURLEncoding.EncodeToString(tp) != jkt {
		return fmt.Errorf("%w: proof signed by another key", ErrDPoPBinding)
	}
	// Last, so that only proofs that are otherwise good take a place.
	switch d.seen.add(jkt+"\x00"+c.JTI, now.UnixNano()) {
	case replayed:
		return fmt.Errorf("%w: jti replayed", ErrDPoPProof)
	case full:
		return fmt.Errorf("%w: DPoP replay cache full", ErrUnavailable)
	}
	return nil
}

// requestHTU is the URL the client asked for: the scheme and host the
// gateway decided (RequestInfo), and the path as the client sent it.
func requestHTU(r *http.Request) string {
	scheme, host := "http", r.Host
	if r.TLS != nil {
		scheme = "https"
	}
	if info := pylon.Info(r.Context()); info != nil {
		if info.Scheme != "" {
			scheme = info.Scheme
		}
		if info.Host != "" {
			host = info.Host
		}
	}
	path := r.URL.EscapedPath()
	if ru := r.RequestURI; strings.HasPrefix(ru, "/") {
		// The request-target as sent, before any route stripped a prefix.
		path, _, _ = strings.Cut(ru, "?")
	} else if u, err := url.ParseRequestURI(ru); err == nil && u.IsAbs() {
		path = u.EscapedPath()
	}
	return scheme + "://" + host + path
}

// normHTU normalises an absolute http(s) URL for comparison (RFC 3986
// §6.2.2 and §6.2.3): scheme and host in lower case, the default port
// removed, percent-encodings upper-cased and unreserved characters
// decoded, an empty path as "/"; query and fragment dropped.
func normHTU(s string) (string, bool) {
	u, err := url.Parse(s)
	if err != nil || u.Opaque != "" || u.Host == "" || u.User != nil {
		return "", false
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "https" && scheme != "http" {
		return "", false
	}
	host := strings.ToLower(u.Host)
	if scheme == "https" {
		host = strings.TrimSuffix(host, ":443")
	} else {
		host = strings.TrimSuffix(host, ":80")
	}
	path, ok := normPct(u.EscapedPath())
	if !ok {
		return "", false
	}
	if path == "" {
		path = "/"
	}
	return scheme + "://" + host + path, true
}

func normPct(p string) (string, bool) {
	if !strings.Contains(p, "%") {
		return p, true
	}
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		if p[i] != '%' {
			b.WriteByte(p[i])
			continue
		}
		if i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
			return "", false
		}
		c := unhex(p[i+1])<<4 | unhex(p[i+2])
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~' {
			b.WriteByte(c)
		} else {
			b.WriteString(strings.ToUpper(p[i : i+3]))
		}
		i += 2
	}
	return b.String(), true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

type replayResult int

const (
	fresh replayResult = iota
	replayed
	full
)

// replayCache remembers proof IDs for a fixed TTL. Entries are added in
// time order with the same TTL, so they expire in insertion order: a queue
// finds the expired ones without scanning.
type replayCache struct {
	mu    sync.Mutex
	max   int
	ttl   time.Duration
	seen  map[string]int64 // key -> expiry, UnixNano
	queue []replayEntry
	head  int
}

type replayEntry struct {
	key string
	exp int64
}

func (c *replayCache) add(key string, now int64) replayResult {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.head < len(c.queue) && c.queue[c.head].exp <= now {
		e := c.queue[c.head]
		if c.seen[e.key] == e.exp {
			delete(c.seen, e.key)
		}
		c.queue[c.head] = replayEntry{}
		c.head++
	}
	if c.head > len(c.queue)/2 {
		c.queue = append(c.queue[:0], c.queue[c.head:]...)
		c.head = 0
	}
	if exp, ok := c.seen[key]; ok && exp > now {
		return replayed
	}
	if len(c.seen) >= c.max {
		return full
	}
	exp := now + int64(c.ttl)
	if n := len(c.queue); n > c.head && c.queue[n-1].exp > exp {
		exp = c.queue[n-1].exp // a clock that stepped back keeps the order
	}
	c.seen[key] = exp
	c.queue = append(c.queue, replayEntry{key, exp})
	return fresh
}

// certThumbprint is the base64url SHA-256 of the request's client
// certificate (RFC 8705 §3.1), or "" when it presented none: the one
// mtls.Identify recorded in RequestInfo.ClientCert, else the connection's.
// The TLS handshake proved the client holds the certificate's key.
func certThumbprint(r *http.Request) string {
	if info := pylon.Info(r.Context()); info != nil && info.ClientCert != nil {
		return info.ClientCert.SHA256
	}
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return ""
	}
	sum := sha256.Sum256(r.TLS.PeerCertificates[0].Raw)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}
