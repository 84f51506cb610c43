package jwttest_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jwt"
	"go.uber.org/goleak"

	"github.com/pylon-gateway/pylon/gatewaytest/jwttest"
	"github.com/pylon-gateway/pylon/middleware/jwtauth"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func fetchSet(t *testing.T, iss *jwttest.Issuer) jwk.Set {
	t.Helper()
	resp, err := iss.Client().Get(iss.JWKSURL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	set, err := jwk.Parse(body)
	if err != nil {
		t.Fatalf("JWKS %q: %v", body, err)
	}
	return set
}

func header(t *testing.T, token string) map[string]any {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(strings.Split(token, ".")[0])
	if err != nil {
		t.Fatal(err)
	}
	var h map[string]any
	if err := json.Unmarshal(b, &h); err != nil {
		t.Fatal(err)
	}
	return h
}

func TestMintVerifiesWithPublishedKeys(t *testing.T) {
	iss := jwttest.NewIssuer()
	defer iss.Close()
	set := fetchSet(t, iss)
	if set.Len() != len(jwttest.Algorithms) {
		t.Fatalf("JWKS has %d keys", set.Len())
	}
	for _, alg := range jwttest.Algorithms {
		t.Run(alg, func(t *testing.T) {
			tok := iss.MintToken(jwttest.Token{Alg: alg, Claims: map[string]any{"role": "admin", "sub": nil}})
			parsed, err := jwt.ParseString(tok, jwt.WithKeySet(set), jwt.WithIssuer(iss.URL), jwt.WithAudience(jwttest.DefaultAudience))
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if v, _ := parsed.Get("role"); v != "admin" {
				t.Errorf("role = %v", v)
			}
			if parsed.Subject() != "" {
				t.Errorf("nil did not remove sub")
			}
			if h := header(t, tok); h["kid"] != iss.KeyID(alg) || h["alg"] != alg {
				t.Errorf("header = %v", h)
			}
		})
	}
}

func TestMintToken(t *testing.T) {
	iss := jwttest.NewIssuer()
	defer iss.Close()
	fixed := time.Unix(1_700_000_000, 0)
	iss.SetNow(func() time.Time { return fixed })
	tests := []struct {
		name  string
		tok   jwttest.Token
		check func(t *testing.T, h map[string]any, c map[string]any)
	}{
		{"defaults", jwttest.Token{}, func(t *testing.T, h, c map[string]any) {
			if c["iss"] != iss.URL || c["aud"] != jwttest.DefaultAudience || c["exp"] != float64(fixed.Add(time.Hour).Unix()) || h["typ"] != "JWT" {
				t.Errorf("header %v claims %v", h, c)
			}
		}},
		{"no defaults", jwttest.Token{NoDefaults: true, Claims: map[string]any{"x": 1}}, func(t *testing.T, h, c map[string]any) {
			if len(c) != 1 {
				t.Errorf("claims %v", c)
			}
		}},
		{"no kid", jwttest.Token{KeyID: "-"}, func(t *testing.T, h, c map[string]any) {
			if _, ok := h["kid"]; ok {
				t.Errorf("header %v", h)
			}
		}},
		{"extra headers", jwttest.Token{KeyID: "../x", Header: map[string]any{"jku": "https://evil.example"}}, func(t *testing.T, h, c map[string]any) {
			if h["kid"] != "../x" || h["jku"] != "https://evil.example" {
				t.Errorf("header %v", h)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := iss.MintToken(tt.tok)
			parts := strings.Split(tok, ".")
			b, _ := base64.RawURLEncoding.DecodeString(parts[1])
			var c map[string]any
			if err := json.Unmarshal(b, &c); err != nil {
				t.Fatal(err)
			}
			tt.check(t, header(t, tok), c)
		})
	}
}

func TestRotateAndFetches(t *testing.T) {
	iss := jwttest.NewIssuer()
	defer iss.Close()
	old := iss.KeyID("RS256")
	fresh := iss.Rotate("RS256")
	set := fetchSet(t, iss)
	if _, ok := set.LookupKeyID(old); ok {
		t.Errorf("old key still published")
	}
	if _, ok := set.LookupKeyID(fresh); !ok || iss.KeyID("RS256") != fresh {
		t.Errorf("new key not published")
	}
	iss.SetJWKSHandler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	resp, err := iss.Client().Get(iss.JWKSURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || iss.Fetches() != 2 {
		t.Errorf("status %d, fetches %d", resp.StatusCode, iss.Fetches())
	}
}

// Testing a route protected by jwtauth in a few lines.
func Example() {
	idp := jwttest.NewIssuer()
	defer idp.Close()

	verifier, err := jwtauth.New(context.Background(), jwtauth.Options{
		DiscoveryURL: idp.DiscoveryURL,
		Issuer:       idp.URL,
		Audience:     []string{jwttest.DefaultAudience},
		Algorithms:   jwttest.Algorithms,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer verifier.Close()

	token := idp.MintToken(jwttest.Token{Alg: "EdDSA", Claims: map[string]any{"sub": "alice"}})
	claims, err := verifier.Verify(context.Background(), token)
	fmt.Println(claims.Subject, err, idp.Fetches())
	// Output: alice <nil> 1
}
