package pylon

import (
	"net/http"

	"github.com/pylon-gateway/pylon/internal/h1"
)

// roundTrip sends one attempt and relays the interim responses it receives
// (102 Processing, 103 Early Hints, RFC 8297) to w. 100 Continue is answered
// by net/http itself and 101 belongs to upgrades, so neither is relayed.
// The fields of an interim response are sent with it only; w's header is
// left as it was. Pylon's own transport relays them on this goroutine,
// before it returns; another transport through an httptrace.ClientTrace,
// which is stopped when RoundTrip returns (the transport may still be
// reading an interim response then).
func (b *Backend) roundTrip(w http.ResponseWriter, req *http.Request) (*http.Response, error) {
	if t, ok := b.transport.(*Transport); ok {
		return t.roundTripInterim(req, w)
	}
	req, stop := h1.WithInterim(w, req)
	defer stop()
	return b.transport.RoundTrip(req)
}

// roundTripInterim is RoundTrip relaying interim responses to w.
func (t *Transport) roundTripInterim(r *http.Request, w http.ResponseWriter) (*http.Response, error) {
	if r.URL.Scheme == SchemeH2C {
		r, stop := h1.WithInterim(w, r)
		defer stop()
		return t.std.RoundTrip(r)
	}
	return t.h1.RoundTripInterim(r, w)
}
