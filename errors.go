package pylon

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// ProblemContentType is the media type of every error response Pylon writes
// (RFC 9457).
const ProblemContentType = "application/problem+json"

// Problem is an RFC 9457 problem details document. The zero value of each
// field leaves it out of the response, except Status and Title, which
// [WriteProblem] fills from the status code when they are empty.
//
// Detail is shown to the client: it must never hold internal detail such as
// upstream addresses, stack traces or token contents.
type Problem struct {
	// Type is a URI reference that identifies the problem type.
	// Empty means "about:blank" (the RFC's default) and is omitted.
	Type string `json:"type,omitempty"`
	// Title is a short summary. Empty means http.StatusText(Status).
	Title string `json:"title"`
	// Status is the HTTP status code. Zero means 500.
	Status int `json:"status"`
	// Detail is a human-readable explanation specific to this occurrence.
	Detail string `json:"detail,omitempty"`
	// Instance is a URI reference identifying this occurrence.
	Instance string `json:"instance,omitempty"`
	// RequestID is the request's ID (an RFC 9457 extension member). Empty
	// means the ID recorded in the request's RequestInfo, if any.
	RequestID string `json:"request_id,omitempty"`
}

// WriteProblem writes p as an application/problem+json response with the
// status p.Status. A gRPC or gRPC-Web call (see [IsGRPC], [IsGRPCWeb]) is
// answered in its own protocol instead: a trailers-only response (HTTP 200,
// grpc-status from [GRPCStatusForHTTP], grpc-message from p.Detail or
// p.Title, percent-encoded), with the headers already set on w, such as
// Retry-After, as response metadata. It fills Status, Title and RequestID when they are empty,
// and sets Cache-Control: no-store so that no cache keeps an error.
// Headers already set on w (Allow, Retry-After, WWW-Authenticate, ...) are
// kept; a Content-Length or Content-Encoding left by a handler is removed.
func WriteProblem(w http.ResponseWriter, r *http.Request, p Problem) {
	if p.Status == 0 {
		p.Status = http.StatusInternalServerError
	}
	if p.Title == "" {
		p.Title = http.StatusText(p.Status)
	}
	if p.RequestID == "" && r != nil {
		if info := Info(r.Context()); info != nil {
			p.RequestID = info.RequestID
		}
	}
	if r != nil {
		if info := Info(r.Context()); info != nil && info.Error == "" {
			info.Error = p.Title
		}
	}
	if IsGRPC(r) || IsGRPCWeb(r) {
		// A gRPC client cannot read problem+json: it is answered in its
		// own protocol, a trailers-only response with grpc-status.
		msg := p.Detail
		if msg == "" {
			msg = p.Title
		}
		writeGRPCStatus(w, r, p.Status, msg)
		return
	}
	body, err := json.Marshal(p)
	if err != nil { // unreachable: Problem holds only strings and an int
		body = []byte(`{"title":"Internal Server Error","status":500}`)
	}
	body = append(body, '\n')
	h := w.Header()
	h.Del("Content-Encoding")
	h.Del("Etag")
	h.Del("Last-Modified")
	h.Set("Content-Type", ProblemContentType)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(p.Status)
	if r == nil || r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

// Error writes a problem response with the given status and detail. It is
// shorthand for WriteProblem(w, r, Problem{Status: status, Detail: detail}).
func Error(w http.ResponseWriter, r *http.Request, status int, detail string) {
	WriteProblem(w, r, Problem{Status: status, Detail: detail})
}
