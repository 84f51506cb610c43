package jwtauth

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"net/http"
	"testing"
	"time"

	"github.com/pylon-gateway/pylon/gatewaytest/jwttest"
)

// FuzzVerify feeds arbitrary tokens to a verifier: it must never panic, and
// must accept nothing but the tokens signed with its key.
func FuzzVerify(f *testing.F) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	v, err := New(context.Background(), Options{
		Keys:   []StaticKey{{ID: "k", Key: pub}},
		Issuer: "i", Audience: []string{"a"}, Algorithms: []string{"EdDSA"},
		CacheSize: -1,
	})
	if err != nil {
		f.Fatal(err)
	}
	exp := time.Now().Add(time.Hour).Unix()
	good := jwttest.Sign(map[string]any{"kid": "k"}, map[string]any{"iss": "i", "aud": "a", "exp": exp}, "EdDSA", priv)
	f.Add(good)
	f.Add(jwttest.Compact(map[string]any{"alg": "none"}, map[string]any{"iss": "i"}, nil))
	f.Add("a.b.c")
	f.Add(good + ".")
	f.Add(`{"payload":"e30","signatures":[]}`)
	f.Fuzz(func(t *testing.T, token string) {
		c, err := v.Verify(context.Background(), token)
		if err == nil && token != good {
			// Only a genuine signature over a payload can pass; re-signing
			// is impossible for the fuzzer, so any other success is a bug
			// unless the payload was signed by priv (checked by Verify).
			if c == nil || c.Issuer != "i" {
				t.Fatalf("accepted %q with claims %+v", token, c)
			}
		}
	})
}

// FuzzDPoPProof feeds arbitrary proofs and URLs to the DPoP checks: they
// must refuse, never panic, and never accept a proof not signed by the
// bound key.
func FuzzDPoPProof(f *testing.F) {
	key := jwttest.NewDPoPKey("ES256")
	f.Add(key.Proof("GET", "http://example.com/a", "tok"), "/a")
	f.Add("eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6Im5vbmUifQ.e30.", "/%zz")
	f.Add("a.b.c", "http://x/")
	d, err := NewDPoP(DPoPOptions{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, proof, target string) {
		_, _ = normHTU(target)
		r, err := http.NewRequest("GET", "http://example.com/a", nil)
		if err != nil {
			t.Skip()
		}
		r.RequestURI = target
		if d.Verify(r, proof, "tok", "not-the-thumbprint") == nil {
			t.Fatal("accepted a proof for another key")
		}
	})
}
