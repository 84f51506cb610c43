package middleware_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/middleware"
)

// discardWriter is a ResponseWriter that keeps nothing but a header map, so
// benchmarks measure the middleware and not httptest.ResponseRecorder.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(int)             {}
func (w *discardWriter) Flush()                      {}

var body = []byte("ok")

var bare = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	w.WriteHeader(200)
	_, _ = w.Write(body)
})

// bench serves one request through h per iteration, inside a Gateway-like
// context that already holds a RequestInfo, as a Gateway provides.
func bench(b *testing.B, h http.Handler, header map[string]string) {
	req := httptest.NewRequest("GET", "http://api.example.com/orders/7", nil)
	req.RemoteAddr = "10.0.0.1:5555"
	for k, v := range header {
		req.Header.Set(k, v)
	}
	w := &discardWriter{h: http.Header{}}
	info := &pylon.RequestInfo{}
	req = req.WithContext(pylon.NewContext(req.Context(), info))
	_, keepID := header["X-Request-Id"]
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if !keepID {
			delete(req.Header, "X-Request-Id") // RequestID generates one each time
		}
		clear(w.h)
		*info = pylon.RequestInfo{}
		h.ServeHTTP(w, req)
	}
}

func BenchmarkBare(b *testing.B) { bench(b, bare, nil) }

func BenchmarkWrapWriter(b *testing.B) {
	bench(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		bare.ServeHTTP(middleware.WrapWriter(w), r)
	}), nil)
}

func BenchmarkRequestID(b *testing.B) {
	b.Run("generated", func(b *testing.B) { bench(b, middleware.RequestID(bare), nil) })
	b.Run("incoming", func(b *testing.B) {
		bench(b, middleware.RequestID(bare), map[string]string{"X-Request-Id": "6ba7b810-9dad-11d1-80b4-00c04fd430c8"})
	})
}

func BenchmarkRecover(b *testing.B) {
	bench(b, middleware.Recover(slog.New(slog.DiscardHandler))(bare), nil)
}

func BenchmarkAccessLog(b *testing.B) {
	b.Run("JSON to io.Discard", func(b *testing.B) {
		bench(b, middleware.AccessLog(slog.New(slog.NewJSONHandler(io.Discard, nil)))(bare), nil)
	})
	b.Run("disabled level", func(b *testing.B) {
		bench(b, middleware.AccessLog(slog.New(slog.DiscardHandler))(bare), nil)
	})
	// A proxied, authenticated, rate-limited request: every optional field.
	full := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info := pylon.Info(r.Context())
		info.Route, info.Backend, info.Target = "orders", "orders", "http://10.0.0.5:8080"
		info.Attempts, info.UpstreamStatus, info.UpstreamDuration = 1, 200, time.Millisecond
		info.Subject, info.Breaker = "user-1", "closed"
		info.RateLimit = pylon.RateLimitInfo{Key: "sub:user-1", Decided: true, Allowed: true, Limit: 100, Remaining: 99}
		bare.ServeHTTP(w, r)
	})
	b.Run("JSON, every field", func(b *testing.B) {
		bench(b, middleware.AccessLog(slog.New(slog.NewJSONHandler(io.Discard, nil)))(full), nil)
	})
}

func BenchmarkRealIP(b *testing.B) {
	trusted := netip.MustParsePrefix("10.0.0.0/8")
	b.Run("untrusted peer", func(b *testing.B) { bench(b, middleware.RealIP(pylon.Trust{})(bare), nil) })
	b.Run("XFF 3 hops", func(b *testing.B) {
		bench(b, middleware.RealIP(pylon.Trust{Proxies: []netip.Prefix{trusted}})(bare), map[string]string{"X-Forwarded-For": "203.0.113.9, 10.1.1.1, 10.2.2.2"})
	})
	b.Run("XFF 1000 entries", func(b *testing.B) {
		bench(b, middleware.RealIP(pylon.Trust{Proxies: []netip.Prefix{trusted}})(bare), map[string]string{"X-Forwarded-For": strings.Repeat("10.1.1.1, ", 999) + "10.1.1.1"})
	})
	b.Run("Forwarded", func(b *testing.B) {
		h := middleware.RealIP(pylon.Trust{Proxies: []netip.Prefix{trusted}, Header: pylon.Forwarded})(bare)
		bench(b, h, map[string]string{"Forwarded": `for="[2001:db8::1]:4711";proto=https, for=10.2.2.2`})
	})
}

func BenchmarkCORS(b *testing.B) {
	h := middleware.CORS(middleware.CORSOptions{AllowedOrigins: []string{"https://app.example.com"}, AllowedHeaders: []string{"Authorization"}})(bare)
	b.Run("no origin", func(b *testing.B) { bench(b, h, nil) })
	b.Run("allowed origin", func(b *testing.B) { bench(b, h, map[string]string{"Origin": "https://app.example.com"}) })
	b.Run("preflight", func(b *testing.B) {
		req := map[string]string{"Origin": "https://app.example.com", "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"}
		hp := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { r.Method = "OPTIONS"; h.ServeHTTP(w, r) })
		bench(b, hp, req)
	})
}

func BenchmarkBodyLimit(b *testing.B) { bench(b, middleware.BodyLimit(1<<20)(bare), nil) }

func BenchmarkTimeout(b *testing.B) { bench(b, middleware.Timeout(time.Minute)(bare), nil) }

func BenchmarkSecureHeaders(b *testing.B) {
	bench(b, middleware.SecureHeaders(middleware.SecureHeadersOptions{})(bare), nil)
}

func BenchmarkHeaders(b *testing.B) {
	h := middleware.Headers(middleware.HeadersOptions{
		Request:  middleware.HeaderRules{Set: map[string]string{"X-Gateway": "pylon"}},
		Response: middleware.HeaderRules{Remove: []string{"X-Internal"}},
	})(bare)
	bench(b, h, nil)
}

func BenchmarkDefaultChain(b *testing.B) {
	chain := middleware.New(
		middleware.RequestID,
		middleware.Recover(slog.New(slog.DiscardHandler)),
		middleware.AccessLog(slog.New(slog.NewJSONHandler(io.Discard, nil))),
		middleware.RealIP(pylon.Trust{Proxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}),
	)
	b.Run("JSON log to io.Discard", func(b *testing.B) {
		bench(b, chain.Then(bare), map[string]string{"X-Forwarded-For": "203.0.113.9"})
	})
	quiet := middleware.New(
		middleware.RequestID,
		middleware.Recover(slog.New(slog.DiscardHandler)),
		middleware.AccessLog(slog.New(slog.DiscardHandler)),
		middleware.RealIP(pylon.Trust{Proxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}),
	)
	b.Run("log discarded by level", func(b *testing.B) {
		bench(b, quiet.Then(bare), map[string]string{"X-Forwarded-For": "203.0.113.9"})
	})
}
