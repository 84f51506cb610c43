package ratelimit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	"github.com/pylon-gateway/pylon"
)

// KeyFunc derives the client key a request is counted under. ok is false
// when the request carries no key (no header, no subject); the middleware
// then applies its [MissingKey] policy. Keys from different KeyFuncs never
// collide: each kind starts with its own prefix ("ip:", "h:", "sub:",
// "route:").
type KeyFunc func(r *http.Request) (key string, ok bool)

// maxKeyLen bounds the length of a key taken from the request; longer values
// are replaced by a SHA-256 digest, so that a client cannot make a store
// keep large keys, and distinct long values stay distinct.
const maxKeyLen = 128

// ByIP keys requests by client IP address: IPv4 addresses as they are,
// IPv6 addresses grouped by their /64 prefix (one subscriber's network),
// IPv4-mapped IPv6 addresses as IPv4. The address is the one the Gateway
// decided in RequestInfo.ClientIP (from Options.Trust), or else the
// connection's peer from Request.RemoteAddr. It is ByIPPrefix(32, 64), and,
// like BySubject and ByRoute, a KeyFunc itself.
func ByIP(r *http.Request) (string, bool) { return byIP(r) }

var byIP = ByIPPrefix(32, 64)

// ByIPPrefix keys requests by the network of the client IP address: the
// first v4Bits bits of an IPv4 address and the first v6Bits bits of an IPv6
// address. Out-of-range values are clamped to 0..32 and 0..128. See [ByIP].
func ByIPPrefix(v4Bits, v6Bits int) KeyFunc {
	v4Bits = min(max(v4Bits, 0), 32)
	v6Bits = min(max(v6Bits, 0), 128)
	return func(r *http.Request) (string, bool) {
		addr, ok := clientAddr(r)
		if !ok {
			return "", false
		}
		var buf [64]byte
		b := append(buf[:0], "ip:"...)
		if addr.Is4() {
			if v4Bits < 32 {
				addr = netip.PrefixFrom(addr, v4Bits).Masked().Addr()
				b = addr.AppendTo(b)
				b = append(b, '/')
				b = strconv.AppendInt(b, int64(v4Bits), 10)
			} else {
				b = addr.AppendTo(b)
			}
		} else if v6Bits < 128 {
			addr = netip.PrefixFrom(addr, v6Bits).Masked().Addr()
			b = addr.AppendTo(b)
			b = append(b, '/')
			b = strconv.AppendInt(b, int64(v6Bits), 10)
		} else {
			b = addr.AppendTo(b)
		}
		return string(b), true
	}
}

// clientAddr returns the request's client address, unmapped and without
// zone: RequestInfo.ClientIP when set, else the host of RemoteAddr.
func clientAddr(r *http.Request) (netip.Addr, bool) {
	if info := pylon.Info(r.Context()); info != nil && info.ClientIP.IsValid() {
		return info.ClientIP.Unmap().WithZone(""), true
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr // a bare address, as some test servers set
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, false
	}
	return addr.Unmap().WithZone(""), true
}

// Case is how a header key's letter case is treated.
type Case int

const (
	// CaseSensitive keeps the header value as sent: "ABC" and "abc" are
	// different clients (right for API keys and tokens).
	CaseSensitive Case = iota
	// CaseInsensitive folds ASCII letters to lower case: "ABC" and "abc"
	// are the same client (right for names, e-mail domains, tenant IDs).
	CaseInsensitive
)

// ByHeader keys requests by the value of the named header (for example an
// API key), with surrounding spaces trimmed and letter case treated as c. A
// request without the header, or with an empty value, has no key. When the
// header appears several times, the first value counts. Values longer than
// 128 bytes are replaced by their SHA-256 digest.
func ByHeader(name string, c Case) KeyFunc {
	name = http.CanonicalHeaderKey(name)
	return func(r *http.Request) (string, bool) {
		vs := r.Header[name]
		if len(vs) == 0 {
			if r.Context().Value(probeKey{}) != nil {
				// NeedsSubject asks: the header is not what it probes.
				return "h:probe", true
			}
			return "", false
		}
		v := strings.TrimSpace(vs[0])
		if v == "" {
			return "", false
		}
		if c == CaseInsensitive {
			v = strings.ToLower(v)
		}
		return boundedKey("h:", v), true
	}
}

// BySubject keys requests by the authenticated subject recorded in
// RequestInfo.Subject (the JWT "sub" claim, set by jwtauth; the key owner,
// set by apikey), qualified by its SubjectScope when it has one (see
// RequestInfo.SubjectKey). A request without a subject has no key, and is
// refused under the default MissingKey policy: 401 with WWW-Authenticate
// when it is not authenticated, 403 when its authentication named no
// subject. A limit keyed by subject must run
// after the authentication: in a Gateway, Err reports a route whose chain
// has it before jwtauth.Require or apikey.Require.
func BySubject(r *http.Request) (string, bool) {
	info := pylon.Info(r.Context())
	if info == nil || info.Subject == "" {
		return "", false
	}
	return boundedKey("sub:", info.SubjectKey()), true
}

// ByRoute keys requests by the name of the matched route recorded in
// RequestInfo.Route, falling back to the request's ServeMux pattern, so that
// a limit applies to a route as a whole. Composed with another key (see
// [Compose]) it gives each client a budget per route.
func ByRoute(r *http.Request) (string, bool) {
	route := r.Pattern
	if info := pylon.Info(r.Context()); info != nil && info.Route != "" {
		route = info.Route
	}
	if route == "" {
		return "", false
	}
	return boundedKey("route:", route), true
}

// Compose keys requests by all of keys together, for example a budget per
// client and route: Compose(ByIP, ByRoute). A request has a key only when
// every part has one.
func Compose(keys ...KeyFunc) KeyFunc {
	keys = append([]KeyFunc(nil), keys...)
	return func(r *http.Request) (string, bool) {
		var b strings.Builder
		for _, k := range keys {
			part, ok := k(r)
			if !ok {
				return "", false
			}
			// Length-prefixed, so that parts holding the separator
			// cannot make two different pairs look alike.
			b.WriteString(strconv.Itoa(len(part)))
			b.WriteByte(':')
			b.WriteString(part)
			b.WriteByte('|')
		}
		return b.String(), true
	}
}

// boundedKey returns prefix+v, or prefix plus a digest of v when v is long.
func boundedKey(prefix, v string) string {
	if len(v) <= maxKeyLen {
		return prefix + v
	}
	sum := sha256.Sum256([]byte(v))
	return prefix + "sha256:" + hex.EncodeToString(sum[:])
}

// probeKey marks the requests NeedsSubject asks key functions about.
type probeKey struct{}

// NeedsSubject reports whether key keys by the authenticated subject
// (pylon.RequestInfo.SubjectKey): asked about a request without a subject
// and the same request with one, it finds a key only for the second, or
// another key for it. BySubject and any Compose that includes it do; ByIP,
// ByIPPrefix, ByRoute and ByHeader do not (ByHeader answers these probes
// as if its header were there). The middleware of this package and
// overload.PerClient ask it at construction: a limit keyed by subject
// declares pylon.RoleNeedsSubject, so that the Gateway refuses it before
// the route's authentication, and this package's answers a request
// without a key 401 by default.
func NeedsSubject(key KeyFunc) (yes bool) {
	defer func() {
		if recover() != nil {
			yes = false
		}
	}()
	probe := func(subject string) (string, bool) {
		r, _ := http.NewRequest(http.MethodGet, "http://probe.invalid/", nil)
		r.RemoteAddr = "192.0.2.1:1"
		info := &pylon.RequestInfo{ClientIP: netip.MustParseAddr("192.0.2.1"), Route: "probe", Subject: subject}
		if subject != "" {
			info.Auth = "probe"
		}
		ctx := context.WithValue(pylon.NewContext(r.Context(), info), probeKey{}, true)
		r = r.WithContext(ctx)
		r.Pattern = "GET /"
		return key(r)
	}
	k0, ok0 := probe("")
	k1, ok1 := probe("probe")
	return ok1 && (!ok0 || k0 != k1)
}
