// Package tlstest makes certificates for tests of mutual TLS: a CA made
// in memory with crypto/x509, and server and client certificates it
// signs, ready for a tls.Config. Nothing touches the disk and nothing is
// fetched.
package tlstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/url"
	"sync/atomic"
	"time"
)

// CA is a test certificate authority. Its methods are safe for
// concurrent use.
type CA struct {
	// Cert is the CA's self-signed certificate.
	Cert *x509.Certificate
	// Pool holds Cert alone: the ClientCAs (or RootCAs) that trust it.
	Pool *x509.CertPool

	key    *ecdsa.PrivateKey
	serial atomic.Int64
}

// NewCA returns a CA named name, valid from an hour ago for a day. It
// panics when a key cannot be generated.
func NewCA(name string) *CA {
	key := newKey()
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"Pylon tests"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic("tlstest: " + err.Error())
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		panic("tlstest: " + err.Error())
	}
	ca := &CA{Cert: cert, Pool: x509.NewCertPool(), key: key}
	ca.Pool.AddCert(cert)
	ca.serial.Store(1)
	return ca
}

// Leaf describes a certificate for Issue.
type Leaf struct {
	// CommonName is the subject's CN.
	CommonName string
	// Organization is the subject's O. Empty means none.
	Organization string
	// DNSNames, URIs and IPs are subject alternative names. A server
	// certificate with none of them gets "localhost", 127.0.0.1 and ::1.
	DNSNames []string
	URIs     []string
	IPs      []net.IP
	// Emails are e-mail subject alternative names.
	Emails []string
	// Client makes a client certificate (extended key usage clientAuth);
	// false makes a server certificate (serverAuth).
	Client bool
}

// Issue returns a certificate signed by the CA, with its private key,
// valid from an hour ago for a day. It panics when l cannot be encoded
// (an unparsable URI).
func (ca *CA) Issue(l Leaf) tls.Certificate {
	key := newKey()
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:   big.NewInt(ca.serial.Add(1)),
		Subject:        pkix.Name{CommonName: l.CommonName},
		NotBefore:      now.Add(-time.Hour),
		NotAfter:       now.Add(24 * time.Hour),
		KeyUsage:       x509.KeyUsageDigitalSignature,
		DNSNames:       l.DNSNames,
		IPAddresses:    l.IPs,
		EmailAddresses: l.Emails,
	}
	if l.Organization != "" {
		tmpl.Subject.Organization = []string{l.Organization}
	}
	for _, s := range l.URIs {
		u, err := url.Parse(s)
		if err != nil {
			panic("tlstest: URI " + s + ": " + err.Error())
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	if l.Client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		if len(l.DNSNames)+len(l.IPs)+len(l.URIs) == 0 {
			tmpl.DNSNames = []string{"localhost"}
			tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		panic("tlstest: " + err.Error())
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		panic("tlstest: " + err.Error())
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// Server returns a server TLS configuration with a certificate for
// localhost and the loopback addresses, signed by the CA.
func (ca *CA) Server() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{ca.Issue(Leaf{CommonName: "localhost"})}}
}

// Client returns a client TLS configuration that trusts the server
// certificates of roots and presents cert, when it has one (a zero
// tls.Certificate presents none).
func Client(roots *CA, cert tls.Certificate) *tls.Config {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots.Pool}
	if len(cert.Certificate) > 0 {
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg
}

func newKey() *ecdsa.PrivateKey {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic("tlstest: " + err.Error())
	}
	return key
}
