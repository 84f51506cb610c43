package middleware

import (
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"

	"github.com/pylon-gateway/pylon"
)

// Recover returns a middleware that turns a panic in a later handler into a
// 500 problem response (with the request ID and no other detail) and logs it
// once, at level Error, with the panic value, the stack and the request ID.
// A nil logger means slog.Default().
//
// When the response had already started, the client's response cannot be
// changed: the panic is logged and the connection is aborted by re-panicking
// with http.ErrAbortHandler, so the client sees a truncated response rather
// than a complete-looking one. A panic with http.ErrAbortHandler itself is
// re-panicked untouched, as net/http expects, and not logged.
func Recover(logger *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ww, shared := plainRecorder(w)
			if !shared {
				ww = WrapWriter(w)
			}
			defer func() {
				v := recover()
				if v == nil {
					return
				}
				if v == http.ErrAbortHandler {
					panic(v)
				}
				l := logger
				if l == nil {
					l = slog.Default()
				}
				var id string
				info := pylon.Info(r.Context())
				if info != nil {
					id = info.RequestID
					info.Error = "panic"
				}
				l.LogAttrs(r.Context(), slog.LevelError, "panic serving request",
					slog.String("request_id", id),
					slog.String("method", r.Method),
					slog.String("path", r.URL.Path),
					slog.String("panic", fmt.Sprint(v)),
					slog.String("stack", string(debug.Stack())),
				)
				if ww.WroteHeader() || ww.Hijacked() {
					panic(http.ErrAbortHandler)
				}
				pylon.WriteProblem(ww, r, pylon.Problem{Status: http.StatusInternalServerError, RequestID: id})
			}()
			next.ServeHTTP(ww, r)
		})
	}
}
