package breaker

import (
	"net/http"
)

// Transport returns a RoundTripper that sends requests through rt while
// the breaker admits them, and counts each response's status (or error).
// A refused request is not sent: RoundTrip returns a [*RefusedError] that
// wraps ErrOpen (or ErrTooManyRequests) and tells how long to wait. Nil rt
// means http.DefaultTransport.
//
// Only the response header is judged: an error while reading the body is
// not counted. To guard a pylon Backend, prefer [PerTarget] or the
// middleware, which answer refusals with 503 rather than as transport
// errors.
func (b *Breaker) Transport(rt http.RoundTripper) http.RoundTripper {
	if rt == nil {
		rt = http.DefaultTransport
	}
	return &transport{b: b, rt: rt}
}

type transport struct {
	b  *Breaker
	rt http.RoundTripper
}

func (t *transport) RoundTrip(r *http.Request) (*http.Response, error) {
	var res *http.Response
	var err error
	ran, rerr := t.b.execute(func() error {
		res, err = t.rt.RoundTrip(r)
		status := 0
		if err == nil {
			status = res.StatusCode
		}
		return t.b.cfg.outcome(r, status, err)
	})
	if !ran {
		if r.Body != nil {
			r.Body.Close() // RoundTrip must close the body, even on errors
		}
		return nil, t.b.refusal(rerr)
	}
	return res, err
}
