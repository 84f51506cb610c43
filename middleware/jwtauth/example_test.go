package jwtauth_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/pylon-gateway/pylon/gatewaytest/jwttest"
	"github.com/pylon-gateway/pylon/middleware/jwtauth"
)

// A route protected by a token from a remote JWKS and a scope rule.
func ExampleRequire() {
	idp := jwttest.NewIssuer() // stands in for the identity provider
	defer idp.Close()

	verifier, err := jwtauth.New(context.Background(), jwtauth.Options{
		JWKSURL:    idp.JWKSURL,
		Issuer:     idp.URL,
		Audience:   []string{jwttest.DefaultAudience},
		Algorithms: []string{"RS256", "ES256"},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer verifier.Close()

	orders := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		claims, _ := jwtauth.FromContext(r.Context())
		fmt.Fprintf(w, "orders of %s", claims.Subject)
	})
	h := jwtauth.RequireWithOptions(verifier, jwtauth.RequireOptions{
		Rules:  []jwtauth.Rule{jwtauth.Scopes("orders:read")},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})(orders)

	for _, token := range []string{
		idp.Mint(map[string]any{"sub": "alice", "scope": "orders:read"}),
		idp.Mint(map[string]any{"sub": "bob", "scope": "profile"}),
		"not-a-token",
	} {
		r := httptest.NewRequest("GET", "/orders", nil)
		r.Header.Set("Authorization", "Bearer "+token)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		fmt.Println(w.Code, w.Header().Get("WWW-Authenticate"), strings.TrimSpace(w.Body.String()))
	}
	// Output:
	// 200  orders of alice
	// 403 Bearer realm="api", error="insufficient_scope" {"title":"Forbidden","status":403}
	// 401 Bearer realm="api", error="invalid_token" {"title":"Unauthorized","status":401}
}

// Roles from a nested claim, as Keycloak issues them.
func ExampleRoles() {
	idp := jwttest.NewIssuer()
	defer idp.Close()
	verifier, _ := jwtauth.New(context.Background(), jwtauth.Options{
		JWKS:       idp.JWKS(), // a local key set: no fetch
		Issuer:     idp.URL,
		Audience:   []string{jwttest.DefaultAudience},
		Algorithms: []string{"RS256"},
	})
	defer verifier.Close()

	admin := jwtauth.Roles("realm_access.roles", "admin")
	token := idp.Mint(map[string]any{"realm_access": map[string]any{"roles": []string{"admin"}}})
	claims, err := verifier.Verify(context.Background(), token)
	fmt.Println(err, admin(claims))
	// Output: <nil> <nil>
}

func ExampleNewDPoP() {
	iss := jwttest.NewIssuer()
	defer iss.Close()
	v, err := jwtauth.New(context.Background(), jwtauth.Options{
		JWKSURL: iss.JWKSURL, Issuer: iss.URL, Audience: []string{jwttest.DefaultAudience},
		Algorithms: []string{"RS256"}, HTTPClient: iss.Client(),
	})
	if err != nil {
		panic(err)
	}
	defer v.Close()
	dpop, err := jwtauth.NewDPoP(jwtauth.DPoPOptions{})
	if err != nil {
		panic(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	h := jwtauth.RequireWithOptions(v, jwtauth.RequireOptions{DPoP: dpop, Logger: quiet})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}))

	key := jwttest.NewDPoPKey("ES256") // the client's key
	token := iss.Mint(map[string]any{"cnf": key.Confirmation()})
	for _, proof := range []string{key.Proof("GET", "http://example.com/orders", token), ""} {
		r := httptest.NewRequest("GET", "http://example.com/orders", nil)
		r.Header.Set("Authorization", "DPoP "+token)
		if proof != "" {
			r.Header.Set("DPoP", proof)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		fmt.Println(strings.TrimSpace(fmt.Sprint(w.Code, " ", w.Header().Get("WWW-Authenticate"))))
	}
	// Output:
	// 204
	// 401 DPoP realm="api", error="invalid_token", algs="ES256 ES384 PS256 RS256 EdDSA"
}
