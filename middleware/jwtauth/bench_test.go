package jwtauth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/gatewaytest/jwttest"
	"github.com/pylon-gateway/pylon/gatewaytest/tlstest"
)

func BenchmarkVerify(b *testing.B) {
	iss := newIssuer(b)
	ctx := context.Background()
	for _, alg := range jwttest.Algorithms {
		b.Run("uncached/"+alg, func(b *testing.B) {
			o := issuerOptions(iss)
			o.CacheSize = -1
			v := newVerifier(b, o)
			tok := iss.MintToken(jwttest.Token{Alg: alg, Claims: map[string]any{"scope": "a b c"}})
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(ctx, tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("cached", func(b *testing.B) {
		v := newVerifier(b, issuerOptions(iss))
		tok := iss.Mint(map[string]any{"scope": "a b c"})
		b.ReportAllocs()
		for b.Loop() {
			if _, err := v.Verify(ctx, tok); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cached/parallel", func(b *testing.B) {
		v := newVerifier(b, issuerOptions(iss))
		tok := iss.Mint(map[string]any{"scope": "a b c"})
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := v.Verify(ctx, tok); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

type nopWriter struct{ h http.Header }

func (w *nopWriter) Header() http.Header         { return w.h }
func (w *nopWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *nopWriter) WriteHeader(int)             {}

// BenchmarkRequire measures the whole middleware on a cached token with a
// scope rule and one forwarded claim.
func BenchmarkRequire(b *testing.B) {
	iss := newIssuer(b)
	v := newVerifier(b, issuerOptions(iss))
	tok := iss.Mint(map[string]any{"scope": "orders:read"})
	h := RequireWithOptions(v, RequireOptions{
		Rules:                []Rule{Scopes("orders:read")},
		ForwardClaims:        map[string]string{"X-User-Id": "sub"},
		ForwardAuthorization: true,
	})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	r := httptest.NewRequest("GET", "/orders/1", nil)
	r.Header.Set("Authorization", "Bearer "+tok)
	r = r.WithContext(pylon.NewContext(r.Context(), &pylon.RequestInfo{}))
	w := &nopWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(w, r)
	}
}

// BenchmarkRequireMulti measures the whole middleware over a Multi of
// three issuers, on a cached token of the last one.
func BenchmarkRequireMulti(b *testing.B) {
	var vs []*Verifier
	var last *jwttest.Issuer
	for range 3 {
		last = newIssuer(b)
		vs = append(vs, newVerifier(b, issuerOptions(last)))
	}
	m, err := NewMulti(vs...)
	if err != nil {
		b.Fatal(err)
	}
	tok := last.Mint(map[string]any{"scope": "orders:read"})
	h := RequireWithOptions(m, RequireOptions{
		Rules:                []Rule{Scopes("orders:read")},
		ForwardClaims:        map[string]string{"X-User-Id": "sub"},
		ForwardAuthorization: true,
	})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	r := httptest.NewRequest("GET", "/orders/1", nil)
	r.Header.Set("Authorization", "Bearer "+tok)
	r = r.WithContext(pylon.NewContext(r.Context(), &pylon.RequestInfo{}))
	w := &nopWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(w, r)
	}
}

// BenchmarkRequireDPoP measures the whole middleware on a cached
// DPoP-bound token with a new ES256 proof each request (proofs are
// single-use, so their check is never cached); BenchmarkRequireBound on
// a cached certificate-bound token.
func BenchmarkRequireDPoP(b *testing.B) {
	iss := newIssuer(b)
	v := newVerifier(b, issuerOptions(iss))
	key := jwttest.NewDPoPKey("ES256")
	tok := iss.Mint(map[string]any{"cnf": key.Confirmation()})
	d, err := NewDPoP(DPoPOptions{ReplayCacheSize: 1 << 24})
	if err != nil {
		b.Fatal(err)
	}
	h := RequireWithOptions(v, RequireOptions{DPoP: d})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	const n = 512
	proofs := make([]string, n)
	for i := range proofs {
		proofs[i] = key.Proof("GET", "http://example.com/orders/1", tok)
	}
	w := &nopWriter{h: http.Header{}}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i%n == 0 {
			b.StopTimer()
			for j := range proofs {
				proofs[j] = key.Proof("GET", "http://example.com/orders/1", tok)
			}
			b.StartTimer()
		}
		r := httptest.NewRequest("GET", "/orders/1", nil)
		r.Header.Set("Authorization", "DPoP "+tok)
		r.Header.Set("DPoP", proofs[i%n])
		i++
		h.ServeHTTP(w, r)
	}
}

func BenchmarkRequireBound(b *testing.B) {
	iss := newIssuer(b)
	v := newVerifier(b, issuerOptions(iss))
	ca := tlstest.NewCA("bench CA")
	cert := ca.Issue(tlstest.Leaf{CommonName: "c", Client: true})
	tok := iss.Mint(map[string]any{"cnf": jwttest.CertConfirmation(cert.Leaf)})
	h := RequireWithOptions(v, RequireOptions{ForwardAuthorization: true})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	r := httptest.NewRequest("GET", "/orders/1", nil)
	r.Header.Set("Authorization", "Bearer "+tok)
	r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert.Leaf}}
	r = r.WithContext(pylon.NewContext(r.Context(), &pylon.RequestInfo{}))
	w := &nopWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(w, r)
	}
}
