package middleware

import (
	"net/http"
	"net/netip"

	"github.com/pylon-gateway/pylon"
)

// RealIP returns a middleware that decides who the client is under t (its
// address, scheme and host; see [pylon.Trust.Identify]) and records it in
// the request's pylon.RequestInfo, for rate limiting, caching and logs, where
// no Gateway does. Invalid prefixes panic at start-up. The request itself is
// not changed; where the context holds no RequestInfo a new one is put into
// it.
//
// Inside a Gateway it is not needed and changes nothing: the Gateway decides
// once per request from pylon.Options.Trust. A RealIP with trusted proxies
// of its own in a Gateway's chain is a configuration error (Gateway.Err),
// because two trust lists would give two answers; set them in Options.Trust.
//
// With chi's middleware.RealIP in front of a Gateway, r.RemoteAddr is
// already the address chi took from X-Real-IP or X-Forwarded-For, trusted
// or not: a client then chooses its own address, and a trusted-proxy list
// can be walked around. Do not use it in front of Pylon.
func RealIP(t pylon.Trust) func(http.Handler) http.Handler {
	t.Proxies = append([]netip.Prefix(nil), t.Proxies...)
	for i, p := range t.Proxies {
		if !p.IsValid() {
			panic("middleware: RealIP: invalid trusted prefix " + p.String())
		}
		t.Proxies[i] = p.Masked()
	}
	roles := pylon.Role(0)
	if len(t.Proxies) > 0 {
		roles = pylon.RoleClientIdentity
	}
	return func(next http.Handler) http.Handler {
		return &realIP{trust: t, next: next, roles: roles}
	}
}

type realIP struct {
	trust pylon.Trust
	next  http.Handler
	roles pylon.Role
}

func (h *realIP) Stage() pylon.Stage { return pylon.Stage{Name: "middleware.RealIP", Roles: h.roles} }

func (h *realIP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	info := pylon.Info(r.Context())
	if info == nil {
		info = &pylon.RequestInfo{}
		r = r.WithContext(pylon.NewContext(r.Context(), info))
	}
	h.trust.Identify(info, r)
	h.next.ServeHTTP(w, r)
}
