package pylon

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// GRPCCode is a gRPC status code (google.golang.org/grpc/codes), as sent in
// the grpc-status trailer.
type GRPCCode int

// The gRPC status codes the gateway answers with or classifies by.
const (
	GRPCOK                 GRPCCode = 0
	GRPCCanceled           GRPCCode = 1
	GRPCUnknown            GRPCCode = 2
	GRPCInvalidArgument    GRPCCode = 3
	GRPCDeadlineExceeded   GRPCCode = 4
	GRPCNotFound           GRPCCode = 5
	GRPCPermissionDenied   GRPCCode = 7
	GRPCResourceExhausted  GRPCCode = 8
	GRPCUnimplemented      GRPCCode = 12
	GRPCInternal           GRPCCode = 13
	GRPCUnavailable        GRPCCode = 14
	GRPCDataLoss           GRPCCode = 15
	GRPCUnauthenticated    GRPCCode = 16
	grpcMaxCode            GRPCCode = 16
	grpcContentType                 = "application/grpc"
	grpcWebContentTypeBase          = "application/grpc-web"
)

// GRPCStatusForHTTP returns the gRPC status code a gateway answer with HTTP
// status code status is sent as, to a gRPC client. It follows grpc's
// "HTTP to gRPC Status Code Mapping" (400 INTERNAL, 401 UNAUTHENTICATED,
// 403 PERMISSION_DENIED, 404 UNIMPLEMENTED, 502 and 503 UNAVAILABLE), and
// is more precise where the gateway knows why it refused: 405 and 501
// UNIMPLEMENTED, 408 and 504 DEADLINE_EXCEEDED (the call's time ran out),
// 413, 429 and 431 RESOURCE_EXHAUSTED (a limit of the gateway's), 500
// INTERNAL; anything else is UNKNOWN.
func GRPCStatusForHTTP(status int) GRPCCode {
	switch status {
	case http.StatusOK:
		return GRPCOK
	case http.StatusBadRequest:
		return GRPCInternal
	case http.StatusUnauthorized:
		return GRPCUnauthenticated
	case http.StatusForbidden:
		return GRPCPermissionDenied
	case http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusNotImplemented:
		return GRPCUnimplemented
	case http.StatusRequestTimeout, http.StatusGatewayTimeout:
		return GRPCDeadlineExceeded
	case http.StatusRequestEntityTooLarge, http.StatusTooManyRequests, http.StatusRequestHeaderFieldsTooLarge:
		return GRPCResourceExhausted
	case http.StatusInternalServerError:
		return GRPCInternal
	case http.StatusBadGateway, http.StatusServiceUnavailable:
		return GRPCUnavailable
	}
	return GRPCUnknown
}

// IsGRPC reports whether r is a gRPC call: its Content-Type is
// application/grpc or a subtype of it (application/grpc+proto,
// application/grpc;charset=...). gRPC-Web calls (application/grpc-web...)
// are not gRPC calls; see [IsGRPCWeb].
func IsGRPC(r *http.Request) bool {
	return r != nil && grpcSubtype(contentType(r.Header), grpcContentType)
}

// IsGRPCWeb reports whether r is a gRPC-Web call: its Content-Type is
// application/grpc-web, application/grpc-web-text, or a subtype of either.
func IsGRPCWeb(r *http.Request) bool {
	if r == nil {
		return false
	}
	ct := contentType(r.Header)
	return grpcSubtype(ct, grpcWebContentTypeBase) || grpcSubtype(ct, grpcWebContentTypeBase+"-text")
}

func contentType(h http.Header) string {
	if v := h["Content-Type"]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// grpcSubtype reports whether ct is base, or base followed by '+' or ';'.
func grpcSubtype(ct, base string) bool {
	if len(ct) < len(base) || !strings.EqualFold(ct[:len(base)], base) {
		return false
	}
	return len(ct) == len(base) || ct[len(base)] == '+' || ct[len(base)] == ';'
}

// writeGRPCStatus answers a gRPC (or gRPC-Web) call with a trailers-only
// response: HTTP 200 and the status in the headers, no body. Headers
// already set on w (Retry-After, WWW-Authenticate) travel as response
// metadata; a Retry-After is also sent as grpc-retry-pushback-ms, which
// grpc-go's retry policy reads.
func writeGRPCStatus(w http.ResponseWriter, r *http.Request, status int, msg string) {
	code := GRPCStatusForHTTP(status)
	h := w.Header()
	for _, k := range [...]string{"Content-Length", "Content-Encoding", "Etag", "Last-Modified", "Trailer", "X-Content-Type-Options"} {
		delete(h, k)
	}
	ct := grpcContentType
	if IsGRPCWeb(r) {
		ct = contentType(r.Header)
	}
	h.Set("Content-Type", ct)
	h.Set("Cache-Control", "no-store")
	h.Set("Grpc-Status", strconv.Itoa(int(code)))
	if msg != "" {
		h.Set("Grpc-Message", EncodeGRPCMessage(msg))
	}
	if ra := h.Get("Retry-After"); ra != "" {
		if s, err := strconv.Atoi(ra); err == nil && s >= 0 {
			h.Set("Grpc-Retry-Pushback-Ms", strconv.FormatInt(int64(s)*1000, 10))
		}
	}
	if info := Info(r.Context()); info != nil {
		info.GRPCStatus = int(code)
		info.grpcStatusSet = true
		info.grpcGatewayStatus = status
	}
	w.WriteHeader(http.StatusOK)
}

// EncodeGRPCMessage percent-encodes msg for the grpc-message header, as
// PROTOCOL-HTTP2.md requires: bytes outside printable ASCII (0x20-0x7E),
// and '%', become %XX.
func EncodeGRPCMessage(msg string) string {
	clean := true
	for i := 0; i < len(msg); i++ {
		if c := msg[i]; c < 0x20 || c > 0x7e || c == '%' {
			clean = false
			break
		}
	}
	if clean {
		return msg
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(msg) + 8)
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if c < 0x20 || c > 0x7e || c == '%' {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// maxGRPCTimeout caps a grpc-timeout: 8 digits of hours is longer than any
// deadline a gateway needs to hold.
const maxGRPCTimeout = 100 * 365 * 24 * time.Hour

// ParseGRPCTimeout parses a grpc-timeout header value ("1S", "250m",
// "100000u": at most 8 digits and a unit of H, M, S, m, u or n).
func ParseGRPCTimeout(v string) (time.Duration, bool) {
	if len(v) < 2 || len(v) > 9 {
		return 0, false
	}
	n, err := strconv.ParseInt(v[:len(v)-1], 10, 64)
	if err != nil || n < 0 || v[0] == '+' || v[0] == '-' {
		return 0, false
	}
	var unit time.Duration
	switch v[len(v)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, false
	}
	if n > int64(maxGRPCTimeout/unit) {
		return maxGRPCTimeout, true
	}
	return time.Duration(n) * unit, true
}

// FormatGRPCTimeout formats d as a grpc-timeout value: the finest unit that
// holds it in 8 digits, rounded up so that the upstream never gets more time
// than is left. A d of zero or less is sent as "1n": the call is already
// out of time.
func FormatGRPCTimeout(d time.Duration) string {
	if d <= 0 {
		return "1n"
	}
	const most = 99999999 // eight digits, the most grpc-timeout allows
	units := [...]struct {
		d time.Duration
		c byte
	}{{time.Nanosecond, 'n'}, {time.Microsecond, 'u'}, {time.Millisecond, 'm'}, {time.Second, 'S'}, {time.Minute, 'M'}, {time.Hour, 'H'}}
	for _, u := range units {
		n := int64(d / u.d)
		if n <= most {
			// Truncated down: never promise the upstream more than is left.
			return strconv.FormatInt(max(n, 1), 10) + string(u.c)
		}
	}
	return strconv.Itoa(most) + "H"
}

// errClientDeadline is the cause of a request context whose deadline came
// from the client's grpc-timeout: when it fires, the call ran out of the
// time the client gave it, which says nothing about the target.
var errClientDeadline = errors.New("pylon: the client's grpc-timeout passed")

// grpcDeadline applies r's grpc-timeout to its context (a route's earlier
// deadline still wins). It returns r unchanged and a nil cancel when r is
// not a gRPC call with a valid grpc-timeout.
func grpcDeadline(r *http.Request) (*http.Request, context.CancelFunc) {
	v := r.Header["Grpc-Timeout"]
	if len(v) == 0 {
		return r, nil
	}
	d, ok := ParseGRPCTimeout(v[0])
	if !ok {
		return r, nil
	}
	parent := r.Context()
	binding := true
	if dl, ok := parent.Deadline(); ok && time.Until(dl) <= d {
		binding = false // the route's deadline comes first: the gateway's policy, not the client's
	}
	ctx, cancel := context.WithTimeoutCause(parent, d, errClientDeadline)
	if binding {
		ctx = context.WithValue(ctx, clientDeadlineKey{}, true)
	}
	return r.WithContext(ctx), cancel
}

// clientDeadlineOutcome reports whether a failed or reset attempt is the
// client's own outcome: its grpc-timeout has passed, or, when upstream
// reports that it gave up (a DEADLINE_EXCEEDED status, or a stream reset
// with CANCEL), the client's deadline is within slack of passing, since the
// upstream, told the deadline, times out first. Any other failure before
// the deadline, however close to it, is the target's.
func clientDeadlineOutcome(ctx context.Context, upstream bool) bool {
	if context.Cause(ctx) == errClientDeadline {
		return true
	}
	dl, ok := ctx.Deadline()
	if !upstream || !ok || ctx.Value(clientDeadlineKey{}) == nil {
		return false
	}
	return time.Until(dl) < deadlineSlack
}

// deadlineSlack is how close to the client's deadline an upstream's reset
// or DEADLINE_EXCEEDED is taken as the deadline's doing.
const deadlineSlack = 50 * time.Millisecond

// h2StreamError has the fields of net/http's HTTP/2 stream error, which
// converts itself to any struct of that shape (errors.As): the way to read
// the code of a stream reset without x/net.
type h2StreamError struct {
	StreamID uint32
	Code     uint32
	Cause    error
}

func (e h2StreamError) Error() string { return "http2 stream error" }

// h2ErrCodeCancel is HTTP/2's CANCEL error code (RFC 9113 §7).
const h2ErrCodeCancel = 0x8

// streamCanceled reports whether err is an HTTP/2 stream reset with CANCEL,
// what an upstream sends when it abandons a call.
func streamCanceled(err error) bool {
	var se h2StreamError
	return errors.As(err, &se) && se.Code == h2ErrCodeCancel
}

type clientDeadlineKey struct{}

// grpcMethod splits a gRPC path, "/package.Service/Method", into service
// and method; both are empty when the path has another shape.
func grpcMethod(path string) (service, method string) {
	if len(path) < 4 || path[0] != '/' {
		return "", ""
	}
	service, method, ok := strings.Cut(path[1:], "/")
	if !ok || service == "" || method == "" || strings.IndexByte(method, '/') >= 0 {
		return "", ""
	}
	return service, method
}

var grpcCodeNames = [...]string{"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
	"ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
	"UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"}

// String returns the code's name as gRPC and OpenTelemetry write it
// ("NOT_FOUND"), or "UNKNOWN" for a code outside the 17 gRPC defines.
func (c GRPCCode) String() string {
	if c < 0 || c > grpcMaxCode {
		return "UNKNOWN"
	}
	return grpcCodeNames[c]
}
