package middleware

import (
	"errors"
	"io"
	"net/http"
	"strconv"

	"github.com/pylon-gateway/pylon"
)

// BodyLimit returns a middleware that limits request bodies to n bytes and
// answers 413 Content Too Large (a problem response) to larger ones. n must
// be positive, or BodyLimit panics at start-up.
//
// A request whose Content-Length exceeds n is answered at once, without
// calling the next handler. A body of unknown length (chunked) can only be
// measured as it is read: the body the next handler sees returns an
// *http.MaxBytesError once more than n bytes arrive (the proxy maps that
// error to 413 itself). If the handler then writes an error response
// (status 400 or more, other than 413) or nothing at all, that response is
// replaced by the 413 problem; a response it had already started, or a
// success, is left alone. [IsBodyTooLarge] tells handlers the error apart.
func BodyLimit(n int64) func(http.Handler) http.Handler {
	if n <= 0 {
		panic("middleware: BodyLimit: limit must be positive, got " + strconv.FormatInt(n, 10))
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.ContentLength > n {
				tooLarge(w, r, n)
				return
			}
			if r.ContentLength >= 0 || r.Body == nil || r.Body == http.NoBody {
				// net/http never returns more than Content-Length bytes.
				next.ServeHTTP(w, r)
				return
			}
			lb := &limitedBody{rc: r.Body, left: n, limit: n}
			r.Body = lb
			ww := wrap(w, rw{})
			b := ww.base()
			b.intercept = func(status int) bool {
				if !lb.hit || status < 400 || status == http.StatusRequestEntityTooLarge {
					return false
				}
				tooLarge(b.w, r, n)
				b.status = http.StatusRequestEntityTooLarge
				return true
			}
			next.ServeHTTP(ww, r)
			if lb.hit && !b.wrote && !b.hijacked {
				b.intercept = nil
				tooLarge(ww, r, n)
			}
		})
	}
}

// IsBodyTooLarge reports whether err, from reading a request body, means the
// body was over a limit set by [BodyLimit] or http.MaxBytesReader.
func IsBodyTooLarge(err error) bool {
	var mbe *http.MaxBytesError
	return errors.As(err, &mbe)
}

func tooLarge(w http.ResponseWriter, r *http.Request, n int64) {
	// net/http closes the connection itself when a large unread body
	// remains.
	pylon.WriteProblem(w, r, pylon.Problem{
		Status: http.StatusRequestEntityTooLarge,
		Detail: "request body larger than " + strconv.FormatInt(n, 10) + " bytes",
	})
}

// limitedBody is http.MaxBytesReader that remembers it hit the limit.
type limitedBody struct {
	rc    io.ReadCloser
	left  int64
	limit int64
	hit   bool
	err   error
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	// Read one byte past the limit to tell "exactly n" from "more than n".
	if int64(len(p))-1 > b.left {
		p = p[:b.left+1]
	}
	n, err := b.rc.Read(p)
	if int64(n) <= b.left {
		b.left -= int64(n)
		b.err = err
		return n, err
	}
	n = int(b.left)
	b.left = 0
	b.hit = true
	b.err = &http.MaxBytesError{Limit: b.limit}
	return n, b.err
}

func (b *limitedBody) Close() error { return b.rc.Close() }
