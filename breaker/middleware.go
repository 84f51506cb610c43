package breaker

import (
	"net/http"

	"github.com/pylon-gateway/pylon"
)

// Middleware returns next guarded by the breaker: while the breaker is
// closed (or half-open with a probe place free) requests reach next, and
// the status next answers is counted; while it is open they are answered
// 503 with a Retry-After header giving the time left open (or by
// Settings.Fallback), and next is not called. The state seen is recorded in
// RequestInfo.Breaker.
//
// Its type is func(http.Handler) http.Handler, so b.Middleware is a pylon
// middleware as it is.
func (b *Breaker) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.serve(next, w, r)
	})
}

func (b *Breaker) serve(next http.Handler, w http.ResponseWriter, r *http.Request) {
	info := pylon.Info(r.Context())
	sw := getWriter(w)
	ran, err := b.execute(func() error {
		if info != nil {
			info.Breaker = b.State().String()
		}
		next.ServeHTTP(sw, r)
		if info != nil && pylon.IsGRPC(r) {
			// Every gRPC answer is HTTP 200: judge by its grpc-status.
			status, err := info.GRPCOutcome(sw.status)
			return b.cfg.outcome(r, status, err)
		}
		return b.cfg.outcome(r, sw.status, nil)
	})
	putWriter(sw)
	if !ran {
		b.refuse(w, r, info, err)
	}
}
