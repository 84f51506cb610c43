package jwtauth

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"
)

// A JWS part has one base64url encoding (RFC 7515 §2: no padding, and so no
// spare bits): a token whose signature's last character differs only in
// the bits the decoding drops is another string, and is refused, so that a
// denylist or a cache keyed by the token string cannot be walked around.
func TestTokenWithMalleatedEncodingRefused(t *testing.T) {
	iss := newIssuer(t)
	v := newVerifier(t, issuerOptions(iss))
	tok := iss.Mint(nil)
	if _, err := v.Verify(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, tok[len(tok)-1])
	variant := tok[:len(tok)-1] + string(alphabet[last^1])
	if _, err := v.Verify(context.Background(), variant); err == nil {
		t.Fatal("a token with another encoding of the same signature verified")
	}
}

// A verifier without keys (its key set endpoint failing since a lazy start)
// cannot say a token is bad: 503 without a challenge, not 401 invalid_token.
func TestNoKeysIsUnavailable(t *testing.T) {
	iss := newIssuer(t)
	iss.SetJWKSHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
	}))
	o := issuerOptions(iss)
	o.LazyStart = true
	v := newVerifier(t, o)
	res := get(t, gatewayFor(t, Require(v), nil)+"/api/x", iss.Mint(nil))
	if res.StatusCode != http.StatusServiceUnavailable || res.Header.Get("WWW-Authenticate") != "" {
		t.Fatalf("no keys: %d, WWW-Authenticate %q; want 503 without a challenge", res.StatusCode, res.Header.Get("WWW-Authenticate"))
	}
}

// An "exp" past 2262 (where UnixNano overflows) still caches the token.
func TestFarFutureExpiryIsCached(t *testing.T) {
	if got := unixNanoCapped(time.Unix(9.9e11, 0)); got <= time.Now().UnixNano() {
		t.Fatalf("deadline of an exp in year 33000: %d, before now", got)
	}
	iss := newIssuer(t)
	v := newVerifier(t, issuerOptions(iss))
	tok := iss.Mint(map[string]any{"exp": 9.9e11})
	if _, err := v.Verify(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
	if _, _, hit := v.cached(tok, v.now(), v.keys.Load()); !hit {
		t.Error("a token with a far-future exp was not cached")
	}
}

// With ForwardAuthorization false, a token read from a cookie does not go
// upstream either; the other cookies do.
func TestTokenCookieNotForwarded(t *testing.T) {
	iss := newIssuer(t)
	v := newVerifier(t, issuerOptions(iss))
	var got string
	url := gatewayFor(t, RequireWithOptions(v, RequireOptions{Cookie: "at"}), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = strings.Join(r.Header["Cookie"], "|")
	})) + "/api/x"
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Cookie", "theme=dark; at="+iss.Mint(nil)+"; lang=en")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK || got != "theme=dark; lang=en" {
		t.Fatalf("%d; the upstream got Cookie %q, want the other cookies only", res.StatusCode, got)
	}
}
