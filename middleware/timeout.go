package middleware

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/pylon-gateway/pylon"
)

// Timeout returns a middleware that gives each request a deadline d from
// now (or the request context's own deadline, when that is earlier; d <= 0
// means the context's deadline alone, and no deadline means no timeout).
//
// The next handler runs on the request's goroutine with a context that
// ends at the deadline. If the deadline passes before the handler has
// started its response, the client gets a 504 problem response at once
// (flushed, so a handler that ignores its context does not delay it), and
// everything the handler writes afterwards is dropped: its Write and Hijack
// calls return http.ErrHandlerTimeout. If the response had already started
// (a stream), it is left to the handler, whose context still ends. Unlike
// http.TimeoutHandler, nothing is buffered: streaming, flushing and
// upgrades work as without the middleware. Timeout returns only once the
// handler has returned, so no goroutine outlives the request.
//
// A client that cancels is not a timeout: no 504 is written.
func Timeout(d time.Duration) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ctx := r.Context()
			var cancel context.CancelFunc
			if d > 0 {
				ctx, cancel = context.WithTimeout(ctx, d)
				defer cancel()
			} else if _, ok := ctx.Deadline(); !ok {
				next.ServeHTTP(w, r)
				return
			}
			var id string
			if info := pylon.Info(ctx); info != nil {
				id = info.RequestID // read now: the timer must not touch info
			}
			g := &guard{h: w.Header().Clone()}
			if g.h == nil {
				g.h = http.Header{}
			}
			ww := wrap(w, rw{g: g})
			method := r.Method
			fired := make(chan struct{})
			stop := context.AfterFunc(ctx, func() {
				defer close(fired)
				if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
					return // client went away, or the handler returned
				}
				g.mu.Lock()
				defer g.mu.Unlock()
				b := ww.base()
				if b.wrote || b.hijacked {
					return
				}
				g.timedOut = true
				// A bare request: the handler's goroutine may still be
				// using r and its RequestInfo.
				pylon.WriteProblem(w, &http.Request{Method: method}, pylon.Problem{
					Status:    http.StatusGatewayTimeout,
					Detail:    "the request took too long",
					RequestID: id,
				})
				_ = http.NewResponseController(w).Flush()
			})
			defer func() {
				if !stop() {
					<-fired
				}
				if g.timedOut {
					if info := pylon.Info(ctx); info != nil {
						info.Error = "timeout"
					}
				}
			}()
			next.ServeHTTP(ww, r.WithContext(ctx))
		})
	}
}
