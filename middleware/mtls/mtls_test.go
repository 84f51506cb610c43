package mtls_test

import (
	"crypto/tls"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/gatewaytest"
	"github.com/pylon-gateway/pylon/gatewaytest/tlstest"
	"github.com/pylon-gateway/pylon/middleware"
	"github.com/pylon-gateway/pylon/middleware/mtls"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// seen records the RequestInfo fields the mtls middleware sets.
type seen struct {
	mu      sync.Mutex
	subject string
	auth    string
	cert    *pylon.ClientCert
}

func (s *seen) capture(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info := pylon.Info(r.Context())
		s.mu.Lock()
		s.subject, s.auth, s.cert = info.Subject, info.Auth, info.ClientCert
		s.mu.Unlock()
		next.ServeHTTP(w, r)
	})
}

// gatewayTLS serves a Gateway over real TLS on loopback with the TLS
// configuration from pylon.ClientCertTLS.
func gatewayTLS(t *testing.T, ca *tlstest.CA, require bool, mws ...pylon.Middleware) (*httptest.Server, *gatewaytest.Backend) {
	t.Helper()
	up := gatewaytest.NewBackend(t)
	gw := pylon.New(pylon.Options{})
	gw.Route("GET /api/").Use(mws...).To(pylon.MustNewBackend("api", pylon.BackendOptions{Targets: []string{up.URL}}))
	if err := gw.Err(); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(gw)
	srv.TLS = pylon.ClientCertTLS(pylon.ClientCerts{CAs: ca.Pool, Require: require, Base: ca.Server()})
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, up
}

func client(t *testing.T, ca *tlstest.CA, cert tls.Certificate) *http.Client {
	tr := &http.Transport{TLSClientConfig: tlstest.Client(ca, cert)}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func get(t *testing.T, c *http.Client, url string, hdr ...string) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	return resp, err
}

func TestIdentityRecordedAndForwarded(t *testing.T) {
	ca := tlstest.NewCA("clients CA")
	var s seen
	srv, up := gatewayTLS(t, ca, false, mtls.Identify, s.capture)
	cert := ca.Issue(tlstest.Leaf{
		CommonName: "orders", Organization: "Example, Inc.",
		URIs: []string{"spiffe://example.org/orders"}, DNSNames: []string{"orders.internal"},
		Emails: []string{"ops@example.org"}, Client: true,
	})
	resp, err := get(t, client(t, ca, cert), srv.URL+"/api/x",
		"X-Forwarded-Client-Cert", "Hash=forged;Subject=CN=admin")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	got := up.Last(t).Header.Values("X-Forwarded-Client-Cert")
	if len(got) != 1 {
		t.Fatalf("upstream X-Forwarded-Client-Cert = %q, want one", got)
	}
	for _, want := range []string{`Subject="CN=orders,O=Example\\, Inc."`, "URI=spiffe://example.org/orders", "DNS=orders.internal", "Email=ops@example.org", "Hash="} {
		if !strings.Contains(got[0], want) {
			t.Errorf("upstream header %q lacks %q", got[0], want)
		}
	}
	if strings.Contains(got[0], "forged") || strings.Contains(got[0], "admin") {
		t.Errorf("the client's copy survived: %q", got[0])
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.subject != "spiffe://example.org/orders" || s.auth != "mtls" {
		t.Errorf("Subject, Auth = %q, %q", s.subject, s.auth)
	}
	if s.cert == nil || s.cert.Subject != `CN=orders,O=Example\, Inc.` || len(s.cert.DNSNames) != 1 || len(s.cert.URIs) != 1 || s.cert.SHA256 == "" {
		t.Errorf("ClientCert = %+v", s.cert)
	}
}

func TestNoCertificate(t *testing.T) {
	ca := tlstest.NewCA("clients CA")
	t.Run("optional: passes, client's header removed", func(t *testing.T) {
		var s seen
		srv, up := gatewayTLS(t, ca, false, mtls.Identify, s.capture)
		resp, err := get(t, client(t, ca, tls.Certificate{}), srv.URL+"/api/x",
			"X-Forwarded-Client-Cert", "Hash=forged;Subject=CN=admin")
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%v %v", resp, err)
		}
		if v := up.Last(t).Header.Values("X-Forwarded-Client-Cert"); len(v) != 0 {
			t.Errorf("upstream got the client's header %q", v)
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.cert != nil || s.auth != "" || s.subject != "" {
			t.Errorf("recorded %q %q %+v without a certificate", s.subject, s.auth, s.cert)
		}
	})
	t.Run("middleware Require: 403 problem", func(t *testing.T) {
		srv, up := gatewayTLS(t, ca, false, mtls.New(mtls.Options{Require: true, Logger: quiet}))
		resp, err := get(t, client(t, ca, tls.Certificate{}), srv.URL+"/api/x")
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 403 || resp.Header.Get("Content-Type") != "application/problem+json" {
			t.Errorf("%d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		if up.Count() != 0 {
			t.Error("reached upstream")
		}
	})
	t.Run("server Require: handshake refused", func(t *testing.T) {
		srv, up := gatewayTLS(t, ca, true, mtls.Identify)
		if _, err := get(t, client(t, ca, tls.Certificate{}), srv.URL+"/api/x"); err == nil {
			t.Error("request without a certificate succeeded")
		}
		if up.Count() != 0 {
			t.Error("reached upstream")
		}
	})
}

func TestUntrustedCertificateRefused(t *testing.T) {
	ca, other := tlstest.NewCA("clients CA"), tlstest.NewCA("someone else")
	srv, up := gatewayTLS(t, ca, false, mtls.Identify)
	// Signed by a CA the gateway does not trust: the handshake fails even
	// though certificates are only requested.
	// A Go client sends a certificate only if the server's acceptable CAs
	// name its issuer: force it, as a hostile client would.
	cert := other.Issue(tlstest.Leaf{CommonName: "mallory", Client: true})
	c := client(t, ca, tls.Certificate{})
	c.Transport.(*http.Transport).TLSClientConfig.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		return &cert, nil
	}
	if _, err := get(t, c, srv.URL+"/api/x"); err == nil {
		t.Error("untrusted certificate accepted")
	}
	if up.Count() != 0 {
		t.Error("reached upstream")
	}
}

func TestOtherAuthenticationKeepsItsSubject(t *testing.T) {
	ca := tlstest.NewCA("clients CA")
	var s seen
	earlier := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			info := pylon.Info(r.Context())
			info.Subject, info.Auth = "alice", "jwt"
			next.ServeHTTP(w, r)
		})
	}
	srv, _ := gatewayTLS(t, ca, false, earlier, mtls.New(mtls.Options{Header: "X-Client-Identity"}), s.capture)
	cert := ca.Issue(tlstest.Leaf{CommonName: "orders", Client: true})
	if resp, err := get(t, client(t, ca, cert), srv.URL+"/api/x"); err != nil || resp.StatusCode != 200 {
		t.Fatal(resp, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.subject != "alice" || s.auth != "jwt" || s.cert == nil || s.cert.Subject != "CN=orders" {
		t.Errorf("%q %q %+v", s.subject, s.auth, s.cert)
	}
}

func TestClientCertTLSNeedsCAs(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("no panic without CAs")
		}
	}()
	pylon.ClientCertTLS(pylon.ClientCerts{})
}

// syncBuffer is a log destination safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
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

// A refusal is logged once, by the access log at Info, which carries its
// reason; mtls itself logs it at Debug only, as every authentication does.
func TestRefusalLoggedOnceByAccessLog(t *testing.T) {
	ca := tlstest.NewCA("clients CA")
	var buf syncBuffer
	logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	up := gatewaytest.NewBackend(t)
	gw := pylon.New(pylon.Options{})
	gw.Use(middleware.AccessLog(logger))
	gw.Route("GET /api/").Use(mtls.New(mtls.Options{Require: true, Logger: logger})).
		To(pylon.MustNewBackend("api", pylon.BackendOptions{Targets: []string{up.URL}}))
	if err := gw.Err(); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(gw)
	srv.TLS = pylon.ClientCertTLS(pylon.ClientCerts{CAs: ca.Pool, Base: ca.Server()})
	srv.StartTLS()
	t.Cleanup(srv.Close)

	resp, err := get(t, client(t, ca, tls.Certificate{}), srv.URL+"/api/x")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 403 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	// The access line is written before the client reads the end of the
	// response, so the log is complete here.
	var above []string
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if strings.Contains(line, "mtls: request rejected") && !strings.Contains(line, "level=DEBUG") {
			t.Errorf("mtls logged its refusal above Debug: %s", line)
		}
		if !strings.Contains(line, "level=DEBUG") {
			above = append(above, line)
		}
	}
	if len(above) != 1 || !strings.Contains(above[0], "status=403") || !strings.Contains(above[0], `error="mtls: no verified client certificate"`) {
		t.Errorf("want one Info line, the access log's with the reason; got %q", above)
	}
}
