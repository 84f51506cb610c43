package middleware

import (
	"context"
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
// calls return http.ErrHandlerTimeout. A gRPC or gRPC-Web call gets
// DEADLINE_EXCEEDED, trailers-only, as from every gateway error; a gRPC
// call's is sent when the handler returns, since over HTTP/2 it must end
// the stream. If the response had already started
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
			g := &guard{h: w.Header().Clone(), ctx: ctx}
			if g.h == nil {
				g.h = http.Header{}
			}
			// Read now, as the request ID: r's method, and its Content-Type,
			// by which a gRPC call is answered in gRPC.
			method, ct := r.Method, ""
			if v := r.Header["Content-Type"]; len(v) > 0 {
				ct = v[0]
			}
			g.onTimeout = func() {
				// A bare request: the handler's goroutine may still be
				// using r and its RequestInfo.
				bare := &http.Request{Method: method, Header: http.Header{"Content-Type": {ct}}}
				pylon.WriteProblem(w, bare, pylon.Problem{
					Status:    http.StatusGatewayTimeout,
					Detail:    "the request took too long",
					RequestID: id,
				})
				if !pylon.IsGRPC(bare) {
					// Not a gRPC call's: its trailers-only answer must end
					// the HTTP/2 stream with its headers, which net/http
					// does when the handler returns; flushed, they would
					// be headers without a status.
					_ = http.NewResponseController(w).Flush()
				}
			}
			ww := wrap(w, rw{g: g})
			fired := make(chan struct{})
			stop := context.AfterFunc(ctx, func() {
				defer close(fired)
				g.mu.Lock()
				defer g.mu.Unlock()
				g.expired(ww.base())
			})
			defer func() {
				if !stop() {
					<-fired
				}
				// The handler may have seen its context end and returned
				// before the timer's function was started; stop then
				// prevented it from running.
				g.mu.Lock()
				g.expired(ww.base())
				g.mu.Unlock()
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
