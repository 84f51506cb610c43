package overload

import (
	"net/http"

	"github.com/pylon-gateway/pylon"
)

// Critical is a middleware that marks its route's requests as critical in
// RequestInfo.Critical. The limits of this package read the mark: they keep
// their last places (Limits.CriticalShare, AdaptiveOptions.CriticalShare)
// for critical requests and serve them first from their queues, so that when
// they shed they take the other routes' requests first. It must run before
// the Backend (route or group middleware); outside a Gateway, where there
// is no RequestInfo, it does nothing.
func Critical(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if info := pylon.Info(r.Context()); info != nil {
			info.Critical = true
		}
		next.ServeHTTP(w, r)
	})
}
