package jwtauth

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/gatewaytest/jwttest"
)

func TestMultiIssuer(t *testing.T) {
	a, b, stranger := newIssuer(t), newIssuer(t), newIssuer(t)
	oa := issuerOptions(a)
	oa.Audience = []string{"orders"}
	ob := issuerOptions(b)
	ob.Algorithms = []string{"ES256"}
	va, vb := newVerifier(t, oa), newVerifier(t, ob)
	m, err := NewMulti(va, vb)
	if err != nil {
		t.Fatal(err)
	}
	var subject, auth string
	url := gatewayFor(t, Require(m), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info := pylon.Info(r.Context())
		subject, auth = info.Subject, info.Auth
		w.WriteHeader(http.StatusNoContent)
	})) + "/api/x"
	tests := []struct {
		name  string
		token string
		want  int
	}{
		{"issuer a", a.Mint(map[string]any{"aud": "orders", "sub": "from-a"}), 204},
		{"issuer b", b.MintToken(jwttest.Token{Alg: "ES256", Claims: map[string]any{"sub": "from-b"}}), 204},
		{"a's audience rules apply to a", a.Mint(nil), 401},
		{"b's algorithms apply to b", b.Mint(nil), 401},
		{"unknown issuer", stranger.Mint(nil), 401},
		{"no iss", a.Mint(map[string]any{"iss": nil, "aud": "orders"}), 401},
		{"b's token claiming to be a", b.MintToken(jwttest.Token{Alg: "ES256", Claims: map[string]any{"iss": a.URL, "aud": "orders"}}), 401},
		{"stranger claiming to be b", stranger.MintToken(jwttest.Token{Alg: "ES256", KeyID: b.KeyID("ES256"), Claims: map[string]any{"iss": b.URL}}), 401},
		{"garbage", "a.b.c", 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			subject = ""
			for range 2 { // the second answer comes from the cache
				if got := get(t, url, tt.token).StatusCode; got != tt.want {
					t.Fatalf("status %d, want %d", got, tt.want)
				}
			}
			if tt.want == 204 && (subject == "" || auth != "jwt") {
				t.Errorf("subject %q auth %q", subject, auth)
			}
		})
	}
	if _, err := m.Verify(context.Background(), stranger.Mint(nil)); !errors.Is(err, ErrIssuer) {
		t.Errorf("unknown issuer = %v, want ErrIssuer", err)
	}
	if _, err := NewMulti(va, va); !errors.Is(err, ErrConfig) {
		t.Errorf("duplicate issuer = %v, want ErrConfig", err)
	}
	skip := issuerOptions(stranger)
	skip.SkipIssuerCheck = true
	if _, err := NewMulti(va, newVerifier(t, skip)); !errors.Is(err, ErrConfig) {
		t.Errorf("SkipIssuerCheck in a Multi = %v, want ErrConfig", err)
	}
}

func TestAccessTokenHygiene(t *testing.T) {
	iss := newIssuer(t)
	at := func(claims map[string]any) string {
		return iss.MintToken(jwttest.Token{Header: map[string]any{"typ": "at+jwt"}, Claims: claims})
	}
	tests := []struct {
		name  string
		mod   func(*Options)
		token string
		want  error
	}{
		{"at+jwt required and present", func(o *Options) { o.RequireType = "at+jwt" }, at(nil), nil},
		{"application/at+jwt accepted", func(o *Options) { o.RequireType = "at+jwt" },
			iss.MintToken(jwttest.Token{Header: map[string]any{"typ": "application/AT+JWT"}}), nil},
		{"at+jwt required, typ JWT", func(o *Options) { o.RequireType = "at+jwt" }, iss.Mint(nil), ErrTokenType},
		{"at+jwt required, no typ", func(o *Options) { o.RequireType = "at+jwt" },
			iss.MintToken(jwttest.Token{Header: map[string]any{"typ": ""}}), ErrTokenType},
		{"ID token (at_hash)", nil, iss.Mint(map[string]any{"at_hash": "x", "nonce": "n"}), ErrTokenType},
		{"ID token (Keycloak typ claim)", nil, iss.Mint(map[string]any{"typ": "ID"}), ErrTokenType},
		{"ID token (nonce only, code flow)", nil, iss.Mint(map[string]any{"nonce": "n-0S6_WzA2Mj"}), ErrTokenType},
		{"ID token (typ header)", nil, iss.MintToken(jwttest.Token{Header: map[string]any{"typ": "id_token+jwt"}}), ErrTokenType},
		{"ID token allowed", func(o *Options) { o.AllowIDTokens = true }, iss.Mint(map[string]any{"at_hash": "x"}), nil},
		{"azp listed", func(o *Options) { o.AuthorizedParties = []string{"web", "cli"} }, iss.Mint(map[string]any{"azp": "cli"}), nil},
		{"client_id listed", func(o *Options) { o.AuthorizedParties = []string{"web"} }, at(map[string]any{"client_id": "web"}), nil},
		{"azp not listed", func(o *Options) { o.AuthorizedParties = []string{"web"} }, iss.Mint(map[string]any{"azp": "evil"}), ErrAuthorizedParty},
		{"azp wins over client_id", func(o *Options) { o.AuthorizedParties = []string{"web"} }, iss.Mint(map[string]any{"azp": "evil", "client_id": "web"}), ErrAuthorizedParty},
		{"no azp", func(o *Options) { o.AuthorizedParties = []string{"web"} }, iss.Mint(nil), ErrAuthorizedParty},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := issuerOptions(iss)
			if tt.mod != nil {
				tt.mod(&o)
			}
			v := newVerifier(t, o)
			if _, err := v.Verify(context.Background(), tt.token); !errors.Is(err, tt.want) {
				t.Fatalf("Verify = %v, want %v", err, tt.want)
			}
		})
	}
}
