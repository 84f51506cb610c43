package jwtauth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"go.uber.org/goleak"

	"github.com/pylon-gateway/pylon/gatewaytest/jwttest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now()} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func issuerOptions(iss *jwttest.Issuer) Options {
	return Options{
		JWKSURL:    iss.JWKSURL,
		Issuer:     iss.URL,
		Audience:   []string{jwttest.DefaultAudience},
		Algorithms: []string{"RS256", "ES256", "EdDSA"},
		HTTPClient: iss.Client(),
		Logger:     quiet,
	}
}

func newIssuer(t testing.TB) *jwttest.Issuer {
	iss := jwttest.NewIssuer()
	t.Cleanup(iss.Close)
	return iss
}

func newVerifier(t testing.TB, o Options) *Verifier {
	t.Helper()
	v, err := New(context.Background(), o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = v.Close() })
	return v
}

func TestVerifyAlgorithms(t *testing.T) {
	iss := newIssuer(t)
	v := newVerifier(t, issuerOptions(iss))
	for _, alg := range jwttest.Algorithms {
		t.Run(alg, func(t *testing.T) {
			tok := iss.MintToken(jwttest.Token{Alg: alg, Claims: map[string]any{"sub": "alice", "scope": "read write"}})
			c, err := v.Verify(context.Background(), tok)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if c.Subject != "alice" || c.Issuer != iss.URL || !c.HasScope("write") || c.ExpiresAt.IsZero() {
				t.Errorf("claims = %+v", c)
			}
		})
	}
}

func TestNewConfigErrors(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	good := func() Options {
		return Options{
			Keys:       []StaticKey{{ID: "k", Key: &rsaKey.PublicKey}},
			Issuer:     "https://issuer.example",
			Audience:   []string{"api"},
			Algorithms: []string{"RS256"},
		}
	}
	tests := []struct {
		name string
		mod  func(*Options)
		ok   bool
	}{
		{"valid", func(*Options) {}, true},
		{"no issuer", func(o *Options) { o.Issuer = "" }, false},
		{"no issuer, explicitly skipped", func(o *Options) { o.Issuer, o.SkipIssuerCheck = "", true }, true},
		{"no audience", func(o *Options) { o.Audience = nil }, false},
		{"no audience, explicitly skipped", func(o *Options) { o.Audience, o.SkipAudienceCheck = nil, true }, true},
		{"no algorithms", func(o *Options) { o.Algorithms = nil }, false},
		{"alg none", func(o *Options) { o.Algorithms = []string{"none"} }, false},
		{"unknown alg", func(o *Options) { o.Algorithms = []string{"RS1"} }, false},
		{"no key source", func(o *Options) { o.Keys = nil }, false},
		{"two key sources", func(o *Options) { o.JWKS = []byte(`{"keys":[]}`) }, false},
		{"HS256 with a JWKS", func(o *Options) { o.Keys, o.JWKS, o.Algorithms = nil, []byte(`{"keys":[]}`), []string{"HS256"} }, false},
		{"bad URL", func(o *Options) { o.Keys, o.JWKSURL = nil, "file:///etc/passwd" }, false},
		{"short RSA key", func(o *Options) {
			small, _ := rsa.GenerateKey(rand.Reader, 1024)
			o.Keys = []StaticKey{{ID: "k", Key: &small.PublicKey}}
		}, false},
		{"key alg does not fit key", func(o *Options) { o.Keys[0].Algorithm = "ES256" }, false},
		{"short HMAC secret", func(o *Options) {
			o.Keys, o.Algorithms = []StaticKey{{ID: "h", Key: []byte("short")}}, []string{"HS256"}
		}, false},
		{"local JWKS without usable key", func(o *Options) { o.Keys, o.JWKS = nil, []byte(`{"keys":[]}`) }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := good()
			tt.mod(&o)
			v, err := New(context.Background(), o)
			if tt.ok {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				_ = v.Close()
				return
			}
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("New error = %v, want ErrConfig", err)
			}
			if !strings.HasPrefix(err.Error(), "jwtauth: ") {
				t.Errorf("error %q does not start with the package name", err)
			}
		})
	}
}

func TestNewFailsWhenFirstFetchFails(t *testing.T) {
	iss := newIssuer(t)
	iss.SetJWKSHandler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	if _, err := New(context.Background(), issuerOptions(iss)); !errors.Is(err, ErrJWKS) {
		t.Fatalf("New error = %v, want ErrJWKS", err)
	}

	// LazyStart: New succeeds, tokens fail until the endpoint recovers.
	clk := newClock()
	o := issuerOptions(iss)
	o.LazyStart, o.Now = true, clk.Now
	v := newVerifier(t, o)
	tok := iss.Mint(nil)
	if _, err := v.Verify(context.Background(), tok); !errors.Is(err, ErrNoKeys) {
		t.Fatalf("Verify before keys = %v, want ErrNoKeys", err)
	}
	iss.SetJWKSHandler(nil)
	clk.Add(time.Minute) // past the cooldown
	if _, err := v.Verify(context.Background(), tok); err != nil {
		t.Fatalf("Verify after recovery: %v", err)
	}
}

func TestBadTokens(t *testing.T) {
	iss := newIssuer(t)
	attacker := newIssuer(t) // a second issuer whose keys are not trusted
	var jkuHits atomic.Int64
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		jkuHits.Add(1)
		_, _ = w.Write(attacker.JWKS())
	}))
	t.Cleanup(evil.Close)

	o := issuerOptions(iss)
	o.Algorithms = append(o.Algorithms, "RS384")
	o.CacheSize = -1
	v := newVerifier(t, o)
	now := time.Now()
	rsaKID := iss.KeyID("RS256")
	claims := func(extra map[string]any) map[string]any {
		c := map[string]any{"iss": iss.URL, "aud": jwttest.DefaultAudience, "sub": "u", "exp": now.Add(time.Hour).Unix()}
		for k, val := range extra {
			if val == nil {
				delete(c, k)
			} else {
				c[k] = val
			}
		}
		return c
	}
	pubDER, _ := x509.MarshalPKIXPublicKey(iss.PublicKey("RS256"))
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	attackerJWK, _ := jwk.FromRaw(attacker.PublicKey("RS256"))
	good := iss.Mint(nil)
	parts := strings.Split(good, ".")
	jsonJWS, err := jws.Sign([]byte(`{"sub":"u"}`), jws.WithJSON(), jws.WithKey(jwa.HS256, make([]byte, 32)))
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name  string
		token string
		want  error
	}{
		{"alg none", jwttest.Compact(map[string]any{"alg": "none", "kid": rsaKID}, claims(nil), nil), ErrMalformed},
		{"alg none with signature", jwttest.Compact(map[string]any{"alg": "none", "kid": rsaKID}, claims(nil), []byte("x")), ErrAlgorithm},
		{"HS256 signed with the RSA public key (PEM)", jwttest.Sign(map[string]any{"kid": rsaKID}, claims(nil), "HS256", pubPEM), ErrAlgorithm},
		{"HS256 signed with the RSA public key (DER)", jwttest.Sign(map[string]any{"kid": rsaKID}, claims(nil), "HS256", pubDER), ErrAlgorithm},
		{"kid path traversal", iss.MintToken(jwttest.Token{KeyID: "../../../etc/passwd"}), ErrUnknownKey},
		{"kid SQL", iss.MintToken(jwttest.Token{KeyID: "x' OR '1'='1"}), ErrUnknownKey},
		{"kid URL", iss.MintToken(jwttest.Token{KeyID: evil.URL + "/key"}), ErrUnknownKey},
		{"jku to attacker's keys", attacker.MintToken(jwttest.Token{KeyID: "attacker-key", Header: map[string]any{"jku": evil.URL}, Claims: claims(nil)}), ErrUnknownKey},
		{"jku with trusted kid", attacker.MintToken(jwttest.Token{KeyID: rsaKID, Header: map[string]any{"jku": evil.URL}, Claims: claims(nil)}), ErrSignature},
		{"x5u", attacker.MintToken(jwttest.Token{KeyID: rsaKID, Header: map[string]any{"x5u": evil.URL}, Claims: claims(nil)}), ErrSignature},
		{"embedded jwk without kid", attacker.MintToken(jwttest.Token{KeyID: "-", Header: map[string]any{"jwk": attackerJWK}, Claims: claims(nil)}), ErrSignature},
		{"embedded jwk with trusted kid", attacker.MintToken(jwttest.Token{KeyID: rsaKID, Header: map[string]any{"jwk": attackerJWK}, Claims: claims(nil)}), ErrSignature},
		{"expired", iss.MintToken(jwttest.Token{Claims: claims(map[string]any{"exp": now.Add(-time.Minute).Unix()})}), ErrExpired},
		{"no exp", iss.MintToken(jwttest.Token{Claims: claims(map[string]any{"exp": nil}), NoDefaults: true}), ErrExpired},
		{"exp not a number", iss.MintToken(jwttest.Token{Claims: claims(map[string]any{"exp": "tomorrow"})}), ErrMalformed},
		{"nbf in the future", iss.MintToken(jwttest.Token{Claims: claims(map[string]any{"nbf": now.Add(time.Minute).Unix()})}), ErrNotYetValid},
		{"iat in the future beyond skew", iss.MintToken(jwttest.Token{Claims: claims(map[string]any{"iat": now.Add(time.Minute).Unix()})}), ErrNotYetValid},
		{"wrong iss", iss.MintToken(jwttest.Token{Claims: claims(map[string]any{"iss": "https://evil.example"})}), ErrIssuer},
		{"no iss", iss.MintToken(jwttest.Token{Claims: claims(map[string]any{"iss": nil}), NoDefaults: true}), ErrIssuer},
		{"wrong aud", iss.MintToken(jwttest.Token{Claims: claims(map[string]any{"aud": []string{"other", "another"}})}), ErrAudience},
		{"aud of wrong type", iss.MintToken(jwttest.Token{Claims: claims(map[string]any{"aud": 7})}), ErrMalformed},
		{"64 KiB token", iss.Mint(map[string]any{"pad": strings.Repeat("a", 64<<10)}), ErrTokenTooLarge},
		{"two parts", parts[0] + "." + parts[1], ErrMalformed},
		{"four parts", good + ".x", ErrMalformed},
		{"empty signature", parts[0] + "." + parts[1] + ".", ErrMalformed},
		{"empty payload", parts[0] + ".." + parts[2], ErrMalformed},
		{"padding", parts[0] + "=." + parts[1] + "." + parts[2], ErrMalformed},
		{"newline in part", parts[0] + "\n." + parts[1] + "." + parts[2], ErrMalformed},
		{"not base64", "!!!." + parts[1] + "." + parts[2], ErrMalformed},
		{"header not JSON", "bm90IGpzb24." + parts[1] + "." + parts[2], ErrMalformed},
		{"JSON-serialized JWS", string(jsonJWS), ErrMalformed},
		{"crit header", iss.MintToken(jwttest.Token{Header: map[string]any{"crit": []string{"exp"}, "exp": 1}}), ErrMalformed},
		{"tampered payload", parts[0] + "." + strings.TrimRight(parts[1], "=") + "A." + parts[2], ErrSignature},
		{"key alg differs from header alg", iss.MintToken(jwttest.Token{Alg: "RS384"}), ErrAlgorithm},
		{"alg not allowed", iss.MintToken(jwttest.Token{Alg: "PS256"}), ErrAlgorithm},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := v.Verify(context.Background(), tt.token)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Verify = %v, %v; want %v", c, err, tt.want)
			}
			if c != nil {
				t.Errorf("claims returned with an error")
			}
		})
	}
	if n := jkuHits.Load(); n != 0 {
		t.Errorf("jku/x5u URL was fetched %d times", n)
	}
	// The three unknown kids above caused at most one refetch (cooldown).
	if n := iss.Fetches(); n > 2 {
		t.Errorf("JWKS fetched %d times, want at most 2 (start + one refetch)", n)
	}
	if _, err := v.Verify(context.Background(), good); err != nil {
		t.Errorf("good token: %v", err)
	}
}

func TestSkewTolerance(t *testing.T) {
	iss := newIssuer(t)
	v := newVerifier(t, issuerOptions(iss))
	now := time.Now()
	tests := []struct {
		name   string
		claims map[string]any
		ok     bool
	}{
		{"expired within skew", map[string]any{"exp": now.Add(-10 * time.Second).Unix()}, true},
		{"expired beyond skew", map[string]any{"exp": now.Add(-40 * time.Second).Unix()}, false},
		{"nbf within skew", map[string]any{"nbf": now.Add(10 * time.Second).Unix()}, true},
		{"iat within skew", map[string]any{"iat": now.Add(10 * time.Second).Unix()}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := v.Verify(context.Background(), iss.Mint(tt.claims))
			if (err == nil) != tt.ok {
				t.Fatalf("Verify error = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestStaticKeysHMACConfusion(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	secret := []byte("0123456789abcdef0123456789abcdef")
	v := newVerifier(t, Options{
		Keys: []StaticKey{
			{ID: "rsa", Key: &rsaKey.PublicKey},
			{ID: "hmac", Algorithm: "HS256", Key: secret},
		},
		Issuer: "i", Audience: []string{"a"}, Algorithms: []string{"RS256", "HS256"},
	})
	claims := map[string]any{"iss": "i", "aud": "a", "exp": time.Now().Add(time.Hour).Unix()}
	der := x509.MarshalPKCS1PublicKey(&rsaKey.PublicKey)
	tests := []struct {
		name  string
		token string
		want  error
	}{
		{"HS256 with the hmac key", jwttest.Sign(map[string]any{"kid": "hmac"}, claims, "HS256", secret), nil},
		{"RS256 with the rsa key", jwttest.Sign(map[string]any{"kid": "rsa"}, claims, "RS256", rsaKey), nil},
		{"HS256 naming the rsa key, signed with its public key", jwttest.Sign(map[string]any{"kid": "rsa"}, claims, "HS256", der), ErrAlgorithm},
		{"RS256 naming the hmac key", jwttest.Sign(map[string]any{"kid": "hmac"}, claims, "RS256", rsaKey), ErrAlgorithm},
		{"no kid, HS256 with the public key", jwttest.Sign(map[string]any{}, claims, "HS256", der), ErrSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := v.Verify(context.Background(), tt.token); !errors.Is(err, tt.want) {
				t.Fatalf("Verify error = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestLocalJWKS(t *testing.T) {
	iss := newIssuer(t)
	o := issuerOptions(iss)
	o.JWKSURL, o.JWKS = "", iss.JWKS()
	v := newVerifier(t, o)
	for _, alg := range jwttest.Algorithms {
		if _, err := v.Verify(context.Background(), iss.MintToken(jwttest.Token{Alg: alg})); err != nil {
			t.Errorf("%s: %v", alg, err)
		}
	}
	if n := iss.Fetches(); n != 0 {
		t.Errorf("local JWKS caused %d fetches", n)
	}
}

func TestDiscovery(t *testing.T) {
	iss := newIssuer(t)
	o := issuerOptions(iss)
	o.JWKSURL, o.DiscoveryURL = "", iss.DiscoveryURL
	v := newVerifier(t, o)
	if _, err := v.Verify(context.Background(), iss.Mint(nil)); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	o.Issuer = "https://someone-else.example"
	if _, err := New(context.Background(), o); !errors.Is(err, ErrJWKS) {
		t.Fatalf("New with a mismatched discovery issuer = %v, want ErrJWKS", err)
	}
}

func TestUnknownKidFlood(t *testing.T) {
	iss := newIssuer(t)
	clk := newClock()
	o := issuerOptions(iss)
	o.Now = clk.Now
	v := newVerifier(t, o)
	before := iss.Fetches()
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok := iss.MintToken(jwttest.Token{KeyID: fmt.Sprintf("random-%d", i)})
			if _, err := v.Verify(context.Background(), tok); !errors.Is(err, ErrUnknownKey) {
				t.Errorf("Verify = %v, want ErrUnknownKey", err)
			}
		}()
	}
	wg.Wait()
	// The start-up fetch does not count against the cooldown: one refetch.
	if got := iss.Fetches() - before; got != 1 {
		t.Fatalf("%d fetches for a flood of unknown kids after start, want 1", got)
	}
	clk.Add(31 * time.Second)
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = v.Verify(context.Background(), iss.MintToken(jwttest.Token{KeyID: fmt.Sprintf("again-%d", i)}))
		}()
	}
	wg.Wait()
	if got := iss.Fetches() - before; got != 2 {
		t.Fatalf("%d fetches for two floods of unknown kids a cooldown apart, want 2", got)
	}
}

func TestKeyRotation(t *testing.T) {
	iss := newIssuer(t)
	clk := newClock()
	o := issuerOptions(iss)
	o.Now = clk.Now
	v := newVerifier(t, o)
	old := iss.Mint(nil)
	if _, err := v.Verify(context.Background(), old); err != nil {
		t.Fatal(err)
	}
	iss.Rotate("RS256")
	clk.Add(time.Minute)
	before := iss.Fetches()
	fresh := iss.Mint(nil)
	if _, err := v.Verify(context.Background(), fresh); err != nil {
		t.Fatalf("token of the new key: %v", err)
	}
	if got := iss.Fetches() - before; got != 1 {
		t.Errorf("rotation took %d fetches, want 1", got)
	}
	// The old key is gone: its token, cached before, is verified again and fails.
	if _, err := v.Verify(context.Background(), old); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("token of the removed key = %v, want ErrUnknownKey", err)
	}
}

func TestRefreshFailuresKeepLastGoodKeys(t *testing.T) {
	release := make(chan struct{})
	tests := []struct {
		name string
		h    http.HandlerFunc
	}{
		{"down", func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "no", http.StatusBadGateway) }},
		{"slow", func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-release:
			}
		}},
		{"HTML", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			_, _ = io.WriteString(w, "<html>login</html>")
		}},
		{"garbage JSON", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"keys":[{"kty":"RSA","n":"!!"`)
		}},
		{"empty set", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"keys":[]}`)
		}},
		{"too large", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"keys":[],"pad":"`+strings.Repeat("a", 20<<10)+`"}`)
		}},
		{"only encryption keys", func(w http.ResponseWriter, _ *http.Request) {
			k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			jk, _ := jwk.FromRaw(&k.PublicKey)
			_ = jk.Set(jwk.KeyUsageKey, "enc")
			set := jwk.NewSet()
			_ = set.AddKey(jk)
			_ = json.NewEncoder(w).Encode(set)
		}},
	}
	defer close(release)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			iss := newIssuer(t)
			o := issuerOptions(iss)
			o.FetchTimeout = 200 * time.Millisecond
			o.MaxJWKSBytes = 16 << 10
			o.CacheSize = -1
			v := newVerifier(t, o)
			tok := iss.Mint(nil)
			iss.SetJWKSHandler(tt.h)
			if _, err := v.remote.refresh(context.Background(), false); !errors.Is(err, ErrJWKS) {
				t.Fatalf("refresh error = %v, want ErrJWKS", err)
			}
			if _, err := v.Verify(context.Background(), tok); err != nil {
				t.Fatalf("token of the last good keys: %v", err)
			}
		})
	}
}

func TestBackgroundRefresh(t *testing.T) {
	iss := newIssuer(t)
	iss.SetCacheControl("max-age=0")
	o := issuerOptions(iss)
	o.MinRefreshInterval = time.Millisecond
	v := newVerifier(t, o)
	deadline := time.Now().Add(10 * time.Second)
	for iss.Fetches() < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d fetches: background refresh is not running", iss.Fetches())
		}
		runtime.Gosched()
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	// Close has waited for the loop; goleak in TestMain checks it ended.
	if _, err := v.Verify(context.Background(), iss.Mint(nil)); err != nil {
		t.Errorf("Verify after Close: %v", err)
	}
}

func TestRefreshInterval(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	lo, hi := time.Minute, time.Hour
	tests := []struct {
		name string
		h    http.Header
		want time.Duration
	}{
		{"no headers", http.Header{}, hi},
		{"max-age within", http.Header{"Cache-Control": {"public, max-age=600"}}, 10 * time.Minute},
		{"max-age below min", http.Header{"Cache-Control": {"max-age=5"}}, lo},
		{"max-age above max", http.Header{"Cache-Control": {"max-age=999999999999"}}, hi},
		{"no-store", http.Header{"Cache-Control": {"no-store"}}, lo},
		{"bad max-age", http.Header{"Cache-Control": {"max-age=abc"}}, hi},
		{"Expires", http.Header{"Expires": {now.Add(20 * time.Minute).Format(http.TimeFormat)}, "Date": {now.Format(http.TimeFormat)}}, 20 * time.Minute},
		{"Expires in the past", http.Header{"Expires": {now.Add(-time.Hour).Format(http.TimeFormat)}}, lo},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := refreshInterval(tt.h, now, lo, hi); got != tt.want {
				t.Errorf("refreshInterval = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestTokenCache(t *testing.T) {
	iss := newIssuer(t)
	clk := newClock()
	iss.SetNow(clk.Now)
	revoked := map[string]bool{}
	var mu sync.Mutex
	o := issuerOptions(iss)
	o.Now = clk.Now
	o.CacheSize = 32
	o.Revoked = func(c *Claims) bool {
		mu.Lock()
		defer mu.Unlock()
		return revoked[c.ID]
	}
	v := newVerifier(t, o)
	tok := iss.Mint(map[string]any{"jti": "t1"})
	c1, err := v.Verify(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("hit returns the cached claims", func(t *testing.T) {
		c2, err := v.Verify(context.Background(), tok)
		if err != nil || c2 != c1 {
			t.Fatalf("second Verify = %p, %v; want the cached %p", c2, err, c1)
		}
	})
	t.Run("revocation applies to cached tokens", func(t *testing.T) {
		mu.Lock()
		revoked["t1"] = true
		mu.Unlock()
		defer func() { mu.Lock(); delete(revoked, "t1"); mu.Unlock() }()
		if _, err := v.Verify(context.Background(), tok); !errors.Is(err, ErrRevoked) {
			t.Fatalf("Verify = %v, want ErrRevoked", err)
		}
	})
	t.Run("expiry applies to cached tokens", func(t *testing.T) {
		clk.Add(time.Hour + 29*time.Second)
		if _, err := v.Verify(context.Background(), tok); err != nil {
			t.Fatalf("within skew: %v", err)
		}
		clk.Add(2 * time.Second)
		if _, err := v.Verify(context.Background(), tok); !errors.Is(err, ErrExpired) {
			t.Fatalf("past exp+skew = %v, want ErrExpired", err)
		}
	})
	t.Run("bounded", func(t *testing.T) {
		for i := range 500 {
			if _, err := v.Verify(context.Background(), iss.Mint(map[string]any{"jti": fmt.Sprint(i)})); err != nil {
				t.Fatal(err)
			}
		}
		if n := v.cache.Len(); n > 32 {
			t.Fatalf("cache holds %d entries, limit 32", n)
		}
	})
	t.Run("Forget and Purge", func(t *testing.T) {
		tok := iss.Mint(nil)
		c1, _ := v.Verify(context.Background(), tok)
		v.Forget(tok)
		c2, _ := v.Verify(context.Background(), tok)
		if c1 == c2 {
			t.Error("Forget kept the token")
		}
		v.Purge()
		if n := v.cache.Len(); n != 0 {
			t.Errorf("Purge left %d entries", n)
		}
	})
}

func TestClaimsAccessors(t *testing.T) {
	c, err := parseClaims([]byte(`{"sub":"u","scp":["a","b"],"realm_access":{"roles":["admin","dev"]},"a.b":"dotted","n":42,"ok":true,"exp":1e9}`))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		got  any
		want any
	}{
		{"scp array", strings.Join(c.Scopes, ","), "a,b"},
		{"nested path", strings.Join(c.Strings("realm_access.roles"), ","), "admin,dev"},
		{"dotted top-level name", c.String("a.b"), "dotted"},
		{"number", c.String("n"), "42"},
		{"bool", c.String("ok"), "true"},
		{"missing", c.String("realm_access.nope"), ""},
		{"object is not a string", c.String("realm_access"), ""},
		{"path through a non-object", c.String("sub.x"), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got %v, want %v", tt.got, tt.want)
			}
		})
	}
	c2, _ := parseClaims([]byte(`{"scope":"x y","scp":["z"]}`))
	if strings.Join(c2.Scopes, ",") != "x,y" {
		t.Errorf("scope string: %v", c2.Scopes)
	}
}
