package middleware

import (
	"math/rand/v2"
	"net/http"
	"unsafe"

	"github.com/pylon-gateway/pylon"
)

// RequestIDHeader is the header that carries the request ID, on the request
// to the upstream and on the response to the client.
const RequestIDHeader = "X-Request-Id"

// MaxRequestIDLength is the longest incoming request ID that [RequestID]
// accepts.
const MaxRequestIDLength = 128

// RequestID is a middleware that gives every request an ID.
//
// It accepts a well-formed incoming X-Request-Id (1 to [MaxRequestIDLength]
// characters from A-Z a-z 0-9 and - _ . : + / =); otherwise (missing,
// too long, other characters, several values) it generates a new one: 32
// lowercase hex digits from 128 random bits. The ID is set on the request
// (so a proxied upstream receives it), on the response, and in the
// request's pylon.RequestInfo, so that problem responses and access-log
// lines carry it. Outside a Gateway it puts a new RequestInfo into the
// request's context.
//
// A W3C traceparent header passes through untouched: tracing is the
// observe package's business.
func RequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		vals := r.Header[RequestIDHeader]
		if len(vals) != 1 || !validRequestID(vals[0]) {
			vals = newRequestID()
			r.Header[RequestIDHeader] = vals
		}
		w.Header()[RequestIDHeader] = vals
		info := pylon.Info(r.Context())
		if info == nil {
			info = &pylon.RequestInfo{}
			r = r.WithContext(pylon.NewContext(r.Context(), info))
		}
		info.RequestID = vals[0]
		next.ServeHTTP(w, r)
	})
}

func validRequestID(s string) bool {
	if len(s) == 0 || len(s) > MaxRequestIDLength {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '-', c == '_', c == '.', c == ':', c == '+', c == '/', c == '=':
		default:
			return false
		}
	}
	return true
}

// idBox holds a generated ID and the one-element header value slice that
// refers to it, so that generating an ID costs one allocation.
type idBox struct {
	vals [1]string
	buf  [32]byte
}

// newRequestID returns a header value holding a fresh ID. The random bits
// come from math/rand/v2's ChaCha8-based global source: IDs must be unique,
// not secret.
func newRequestID() []string {
	const hex = "0123456789abcdef"
	b := new(idBox)
	hi, lo := rand.Uint64(), rand.Uint64()
	for i := 15; i >= 0; i-- {
		b.buf[i] = hex[hi&0xf]
		hi >>= 4
		b.buf[16+i] = hex[lo&0xf]
		lo >>= 4
	}
	// b.buf is never written again, so the string may share it.
	b.vals[0] = unsafe.String(&b.buf[0], len(b.buf))
	return b.vals[:1:1]
}
