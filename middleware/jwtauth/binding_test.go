package jwtauth

import (
	"crypto/tls"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/gatewaytest/jwttest"
	"github.com/pylon-gateway/pylon/gatewaytest/tlstest"
	"github.com/pylon-gateway/pylon/middleware/mtls"
)

// RFC 8705: a token bound to a client certificate is admitted only over a
// connection presenting that certificate. Real TLS on loopback, through a
// Gateway served with pylon.ClientCertTLS.
func TestCertificateBoundTokens(t *testing.T) {
	iss := newIssuer(t)
	v := newVerifier(t, issuerOptions(iss))
	ca := tlstest.NewCA("clients CA")
	alice := ca.Issue(tlstest.Leaf{CommonName: "alice-app", Client: true})
	bob := ca.Issue(tlstest.Leaf{CommonName: "bob-app", Client: true})

	var subject, auth string
	var cert *pylon.ClientCert
	gw := pylon.New(pylon.Options{})
	gw.Route("GET /api/").Use(mtls.Identify, RequireWithOptions(v, RequireOptions{Logger: quiet})).Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info := pylon.Info(r.Context())
		subject, auth, cert = info.Subject, info.Auth, info.ClientCert
		w.WriteHeader(http.StatusNoContent)
	}))
	if err := gw.Err(); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(gw)
	srv.TLS = pylon.ClientCertTLS(pylon.ClientCerts{CAs: ca.Pool, Base: ca.Server()})
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)

	bound := iss.Mint(map[string]any{"sub": "alice", "cnf": jwttest.CertConfirmation(alice.Leaf)})
	unbound := iss.Mint(map[string]any{"sub": "carol"})
	for _, tc := range []struct {
		name   string
		cert   tls.Certificate
		token  string
		status int
	}{
		{"bound token, its certificate", alice, bound, 204},
		{"bound token, another certificate", bob, bound, 401},
		{"bound token, no certificate", tls.Certificate{}, bound, 401},
		{"unbound token, no certificate", tls.Certificate{}, unbound, 204},
		{"unbound token, a certificate", bob, unbound, 204},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := &http.Transport{TLSClientConfig: tlstest.Client(ca, tc.cert)}
			defer tr.CloseIdleConnections()
			req, _ := http.NewRequest("GET", srv.URL+"/api/x", nil)
			req.Header.Set("Authorization", "Bearer "+tc.token)
			resp, err := (&http.Client{Transport: tr}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if tc.status == 401 {
				if got := resp.Header.Get("WWW-Authenticate"); got != `Bearer realm="api", error="invalid_token"` {
					t.Errorf("challenge %q", got)
				}
				if strings.Contains(string(body), "x5t") || strings.Contains(string(body), "certificate") {
					t.Errorf("body tells too much: %s", body)
				}
			}
		})
	}
	// The last request: a token's subject wins over the certificate's,
	// which stays recorded.
	if subject != "carol" || auth != "jwt" || cert == nil || cert.Subject != "CN=bob-app" {
		t.Errorf("Subject %q, Auth %q, ClientCert %+v", subject, auth, cert)
	}
}

// dpopSetup serves RequireWithOptions with DPoP through a Gateway on
// loopback, every clock injected.
type dpopSetup struct {
	iss   *jwttest.Issuer
	clock *clock
	url   string // of the protected resource
	key   *jwttest.DPoPKey
	token string // bound to key
	seen  *seen
}

func newDPoPSetup(t *testing.T, do DPoPOptions, withDPoP bool) *dpopSetup {
	t.Helper()
	s := &dpopSetup{iss: newIssuer(t), clock: newClock(), key: jwttest.NewDPoPKey("ES256"), seen: &seen{}}
	s.iss.SetNow(s.clock.Now)
	s.key.SetNow(s.clock.Now)
	o := issuerOptions(s.iss)
	o.Now = s.clock.Now
	v := newVerifier(t, o)
	ro := RequireOptions{Logger: quiet}
	if withDPoP {
		do.Now = s.clock.Now
		d, err := NewDPoP(do)
		if err != nil {
			t.Fatal(err)
		}
		ro.DPoP = d
	}
	base := gatewayFor(t, RequireWithOptions(v, ro), s.seen.handler())
	s.url = base + "/api/orders"
	s.token = s.iss.Mint(map[string]any{"sub": "alice", "cnf": s.key.Confirmation()})
	return s
}

func (s *dpopSetup) do(t *testing.T, method, url string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

const dpopAlgs = `algs="ES256 ES384 PS256 RS256 EdDSA"`

func TestDPoP(t *testing.T) {
	s := newDPoPSetup(t, DPoPOptions{}, true)
	other := jwttest.NewDPoPKey("RS256")
	unbound := s.iss.Mint(map[string]any{"sub": "carol"})
	otherPath := strings.Replace(s.url, "/orders", "/payments", 1)
	proof := func(p jwttest.DPoPProof) string {
		if p.Method == "" {
			p.Method = "GET"
		}
		if p.URL == "" {
			p.URL = s.url
		}
		if p.AccessToken == "" {
			p.AccessToken = s.token
		}
		return s.key.ProofWith(p)
	}
	badProof := `DPoP realm="api", error="invalid_dpop_proof", ` + dpopAlgs
	badToken := `DPoP realm="api", error="invalid_token", ` + dpopAlgs
	for _, tc := range []struct {
		name      string
		url       string
		hdr       []string
		status    int
		challenge string
	}{
		{"valid proof", "", []string{"Authorization", "DPoP " + s.token, "DPoP", proof(jwttest.DPoPProof{})}, 204, ""},
		{"query is not part of htu", "?page=2", []string{"Authorization", "DPoP " + s.token, "DPoP", proof(jwttest.DPoPProof{})}, 204, ""},
		{"htu normalised (case, default-free port, %-encoding)", "", []string{"Authorization", "DPoP " + s.token, "DPoP",
			proof(jwttest.DPoPProof{URL: strings.Replace(strings.Replace(s.url, "http://", "HTTP://", 1), "/orders", "/%6Frders", 1)})}, 204, ""},
		{"bound token as Bearer", "", []string{"Authorization", "Bearer " + s.token}, 401, badToken},
		{"bound token as Bearer with a proof", "", []string{"Authorization", "Bearer " + s.token, "DPoP", proof(jwttest.DPoPProof{})}, 401, badToken},
		{"no proof", "", []string{"Authorization", "DPoP " + s.token}, 401, badToken},
		{"two proofs", "", []string{"Authorization", "DPoP " + s.token, "DPoP", proof(jwttest.DPoPProof{}), "DPoP", proof(jwttest.DPoPProof{})}, 401, badProof},
		{"unbound token with DPoP scheme", "", []string{"Authorization", "DPoP " + unbound, "DPoP", s.key.Proof("GET", s.url, unbound)}, 401, badToken},
		{"proof by another key", "", []string{"Authorization", "DPoP " + s.token, "DPoP", other.Proof("GET", s.url, s.token)}, 401, badToken},
		{"wrong method", "", []string{"Authorization", "DPoP " + s.token, "DPoP", proof(jwttest.DPoPProof{Method: "POST"})}, 401, badProof},
		{"wrong path", "", []string{"Authorization", "DPoP " + s.token, "DPoP", proof(jwttest.DPoPProof{URL: otherPath})}, 401, badProof},
		{"wrong host", "", []string{"Authorization", "DPoP " + s.token, "DPoP", proof(jwttest.DPoPProof{URL: "http://api.example.com/api/orders"})}, 401, badProof},
		{"wrong scheme", "", []string{"Authorization", "DPoP " + s.token, "DPoP", proof(jwttest.DPoPProof{URL: strings.Replace(s.url, "http://", "https://", 1)})}, 401, badProof},
		{"iat too old", "", []string{"Authorization", "DPoP " + s.token, "DPoP", proof(jwttest.DPoPProof{IssuedAt: s.clock.Now().Add(-61 * time.Second)})}, 401, badProof},
		{"iat in the future", "", []string{"Authorization", "DPoP " + s.token, "DPoP", proof(jwttest.DPoPProof{IssuedAt: s.clock.Now().Add(10 * time.Second)})}, 401, badProof},
		{"iat a little ahead (skew)", "", []string{"Authorization", "DPoP " + s.token, "DPoP", proof(jwttest.DPoPProof{IssuedAt: s.clock.Now().Add(3 * time.Second)})}, 204, ""},
		{"ath of another token", "", []string{"Authorization", "DPoP " + s.token, "DPoP", proof(jwttest.DPoPProof{AccessToken: unbound})}, 401, badProof},
		{"no ath", "", []string{"Authorization", "DPoP " + s.token, "DPoP", proof(jwttest.DPoPProof{Claims: map[string]any{"ath": nil}})}, 401, badProof},
		{"no jti", "", []string{"Authorization", "DPoP " + s.token, "DPoP", proof(jwttest.DPoPProof{Claims: map[string]any{"jti": nil}})}, 401, badProof},
		{"typ JWT", "", []string{"Authorization", "DPoP " + s.token, "DPoP", proof(jwttest.DPoPProof{Header: map[string]any{"typ": "JWT"}})}, 401, badProof},
		{"no jwk", "", []string{"Authorization", "DPoP " + s.token, "DPoP", proof(jwttest.DPoPProof{Header: map[string]any{"jwk": nil}})}, 401, badProof},
		{"signed by a key not its jwk", "", []string{"Authorization", "DPoP " + s.token, "DPoP", proof(jwttest.DPoPProof{Key: jwttest.NewDPoPKey("ES256").Private()})}, 401, badProof},
		{"HS256", "", []string{"Authorization", "DPoP " + s.token, "DPoP", proof(jwttest.DPoPProof{Alg: "HS256", Key: []byte("0123456789abcdef0123456789abcdef")})}, 401, badProof},
		{"garbage proof", "", []string{"Authorization", "DPoP " + s.token, "DPoP", "a.b.c"}, 401, badProof},
		{"no token", "", nil, 401, `Bearer realm="api", DPoP realm="api", ` + dpopAlgs},
		{"unbound bearer token still fine", "", []string{"Authorization", "Bearer " + unbound}, 204, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := s.do(t, "GET", s.url+tc.url, tc.hdr...)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tc.status, body)
			}
			if got := resp.Header.Get("WWW-Authenticate"); got != tc.challenge {
				t.Errorf("challenge\n got %s\nwant %s", got, tc.challenge)
			}
			if strings.Contains(body, s.token) || strings.Contains(body, "jkt") || strings.Contains(body, "htu") {
				t.Errorf("body tells too much: %s", body)
			}
		})
	}
	if h := s.seen.headers; h.Get("Authorization") != "" || h.Get("DPoP") != "" {
		t.Errorf("credentials forwarded: %v", h)
	}
}

func TestDPoPReplay(t *testing.T) {
	s := newDPoPSetup(t, DPoPOptions{ReplayCacheSize: 2}, true)
	p := s.key.Proof("GET", s.url, s.token)
	auth := "DPoP " + s.token
	if resp, _ := s.do(t, "GET", s.url, "Authorization", auth, "DPoP", p); resp.StatusCode != 204 {
		t.Fatalf("first use: %d", resp.StatusCode)
	}
	if resp, _ := s.do(t, "GET", s.url, "Authorization", auth, "DPoP", p); resp.StatusCode != 401 {
		t.Fatalf("replay: %d", resp.StatusCode)
	}
	if resp, _ := s.do(t, "GET", s.url, "Authorization", auth, "DPoP", s.key.Proof("GET", s.url, s.token)); resp.StatusCode != 204 {
		t.Fatalf("second proof: %d", resp.StatusCode)
	}
	// Full of live entries: refused, not accepted unchecked.
	if resp, _ := s.do(t, "GET", s.url, "Authorization", auth, "DPoP", s.key.Proof("GET", s.url, s.token)); resp.StatusCode != 503 {
		t.Fatalf("full cache: %d", resp.StatusCode)
	}
	// Past the window (60s) and skew (5s) the entries are gone; the old
	// proof is now refused by its iat, not by memory.
	s.clock.Add(66 * time.Second)
	if resp, _ := s.do(t, "GET", s.url, "Authorization", auth, "DPoP", p); resp.StatusCode != 401 {
		t.Fatalf("old proof after the window: %d", resp.StatusCode)
	}
	if resp, _ := s.do(t, "GET", s.url, "Authorization", auth, "DPoP", s.key.Proof("GET", s.url, s.token)); resp.StatusCode != 204 {
		t.Fatalf("fresh proof after expiry: %d", resp.StatusCode)
	}
}

func TestDPoPNotConfigured(t *testing.T) {
	s := newDPoPSetup(t, DPoPOptions{}, false)
	// The bound token is only good with its proof, which this middleware
	// cannot check: refused whatever the scheme.
	resp, _ := s.do(t, "GET", s.url, "Authorization", "Bearer "+s.token)
	if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != `Bearer realm="api", error="invalid_token"` {
		t.Errorf("Bearer: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	resp, _ = s.do(t, "GET", s.url, "Authorization", "DPoP "+s.token, "DPoP", s.key.Proof("GET", s.url, s.token))
	if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != `Bearer realm="api"` {
		t.Errorf("DPoP: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
}

func TestDPoPOptions(t *testing.T) {
	for _, algs := range [][]string{{"HS256"}, {"none"}, {"Ed25519"}, {"XX"}} {
		if _, err := NewDPoP(DPoPOptions{Algorithms: algs}); err == nil {
			t.Errorf("%q accepted", algs)
		}
	}
	s := newDPoPSetup(t, DPoPOptions{Algorithms: []string{"RS256"}}, true)
	resp, _ := s.do(t, "GET", s.url, "Authorization", "DPoP "+s.token, "DPoP", s.key.Proof("GET", s.url, s.token))
	if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != `DPoP realm="api", error="invalid_dpop_proof", algs="RS256"` {
		t.Errorf("ES256 proof with RS256 only: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
}

func TestNormHTU(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"https://API.example.com:443/a/b?q#f", "https://api.example.com/a/b"},
		{"http://h:80", "http://h/"},
		{"http://h:8080/%7euser/%2f", "http://h:8080/~user/%2F"},
		{"ftp://h/", ""},
		{"/relative", ""},
		{"http://u@h/", ""},
		{"http://h/%zz", ""},
	} {
		got, ok := normHTU(tc.in)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("normHTU(%q) = %q, %v; want %q", tc.in, got, ok, tc.want)
		}
	}
}
