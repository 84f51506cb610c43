package middleware

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/pylon-gateway/pylon"
)

// AccessLogOptions configure [AccessLogWithOptions].
type AccessLogOptions struct {
	// Logger receives the lines. Nil means slog.Default().
	Logger *slog.Logger
	// Level is the level of each line. Zero means slog.LevelInfo.
	Level slog.Level
	// Message is the message of each line. Empty means "request".
	Message string
	// Query adds the raw query string to each line. Zero leaves it out:
	// queries often carry tokens and personal data.
	Query bool
	// Skip, when set, is asked before each request; true means no line
	// (health checks, for example). Nil logs every request.
	Skip func(r *http.Request) bool
}

// AccessLog returns a middleware that writes one structured line per request
// to logger (nil means slog.Default()) once the response is done. It is
// AccessLogWithOptions(AccessLogOptions{Logger: logger}).
func AccessLog(logger *slog.Logger) func(http.Handler) http.Handler {
	return AccessLogWithOptions(AccessLogOptions{Logger: logger})
}

// AccessLogWithOptions returns an access-log middleware configured by o.
//
// Each line has: request_id, client_ip, method, host, path (and query when
// asked), route, status, bytes_in (request body bytes read), bytes_out,
// duration, and, when a later stage recorded them in the request's
// pylon.RequestInfo, backend, target, upstream_status, upstream_duration,
// attempts, grpc_service, grpc_method and grpc_status (gRPC and gRPC-Web
// calls: the upstream's status, or the one the gateway answered with),
// subject, ratelimit (key, allowed, limit, remaining), breaker,
// cache and error. The record's time is when the response finished.
//
// A request whose client went away (RequestInfo.ClientCanceled, or a
// canceled context with nothing written) is logged with status 499; a
// hijacked connection (a protocol upgrade) with the upstream's status, or
// 101; a panic passing through with status 500 (place Recover before
// AccessLog so that it answers the client). Outside a Gateway the middleware
// puts a new RequestInfo into the request's context.
func AccessLogWithOptions(o AccessLogOptions) func(http.Handler) http.Handler {
	level := o.Level
	msg := o.Message
	if msg == "" {
		msg = "request"
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			logger := o.Logger
			if logger == nil {
				logger = slog.Default()
			}
			ctx := r.Context()
			if (o.Skip != nil && o.Skip(r)) || !logger.Enabled(ctx, level) {
				next.ServeHTTP(w, r)
				return
			}
			// The clock is read only when no earlier stage has: a Gateway
			// records the start of every request.
			info := pylon.Info(ctx)
			var start time.Time
			if info == nil {
				start = time.Now()
				info = &pylon.RequestInfo{Start: start}
				r = r.WithContext(pylon.NewContext(ctx, info))
			} else if start = info.Start; start.IsZero() {
				start = time.Now()
			}
			ww, shared := plainRecorder(w)
			if !shared {
				ww = WrapWriter(w)
			}
			var body *countingBody
			if r.Body != nil && r.Body != http.NoBody {
				body = &countingBody{ReadCloser: r.Body}
				r.Body = body
			}
			completed := false
			defer func() {
				status := ww.Status()
				switch {
				case !completed:
					if !ww.WroteHeader() {
						status = http.StatusInternalServerError
					}
				case info.ClientCanceled || (!ww.WroteHeader() && !ww.Hijacked() && r.Context().Err() == context.Canceled):
					status = pylon.StatusClientClosedRequest
				case ww.Hijacked() && !ww.WroteHeader():
					status = info.UpstreamStatus
					if status == 0 {
						status = http.StatusSwitchingProtocols
					}
				case status == 0:
					status = http.StatusOK
				}
				var in int64
				if body != nil {
					in = body.n
				}
				logLine(ctx, logger, level, msg, o.Query, r, info, status, in, ww.BytesWritten(), start)
			}()
			next.ServeHTTP(ww, r)
			completed = true
		})
	}
}

func logLine(ctx context.Context, logger *slog.Logger, level slog.Level, msg string, query bool,
	r *http.Request, info *pylon.RequestInfo, status int, in, out int64, start time.Time) {
	// One reading of the clock gives both the record's time and the
	// duration.
	end := time.Now()
	h := logger.Handler()
	// The record goes straight to the handler: Logger.LogAttrs would also
	// walk the stack for the caller's PC, which an access line never needs
	// and which costs more than the rest of the line's assembly.
	rec := slog.NewRecord(end, level, msg, 0)
	switch h.(type) {
	case *slog.JSONHandler, *slog.TextHandler:
		// log/slog's own handlers format the record before Handle returns
		// and keep nothing of it, so the attributes may live in a pooled
		// buffer. All but the first four go in one group with an empty
		// key, which handlers inline (the Handler contract): the line is
		// the same, and the record keeps every attribute in its own
		// fixed space instead of allocating room for the rest.
		buf := linePool.Get().(*lineAttrs)
		a := appendLine(buf.a[:0], &buf.rl, query, r, info, status, in, out, end.Sub(start))
		rec.AddAttrs(a[0], a[1], a[2], a[3], slog.Attr{Value: slog.GroupValue(a[4:]...)})
		_ = h.Handle(ctx, rec)
		*buf = lineAttrs{}
		linePool.Put(buf)
	default:
		handleFresh(ctx, h, rec, query, r, info, status, in, out, end.Sub(start))
	}
}

// handleFresh hands h a record with attributes of its own: another handler
// may keep the record (or its attribute values) after Handle returns. It is
// apart from logLine, and not inlined, so that its buffer is not on the
// stack in the common case.
//
//go:noinline
func handleFresh(ctx context.Context, h slog.Handler, rec slog.Record, query bool,
	r *http.Request, info *pylon.RequestInfo, status int, in, out int64, d time.Duration) {
	var stack [28]slog.Attr
	a := appendLine(stack[:0], new([4]slog.Attr), query, r, info, status, in, out, d)
	rec.AddAttrs(a...)
	_ = h.Handle(ctx, rec)
}

// lineAttrs holds the attributes of one access line.
type lineAttrs struct {
	a  [28]slog.Attr
	rl [4]slog.Attr // the ratelimit group
}

var linePool = sync.Pool{New: func() any { return new(lineAttrs) }}

// appendLine appends the attributes of an access line to a (at least five,
// request_id, client_ip, method, host and path first), with the ratelimit
// group's in rl.
func appendLine(a []slog.Attr, rl *[4]slog.Attr, query bool, r *http.Request, info *pylon.RequestInfo,
	status int, in, out int64, d time.Duration) []slog.Attr {
	ip := info.ClientIP
	if !ip.IsValid() {
		ip = remoteIP(r.RemoteAddr)
	}
	// The address goes in as its text, as slog.Any would have written it
	// (MarshalText: "" for no address) without boxing the netip.Addr and
	// going through encoding/json.
	var ipText string
	if ip.IsValid() {
		ipText = ip.String()
	}
	a = append(a,
		slog.String("request_id", info.RequestID),
		slog.String("client_ip", ipText),
		slog.String("method", r.Method),
		slog.String("host", r.Host),
		slog.String("path", r.URL.Path),
	)
	if query && r.URL.RawQuery != "" {
		a = append(a, slog.String("query", r.URL.RawQuery))
	}
	a = append(a,
		slog.String("route", info.Route),
		slog.Int("status", status),
		slog.Int64("bytes_in", in),
		slog.Int64("bytes_out", out),
		slog.Duration("duration", d),
	)
	if info.Backend != "" {
		a = append(a, slog.String("backend", info.Backend))
	}
	if info.Target != "" {
		a = append(a, slog.String("target", info.Target))
	}
	if info.Attempts != 0 {
		a = append(a,
			slog.Int("attempts", info.Attempts),
			slog.Int("upstream_status", info.UpstreamStatus),
			slog.Duration("upstream_duration", info.UpstreamDuration))
	}
	if info.GRPCService != "" {
		a = append(a, slog.String("grpc_service", info.GRPCService), slog.String("grpc_method", info.GRPCMethod))
		if info.HasGRPCStatus() {
			a = append(a, slog.Int("grpc_status", info.GRPCStatus))
		}
	}
	if info.Subject != "" {
		a = append(a, slog.String("subject", info.Subject))
		if info.SubjectScope != "" {
			a = append(a, slog.String("subject_scope", info.SubjectScope))
		}
	}
	if v := info.RateLimit; v.Decided {
		// A GroupValue of rl; slog.Group would box each attribute into an
		// []any and convert it back.
		*rl = [4]slog.Attr{
			slog.String("key", v.Key),
			slog.Bool("allowed", v.Allowed),
			slog.Int("limit", v.Limit),
			slog.Int("remaining", v.Remaining),
		}
		a = append(a, slog.Attr{Key: "ratelimit", Value: slog.GroupValue(rl[:]...)})
	}
	if info.Breaker != "" {
		a = append(a, slog.String("breaker", info.Breaker))
	}
	if info.Cache != "" {
		a = append(a, slog.String("cache", info.Cache))
	}
	if info.Split != "" {
		a = append(a, slog.String("split", info.Split))
	}
	if info.Error != "" {
		a = append(a, slog.String("error", info.Error))
	}
	return a
}

// remoteIP parses the address of a connection's peer ("host:port", or a
// bare host), dropping any IPv6 zone; the zero Addr when it cannot.
func remoteIP(addr string) netip.Addr {
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		return ap.Addr().Unmap().WithZone("")
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	return ip.Unmap().WithZone("")
}

// countingBody counts the request body bytes a handler reads.
type countingBody struct {
	io.ReadCloser
	n int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	return n, err
}
