package pylon

import (
	"crypto/tls"
	"crypto/x509"
)

// ClientCerts configures how a TLS server asks its clients for
// certificates (mutual TLS). [ClientCertTLS] turns it into the
// *tls.Config a server serves with; the middleware/mtls package then reads
// the verified certificate of each request.
type ClientCerts struct {
	// CAs are the certificate authorities a client certificate must chain
	// to. Required: ClientCertTLS panics when it is nil, as a server that
	// could not verify a certificate must not start.
	CAs *x509.CertPool
	// Require refuses, in the TLS handshake, a client that presents no
	// certificate or one that does not verify. False requests a
	// certificate and verifies it when presented, so that clients without
	// one still connect (and authenticate otherwise, with a token say).
	Require bool
	// Base is the configuration to extend: server certificates, versions,
	// ALPN. It is cloned, never modified. Nil means a new configuration
	// with TLS 1.2 as the least version; either way the server's
	// certificates must be set (in Base or on the result).
	Base *tls.Config
}

// ClientCertTLS returns a TLS configuration that requests (or, with
// c.Require, requires) client certificates and verifies them against
// c.CAs. Assign it to the server before serving; for a server from
// NewServer, the one line is
//
//	srv.TLSConfig = pylon.ClientCertTLS(pylon.ClientCerts{CAs: pool, Base: srv.TLSConfig})
//
// with the server's certificate in Base.Certificates (or set on the
// result). Requests then carry the verified chain in
// r.TLS.VerifiedChains, which mtls.Identify records in RequestInfo and
// forwards upstream, and which jwtauth reads for certificate-bound tokens
// (RFC 8705).
func ClientCertTLS(c ClientCerts) *tls.Config {
	if c.CAs == nil {
		panic("pylon: ClientCertTLS: ClientCerts.CAs is nil: no client certificate could be verified")
	}
	var cfg *tls.Config
	if c.Base != nil {
		cfg = c.Base.Clone()
	} else {
		cfg = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	cfg.ClientCAs = c.CAs
	if c.Require {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	} else {
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return cfg
}

// ClientCert is the identity of a verified client certificate, as
// mtls.Identify records it in [RequestInfo.ClientCert].
type ClientCert struct {
	// Subject is the certificate's subject distinguished name
	// ("CN=orders,O=Example").
	Subject string
	// DNSNames, URIs (SPIFFE IDs among them), Emails and IPs are the
	// certificate's subject alternative names.
	DNSNames []string
	URIs     []string
	Emails   []string
	IPs      []string
	// SHA256 is the base64url SHA-256 thumbprint of the certificate (DER),
	// as RFC 8705 §3.1 compares it with "x5t#S256".
	SHA256 string
}
