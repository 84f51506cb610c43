package jwtauth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/gatewaytest/jwttest"
)

// gatewayFor serves mw in front of a 204 handler through a real Gateway
// and a loopback server, and returns the server's URL.
func gatewayFor(t testing.TB, mw pylon.Middleware, h http.Handler) string {
	t.Helper()
	if h == nil {
		h = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	}
	gw := pylon.New(pylon.Options{})
	gw.Route("GET /api/").Use(mw).Handler(h)
	if err := gw.Err(); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw)
	t.Cleanup(srv.Close)
	return srv.URL
}

func get(t testing.TB, url, token string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	return resp
}

// A request that loaded the old key set asks for a refetch just after
// another request's refetch installed the new set: it is told "cooldown",
// and must still find the new key.
func TestRotationRaceStaleKeySet(t *testing.T) {
	iss := newIssuer(t)
	clk := newClock()
	o := issuerOptions(iss)
	o.Now = clk.Now
	v := newVerifier(t, o)
	stale := v.keys.Load() // what a slow request loaded before the rotation
	iss.Rotate("RS256")
	clk.Add(time.Minute) // past any cooldown: this is not the start-up defect
	if _, err := v.Verify(context.Background(), iss.Mint(nil)); err != nil {
		t.Fatalf("first request after rotation: %v", err) // its refetch installs the new set
	}
	c, _, err := v.verify(context.Background(), iss.Mint(map[string]any{"sub": "slow"}), clk.Now(), stale)
	if err != nil || c.Subject != "slow" {
		t.Fatalf("request holding the old set = %v, %v; want the new key found", c, err)
	}
}

// The same race, as users met it: many concurrent requests through a
// Gateway while the key rotates.
func TestRotationUnderConcurrentRequests(t *testing.T) {
	iss := newIssuer(t)
	clk := newClock()
	o := issuerOptions(iss)
	o.Now, o.CacheSize = clk.Now, -1
	v := newVerifier(t, o)
	url := gatewayFor(t, Require(v), nil) + "/api/x"
	iss.Rotate("RS256")
	clk.Add(time.Minute)
	tok := iss.Mint(nil)
	var wg sync.WaitGroup
	var mu sync.Mutex
	refused := 0
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if resp := get(t, url, tok); resp.StatusCode != http.StatusNoContent {
				mu.Lock()
				refused++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if refused != 0 {
		t.Fatalf("%d of 64 valid tokens refused during rotation", refused)
	}
}

// badKeys are JWKs no verifier can use, each of a kind real providers
// publish next to good keys (RFC 7517 §5: ignore them).
var badKeys = []string{
	`{"kty":"AKP","alg":"ML-DSA-44","kid":"pq-1","pub":"AAAA"}`,
	`{"kty":"RSA","kid":"rsa-no-e","n":"AQAB"}`,
	`{"kty":"EC","kid":"ec-no-y","crv":"P-256","x":"AAAA"}`,
	`{"kty":"OKP","kid":"x448","crv":"X448","x":"AAAA"}`,
}

// withBadKeys returns iss's JWKS with badKeys added.
func withBadKeys(t testing.TB, iss *jwttest.Issuer) []byte {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(iss.JWKS(), &doc); err != nil {
		t.Fatal(err)
	}
	for _, k := range badKeys {
		doc.Keys = append([]json.RawMessage{json.RawMessage(k)}, doc.Keys...)
	}
	b, _ := json.Marshal(doc)
	return b
}

func TestUnusableKeysIgnored(t *testing.T) {
	iss := newIssuer(t)
	var logs syncBuffer
	iss.SetJWKSHandler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(withBadKeys(t, iss))
	}))
	clk := newClock()
	o := issuerOptions(iss)
	o.Now, o.Logger = clk.Now, slog.New(slog.NewTextHandler(&logs, nil))
	v := newVerifier(t, o) // New must not fail
	for _, alg := range jwttest.Algorithms {
		if _, err := v.Verify(context.Background(), iss.MintToken(jwttest.Token{Alg: alg})); err != nil {
			t.Errorf("%s token beside unusable keys: %v", alg, err)
		}
	}
	// A rotation published next to the same unusable keys is picked up at
	// refresh, and the unusable keys are not logged again.
	iss.Rotate("ES256")
	if _, err := v.remote.refresh(context.Background(), false); err != nil {
		t.Fatalf("refresh: %v", err)
	}
	if _, err := v.Verify(context.Background(), iss.MintToken(jwttest.Token{Alg: "ES256"})); err != nil {
		t.Errorf("rotated key: %v", err)
	}
	for _, kid := range []string{"pq-1", "rsa-no-e", "ec-no-y", "x448"} {
		if n := strings.Count(logs.String(), kid); n != 1 {
			t.Errorf("key %q logged %d times, want once", kid, n)
		}
	}

	// A local JWKS too.
	o2 := issuerOptions(iss)
	o2.JWKSURL, o2.JWKS = "", withBadKeys(t, iss)
	v2 := newVerifier(t, o2)
	if _, err := v2.Verify(context.Background(), iss.Mint(nil)); err != nil {
		t.Errorf("local JWKS beside unusable keys: %v", err)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestMissingTokenChallengeHasRealm(t *testing.T) {
	iss := newIssuer(t)
	v := newVerifier(t, issuerOptions(iss))
	url := gatewayFor(t, RequireWithOptions(v, RequireOptions{Logger: quiet}), nil) + "/api/x"
	resp := get(t, url, "")
	if resp.StatusCode != 401 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if got := resp.Header.Get("WWW-Authenticate"); got != `Bearer realm="api"` {
		t.Errorf("WWW-Authenticate = %q, want an auth-param (RFC 6750 §3)", got)
	}
}

func TestFullySpecifiedEd25519(t *testing.T) {
	iss := newIssuer(t)
	o := issuerOptions(iss)
	o.Algorithms = []string{"Ed25519"}
	v := newVerifier(t, o)
	url := gatewayFor(t, Require(v), nil) + "/api/x"
	if resp := get(t, url, iss.MintToken(jwttest.Token{Alg: "Ed25519"})); resp.StatusCode != 204 {
		t.Errorf("Ed25519 token: status %d", resp.StatusCode)
	}
	// Only the names listed are accepted: "EdDSA" is not "Ed25519".
	if resp := get(t, url, iss.MintToken(jwttest.Token{Alg: "EdDSA"})); resp.StatusCode != 401 {
		t.Errorf("EdDSA token with only Ed25519 allowed: status %d", resp.StatusCode)
	}
	if _, err := v.Verify(context.Background(), iss.MintToken(jwttest.Token{Alg: "EdDSA"})); !errors.Is(err, ErrAlgorithm) {
		t.Errorf("EdDSA = %v, want ErrAlgorithm", err)
	}
	// An Ed25519 name never fits an RSA key.
	tok := jwttest.Compact(map[string]any{"alg": "Ed25519", "kid": iss.KeyID("RS256")}, map[string]any{"iss": iss.URL}, make([]byte, 64))
	if _, err := v.Verify(context.Background(), tok); !errors.Is(err, ErrAlgorithm) {
		t.Errorf("Ed25519 naming an RSA key = %v, want ErrAlgorithm", err)
	}
}

// A key rotated right after start is picked up at once: the start-up
// fetch does not count against the unknown-kid cooldown.
func TestRotationJustAfterStart(t *testing.T) {
	iss := newIssuer(t)
	clk := newClock()
	o := issuerOptions(iss)
	o.Now = clk.Now
	v := newVerifier(t, o)
	iss.Rotate("RS256")
	if _, err := v.Verify(context.Background(), iss.Mint(nil)); err != nil {
		t.Fatalf("token of a key rotated just after start: %v", err)
	}
}

// The discovery document is read again, so a provider that moves its key
// set is followed without a restart.
func TestDiscoveryReread(t *testing.T) {
	iss := newIssuer(t)
	other := newIssuer(t) // serves the key set iss moves to
	clk := newClock()
	o := issuerOptions(iss)
	o.JWKSURL, o.DiscoveryURL, o.Now = "", iss.DiscoveryURL, clk.Now
	v := newVerifier(t, o)
	other.Rotate("RS256") // a kid iss never published
	iss.SetJWKSURI(other.JWKSURL)
	moved := other.Mint(map[string]any{"iss": iss.URL})
	if _, err := v.Verify(context.Background(), moved); err != nil {
		t.Fatalf("token signed by a key at the new jwks_uri: %v", err)
	}
	if other.Fetches() != 1 {
		t.Errorf("new jwks_uri fetched %d times, want 1", other.Fetches())
	}
}
