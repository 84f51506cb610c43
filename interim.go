package pylon

import (
	"net/http"

	"github.com/pylon-gateway/pylon/internal/h1"
)

// roundTrip sends one attempt and relays the interim responses it receives
// (102 Processing, 103 Early Hints, RFC 8297) to w. 100 Continue is answered
// by net/http itself and 101 belongs to upgrades, so neither is relayed.
// The fields of an interim response are sent with it only; w's header is
// left as it was. Pylon's own HTTP/1.1 transport relays them on this
// goroutine, before it returns; any other (a user's, or the standard one
// for h2c:// targets) through an httptrace.ClientTrace, which is stopped
// when RoundTrip returns (the transport may still be reading an interim
// response then).
func (b *Backend) roundTrip(w http.ResponseWriter, req *http.Request) (*http.Response, error) {
	if t, ok := b.transport.(*Transport); ok && req.URL.Scheme != SchemeH2C {
		return t.h1.RoundTripInterim(req, w)
	}
	req, stop := h1.WithInterim(w, req)
	defer stop()
	return b.transport.RoundTrip(req)
}
