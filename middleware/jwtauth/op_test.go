package jwtauth_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/gatewaytest/jwttest"
	"github.com/pylon-gateway/pylon/middleware/introspect"
	"github.com/pylon-gateway/pylon/middleware/jwtauth"
)

// provider is oidc-provider (npm), a certified OpenID provider, run by
// node from testdata/op on a free loopback port.
type provider struct {
	issuer string
	client *http.Client
}

// lineWriter reports the first line written to it, and keeps the rest.
type lineWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	first chan string
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	had := bytes.IndexByte(w.buf.Bytes(), '\n') >= 0
	w.buf.Write(p)
	if !had {
		if line, _, ok := bytes.Cut(w.buf.Bytes(), []byte("\n")); ok {
			w.first <- string(line)
		}
	}
	return len(p), nil
}

// startProvider starts the provider and stops it at the end of the test.
// It fails, never skips, when node or the installed package is missing:
// .ci/run installs them (npm ci in testdata/op).
func startProvider(t *testing.T, env ...string) *provider {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is needed for the OpenID provider test (.ci/run installs it): %v", err)
	}
	dir, _ := filepath.Abs(filepath.Join("testdata", "op"))
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "oidc-provider", "package.json")); err != nil {
		t.Fatalf("oidc-provider is not installed: run `npm ci` in %s (.ci/run does): %v", dir, err)
	}
	cmd := exec.Command(node, "server.js")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out := &lineWriter{first: make(chan string, 1)}
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = out, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	var line string
	select {
	case line = <-out.first:
	case err := <-exited:
		t.Fatalf("oidc-provider exited before it was ready: %v\n%s", err, stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("oidc-provider not ready after 30s\n%s", stderr.String())
	}
	issuer, ok := strings.CutPrefix(line, "ISSUER ")
	if !ok {
		t.Fatalf("unexpected first line %q", line)
	}
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &provider{issuer: issuer, client: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

// token asks for a client_credentials access token for resource,
// with a DPoP proof when key is set.
func (p *provider) token(t *testing.T, resource, scope string, key *jwttest.DPoPKey) string {
	t.Helper()
	form := url.Values{"grant_type": {"client_credentials"}, "resource": {resource}, "scope": {scope}}
	req, _ := http.NewRequest("POST", p.issuer+"/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("svc", "svc-secret")
	if key != nil {
		req.Header.Set("DPoP", key.ProofWith(jwttest.DPoPProof{Method: "POST", URL: p.issuer + "/token"}))
	}
	resp, err := p.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
	}
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &body); err != nil || resp.StatusCode != 200 || body.AccessToken == "" {
		t.Fatalf("token endpoint: %d %s", resp.StatusCode, raw)
	}
	if key != nil && body.TokenType != "DPoP" {
		t.Fatalf("token_type %q, want DPoP", body.TokenType)
	}
	return body.AccessToken
}

// gatewayWith serves mw in front of a handler recording the claims.
func gatewayWith(t *testing.T, mw pylon.Middleware) (string, func() (*jwtauth.Claims, pylon.RequestInfo)) {
	t.Helper()
	var mu sync.Mutex
	var claims *jwtauth.Claims
	var info pylon.RequestInfo
	gw := pylon.New(pylon.Options{})
	gw.Route("GET /api/").Use(mw).Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		claims, _ = jwtauth.FromContext(r.Context())
		info = *pylon.Info(r.Context())
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	if err := gw.Err(); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw)
	t.Cleanup(srv.Close)
	return srv.URL, func() (*jwtauth.Claims, pylon.RequestInfo) {
		mu.Lock()
		defer mu.Unlock()
		return claims, info
	}
}

func call(t *testing.T, target string, hdr ...string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", target, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// RFC 9068 JWT access tokens from oidc-provider's client_credentials
// grant, verified through a Gateway by a Verifier that found the keys by
// OpenID Connect discovery; opaque tokens of the same provider checked at
// its introspection endpoint; and DPoP-bound tokens it issued.
func TestOpenIDProvider(t *testing.T) {
	for _, alg := range []string{"ES256", "Ed25519", "RS256"} {
		t.Run("JWT access token "+alg, func(t *testing.T) {
			op := startProvider(t, "OP_JWT_ALG="+alg)
			v, err := jwtauth.New(context.Background(), jwtauth.Options{
				DiscoveryURL:      op.issuer + "/.well-known/openid-configuration",
				Issuer:            op.issuer,
				Audience:          []string{"https://api.example.com"},
				Algorithms:        []string{alg},
				RequireType:       "at+jwt",
				AuthorizedParties: []string{"svc"},
				HTTPClient:        op.client,
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = v.Close() })
			base, last := gatewayWith(t, jwtauth.Require(v, jwtauth.Scopes("orders:read")))
			tok := op.token(t, "https://api.example.com", "orders:read", nil)
			if got := call(t, base+"/api/orders", "Authorization", "Bearer "+tok); got != 204 {
				t.Fatalf("status %d", got)
			}
			c, info := last()
			if c.Subject != "svc" || info.Subject != "svc" || info.Auth != "jwt" || !c.HasScope("orders:read") {
				t.Errorf("claims %+v, info subject %q auth %q", c, info.Subject, info.Auth)
			}
			if got := call(t, base+"/api/orders", "Authorization", "Bearer "+tok[:len(tok)-4]+"AAAA"); got != 401 {
				t.Errorf("tampered token: %d", got)
			}
			// A token for another resource has another audience.
			other := op.token(t, "https://opaque.example.com", "orders:read", nil)
			if got := call(t, base+"/api/orders", "Authorization", "Bearer "+other); got != 401 {
				t.Errorf("opaque token at the JWT verifier: %d", got)
			}
		})
	}

	op := startProvider(t)
	t.Run("introspection of an opaque token", func(t *testing.T) {
		in, err := introspect.New(introspect.Options{
			URL:          op.issuer + "/token/introspection",
			ClientID:     "gateway",
			ClientSecret: "gateway-secret",
			Issuer:       op.issuer,
			Audience:     []string{"https://opaque.example.com"},
			HTTPClient:   op.client,
		})
		if err != nil {
			t.Fatal(err)
		}
		base, last := gatewayWith(t, jwtauth.RequireWithOptions(in, jwtauth.RequireOptions{
			Rules:         []jwtauth.Rule{jwtauth.Scopes("orders:read")},
			ForwardClaims: map[string]string{"X-Client": "client_id"},
		}))
		tok := op.token(t, "https://opaque.example.com", "orders:read", nil)
		if got := call(t, base+"/api/orders", "Authorization", "Bearer "+tok); got != 204 {
			t.Fatalf("status %d", got)
		}
		if c, info := last(); c.String("client_id") != "svc" || info.Auth != "introspection" {
			t.Errorf("claims %v, auth %q", c.Raw(), info.Auth)
		}
		if got := call(t, base+"/api/orders", "Authorization", "Bearer not-a-token-it-issued"); got != 401 {
			t.Errorf("unknown token: %d", got)
		}
		// Wrong client credentials: the endpoint refuses the gateway,
		// which answers 503, not 401: the token may be fine.
		bad, _ := introspect.New(introspect.Options{URL: op.issuer + "/token/introspection", ClientID: "gateway", ClientSecret: "wrong", HTTPClient: op.client})
		base2, _ := gatewayWith(t, jwtauth.Require(bad))
		if got := call(t, base2+"/api/orders", "Authorization", "Bearer "+tok); got != 503 {
			t.Errorf("bad client secret: %d", got)
		}
	})

	t.Run("DPoP-bound token", func(t *testing.T) {
		v, err := jwtauth.New(context.Background(), jwtauth.Options{
			DiscoveryURL: op.issuer + "/.well-known/openid-configuration",
			Issuer:       op.issuer,
			Audience:     []string{"https://api.example.com"},
			Algorithms:   []string{"ES256"},
			RequireType:  "at+jwt",
			HTTPClient:   op.client,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = v.Close() })
		d, err := jwtauth.NewDPoP(jwtauth.DPoPOptions{})
		if err != nil {
			t.Fatal(err)
		}
		base, _ := gatewayWith(t, jwtauth.RequireWithOptions(v, jwtauth.RequireOptions{DPoP: d}))
		key := jwttest.NewDPoPKey("ES256")
		tok := op.token(t, "https://api.example.com", "orders:read", key)
		target := base + "/api/orders"
		if got := call(t, target, "Authorization", "DPoP "+tok, "DPoP", key.Proof("GET", target, tok)); got != 204 {
			t.Fatalf("with its proof: %d", got)
		}
		if got := call(t, target, "Authorization", "Bearer "+tok); got != 401 {
			t.Errorf("as Bearer: %d", got)
		}
		if got := call(t, target, "Authorization", "DPoP "+tok, "DPoP", jwttest.NewDPoPKey("ES256").Proof("GET", target, tok)); got != 401 {
			t.Errorf("proof by another key: %d", got)
		}
	})
}
