package h1

import (
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"sync"
)

// Interim is where a round trip relays the interim responses it reads: an
// http.ResponseWriter is one. 100 Continue (answered by the transport
// itself) and 101 Switching Protocols (an upgrade's final answer) are not
// relayed; every other 1xx is, with its fields, before the final response.
type Interim interface {
	Header() http.Header
	WriteHeader(code int)
}

// relayInterim writes interim response code, with fields h, to w, and
// leaves w's header as it was: the fields belong to that response alone.
func relayInterim(w Interim, code int, h http.Header) {
	if code == http.StatusContinue || code == http.StatusSwitchingProtocols {
		return
	}
	dst := w.Header()
	type field struct {
		k  string
		vv []string
	}
	var saved [8]field
	prev := saved[:0]
	for k, vv := range h {
		prev = append(prev, field{k, dst[k]})
		dst[k] = vv
	}
	w.WriteHeader(code)
	for _, p := range prev {
		if p.vv == nil {
			delete(dst, p.k)
		} else {
			dst[p.k] = p.vv
		}
	}
}

// WithInterim returns req set up to relay its interim responses to w
// through an httptrace.ClientTrace, for a transport other than this
// package's (which relays them itself, see RoundTripInterim), and a
// function to call once the round trip has returned: after it nothing more
// is relayed, though that transport may still be reading an interim
// response on a goroutine of its own.
func WithInterim(w Interim, req *http.Request) (*http.Request, func()) {
	var mu sync.Mutex
	done := false
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		mu.Lock()
		defer mu.Unlock()
		if !done {
			relayInterim(w, code, http.Header(h))
		}
		return nil
	}}
	return req.WithContext(httptrace.WithClientTrace(req.Context(), trace)), func() {
		mu.Lock()
		done = true
		mu.Unlock()
	}
}
