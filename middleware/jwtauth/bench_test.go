package jwtauth

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/gatewaytest/jwttest"
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
