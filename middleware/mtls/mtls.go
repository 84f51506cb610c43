// Package mtls identifies clients by their verified TLS certificate
// (mutual TLS).
//
// The server asks for client certificates with pylon.ClientCertTLS, which
// verifies them against a CA pool in the handshake. [Identify] (or [New])
// then reads each request's verified chain (r.TLS.VerifiedChains, never
// an unverified certificate) and
//
//   - records the certificate's subject, subject alternative names and
//     SHA-256 thumbprint in pylon.RequestInfo.ClientCert;
//   - makes the certificate the request's subject (RequestInfo.Subject,
//     with "mtls" in Auth) when no other authentication ran before it; a
//     token middleware after it overwrites both, as the more specific
//     identity;
//   - forwards the identity upstream in one header, by default
//     X-Forwarded-Client-Cert in Envoy's format, which the gateway owns:
//     the client's own copy is always removed first, whether or not a
//     certificate was presented, so a backend can believe it.
//
// jwtauth enforces RFC 8705 certificate-bound access tokens
// ("cnf": {"x5t#S256": ...}) on its own, from the same connection state.
package mtls

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"log/slog"
	"net/http"
	"strings"

	"golang.org/x/net/http/httpguts"

	"github.com/pylon-gateway/pylon"
)

// DefaultHeader is the header that carries the client's certificate
// identity upstream unless Options.Header names another.
const DefaultHeader = "X-Forwarded-Client-Cert"

// Options configures New.
type Options struct {
	// Header is the upstream header carrying the certificate's identity.
	// Empty means DefaultHeader; "-" means none is sent (the client's
	// copy of DefaultHeader is still removed).
	Header string
	// Require answers 403 to a request without a verified client
	// certificate: for routes that only certificate holders may reach
	// when the server merely requests certificates. False lets such
	// requests through with no ClientCert.
	Require bool
	// Subject names the subject recorded for a certificate. Nil means
	// its first URI SAN (a SPIFFE ID, say) when it has one, else its
	// subject distinguished name.
	Subject func(*x509.Certificate) string
	// Logger receives the reason of each refusal at Debug level (the
	// access log records the refusal and its reason, from
	// pylon.RequestInfo, once). Nil means slog.Default().
	Logger *slog.Logger
}

// Identify is New with the zero Options: certificates are optional, the
// identity goes upstream in DefaultHeader.
func Identify(next http.Handler) http.Handler { return New(Options{})(next) }

// New returns a middleware that records and forwards the identity of the
// request's verified client certificate, as the package doc describes.
func New(o Options) func(http.Handler) http.Handler {
	header := http.CanonicalHeaderKey(o.Header)
	switch o.Header {
	case "":
		header = DefaultHeader
	case "-":
		header = ""
	}
	subject := o.Subject
	if subject == nil {
		subject = defaultSubject
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	stage := pylon.Stage{Name: "mtls.Identify", Roles: pylon.RoleAuthenticate}
	return func(next http.Handler) http.Handler {
		return pylon.WithStage(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// Whatever follows, the client never speaks for the gateway.
			r.Header.Del(DefaultHeader)
			if header != "" {
				r.Header.Del(header)
			}
			info := pylon.Info(r.Context())
			if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
				if o.Require {
					log.LogAttrs(r.Context(), slog.LevelDebug, "mtls: request rejected",
						slog.String("reason", "no verified client certificate"),
						slog.String("method", r.Method), slog.String("path", r.URL.Path))
					if info != nil && info.Error == "" {
						info.Error = "mtls: no verified client certificate"
						info.AuthFailure = "missing_certificate"
					}
					pylon.WriteProblem(w, r, pylon.Problem{Status: http.StatusForbidden})
					return
				}
				next.ServeHTTP(w, r)
				return
			}
			leaf := r.TLS.VerifiedChains[0][0]
			cc := Describe(leaf)
			if info != nil {
				info.ClientCert = cc
				if !info.Authenticated() {
					info.Subject, info.SubjectScope, info.Auth = subject(leaf), "", "mtls"
				}
			}
			if header != "" {
				if v := headerValue(cc); httpguts.ValidHeaderFieldValue(v) {
					r.Header[header] = []string{v}
				}
			}
			next.ServeHTTP(w, r)
		}), stage)
	}
}

func defaultSubject(c *x509.Certificate) string {
	if len(c.URIs) > 0 {
		return c.URIs[0].String()
	}
	return c.Subject.String()
}

// Describe returns the identity of a certificate as pylon records it.
func Describe(c *x509.Certificate) *pylon.ClientCert {
	sum := sha256.Sum256(c.Raw)
	cc := &pylon.ClientCert{
		Subject:  c.Subject.String(),
		DNSNames: c.DNSNames,
		Emails:   c.EmailAddresses,
		SHA256:   base64.RawURLEncoding.EncodeToString(sum[:]),
	}
	for _, u := range c.URIs {
		cc.URIs = append(cc.URIs, u.String())
	}
	for _, ip := range c.IPAddresses {
		cc.IPs = append(cc.IPs, ip.String())
	}
	return cc
}

// headerValue writes the identity in Envoy's x-forwarded-client-cert
// format: Hash (hex SHA-256 of the DER), Subject, then one URI, DNS and
// Email element per SAN; values with a separator are quoted.
func headerValue(cc *pylon.ClientCert) string {
	var sum [sha256.Size]byte // cc.SHA256 decoded: the certificate is hashed once, in Describe
	_, _ = base64.RawURLEncoding.Decode(sum[:], []byte(cc.SHA256))
	var b strings.Builder
	b.WriteString("Hash=")
	b.WriteString(hex.EncodeToString(sum[:]))
	b.WriteString(";Subject=")
	b.WriteString(quote(cc.Subject))
	for _, u := range cc.URIs {
		b.WriteString(";URI=")
		b.WriteString(quote(u))
	}
	for _, d := range cc.DNSNames {
		b.WriteString(";DNS=")
		b.WriteString(quote(d))
	}
	for _, e := range cc.Emails {
		b.WriteString(";Email=")
		b.WriteString(quote(e))
	}
	return b.String()
}

// quote quotes v when it holds one of the format's separators, escaping
// quotes and backslashes.
func quote(v string) string {
	if !strings.ContainsAny(v, `,;="\`) {
		return v
	}
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(v) + `"`
}
