package pylon

import (
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"sync"
)

// withInterim returns req set up to relay the interim responses its round
// trip receives (102 Processing, 103 Early Hints, RFC 8297) to w, and a
// function to call once the round trip has returned, after which nothing
// more is relayed (the transport may still be reading an interim response
// while RoundTrip returns on a cancellation). 100 Continue is answered by
// net/http itself and 101 belongs to upgrades, so neither is relayed. The
// fields of an interim response are sent with it only; w's header is left
// as it was.
func withInterim(w http.ResponseWriter, req *http.Request) (*http.Request, func()) {
	var mu sync.Mutex
	done := false
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		if code == http.StatusContinue || code == http.StatusSwitchingProtocols {
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		if done {
			return nil
		}
		dst := w.Header()
		prev := make(map[string][]string, len(h))
		for k, vv := range h {
			prev[k] = dst[k]
			dst[k] = vv
		}
		w.WriteHeader(code)
		for k, vv := range prev {
			if vv == nil {
				delete(dst, k)
			} else {
				dst[k] = vv
			}
		}
		return nil
	}}
	return req.WithContext(httptrace.WithClientTrace(req.Context(), trace)), func() {
		mu.Lock()
		done = true
		mu.Unlock()
	}
}
