package traffic

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/pylon-gateway/pylon"
)

// FaultOptions configures [Fault]. The zero value injects nothing.
type FaultOptions struct {
	// DelayPercent is the share of requests (0 to 100) delayed by Delay
	// before they go on. Zero means none.
	DelayPercent float64
	// Delay is the delay added. Zero means none.
	Delay time.Duration
	// AbortPercent is the share of requests (0 to 100) answered with
	// AbortStatus instead of being served. Zero means none.
	AbortPercent float64
	// AbortStatus is the status aborted requests are answered with, as a
	// problem document. Zero means 503.
	AbortStatus int
	// Header, when set, limits faults to requests that carry this header
	// (with any value); the percentages then apply to those requests.
	// Empty means every request is eligible.
	Header string
}

// Fault returns a middleware that injects faults for resilience tests: it
// delays DelayPercent of the requests by Delay (ending early, and not
// serving, when the client goes away), and answers AbortPercent of them
// with AbortStatus. A request may be delayed, then aborted. It fails on
// percentages outside 0..100, a negative delay or a status outside
// 400..599.
func Fault(opts FaultOptions) (pylon.Middleware, error) {
	switch {
	case opts.DelayPercent < 0 || opts.DelayPercent > 100:
		return nil, fmt.Errorf("traffic: fault: DelayPercent %v is not in [0, 100]", opts.DelayPercent)
	case opts.AbortPercent < 0 || opts.AbortPercent > 100:
		return nil, fmt.Errorf("traffic: fault: AbortPercent %v is not in [0, 100]", opts.AbortPercent)
	case opts.Delay < 0:
		return nil, fmt.Errorf("traffic: fault: negative Delay %v", opts.Delay)
	case opts.AbortStatus != 0 && (opts.AbortStatus < 400 || opts.AbortStatus > 599):
		return nil, fmt.Errorf("traffic: fault: AbortStatus %d is not an error status", opts.AbortStatus)
	}
	if opts.AbortStatus == 0 {
		opts.AbortStatus = http.StatusServiceUnavailable
	}
	header := http.CanonicalHeaderKey(opts.Header)
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if header != "" && r.Header[header] == nil {
				next.ServeHTTP(w, r)
				return
			}
			if opts.Delay > 0 && hit(opts.DelayPercent) {
				t := time.NewTimer(opts.Delay)
				select {
				case <-t.C:
				case <-r.Context().Done():
					t.Stop()
					if errors.Is(r.Context().Err(), context.DeadlineExceeded) {
						// The route's deadline passed during the delay:
						// the client waits, and gets the gateway's 504
						// (DEADLINE_EXCEEDED for a gRPC call).
						pylon.Error(w, r, http.StatusGatewayTimeout, "The upstream service did not answer in time.")
						return
					}
					if info := pylon.Info(r.Context()); info != nil {
						info.ClientCanceled = true
					}
					return
				}
			}
			if hit(opts.AbortPercent) {
				if info := pylon.Info(r.Context()); info != nil {
					info.Error = "traffic: injected fault"
				}
				pylon.Error(w, r, opts.AbortStatus, "A fault was injected.")
				return
			}
			next.ServeHTTP(w, r)
		})
	}, nil
}

// MustFault is like Fault but panics on error.
func MustFault(opts FaultOptions) pylon.Middleware {
	m, err := Fault(opts)
	if err != nil {
		panic(err)
	}
	return m
}

// hit reports true for pct percent of calls.
func hit(pct float64) bool {
	return pct >= 100 || (pct > 0 && rand.Float64()*100 < pct)
}
