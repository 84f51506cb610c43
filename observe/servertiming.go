package observe

import (
	"net/http"
	"strconv"
	"time"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/middleware"
)

// ServerTiming is a middleware that adds a Server-Timing response header
// (W3C Server Timing) with the gateway's own time and, when the request was
// proxied, the upstream time, in milliseconds:
//
//	Server-Timing: gateway;dur=0.184, upstream;dur=12.530
//
// The header is added just before the response header is written, so
// gateway is the time from the request's arrival to that moment minus
// upstream, the time spent waiting for upstream response headers
// (pylon.RequestInfo.UpstreamDuration). Upstream Server-Timing entries are
// kept. It is opt-in: the figures tell a client how long the gateway and
// its upstreams took, which a public API may prefer to keep to itself.
func ServerTiming(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info := pylon.Info(r.Context())
		if info == nil {
			info = &pylon.RequestInfo{Start: time.Now()}
			r = r.WithContext(pylon.NewContext(r.Context(), info))
		} else if info.Start.IsZero() {
			info.Start = time.Now()
		}
		ww := middleware.WrapWriterWithOptions(w, middleware.WriterOptions{
			BeforeWriteHeader: func(_ int, h http.Header) {
				h.Add("Server-Timing", serverTiming(time.Since(info.Start), info))
			},
		})
		next.ServeHTTP(ww, r)
	})
}

func serverTiming(total time.Duration, info *pylon.RequestInfo) string {
	up := info.UpstreamDuration
	gw := max(total-up, 0)
	var buf [64]byte
	b := append(buf[:0], "gateway;dur="...)
	b = strconv.AppendFloat(b, float64(gw)/float64(time.Millisecond), 'f', 3, 64)
	if info.Attempts > 0 {
		b = append(b, ", upstream;dur="...)
		b = strconv.AppendFloat(b, float64(up)/float64(time.Millisecond), 'f', 3, 64)
	}
	return string(b)
}
