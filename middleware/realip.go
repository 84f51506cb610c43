package middleware

import (
	"net/http"
	"net/netip"
	"strings"

	"github.com/pylon-gateway/pylon"
)

// MaxForwardedHops is how many forwarding-header entries RealIP reads, from
// the right, before it stops: a client cannot make it do more work by
// sending a longer header.
const MaxForwardedHops = 32

// ForwardedSource names the header RealIP reads behind a trusted proxy.
type ForwardedSource int

const (
	// XForwardedFor reads X-Forwarded-For (the default).
	XForwardedFor ForwardedSource = iota
	// Forwarded reads the RFC 7239 Forwarded header's for= parameters.
	Forwarded
)

// RealIPOptions configure [RealIPWithOptions].
type RealIPOptions struct {
	// Trusted are the networks of the proxies in front of the gateway whose
	// forwarding headers are believed. Empty means none: the client IP is
	// always the connection's peer.
	Trusted []netip.Prefix
	// Source is the one header read behind a trusted proxy. Zero means
	// X-Forwarded-For. Only one is read, the one your proxies set: a proxy
	// that sets one passes a client's forged copy of the other untouched.
	Source ForwardedSource
}

// RealIP returns a middleware that records the client's IP address in the
// request's pylon.RequestInfo (ClientIP), for rate limiting and logs. It is
// RealIPWithOptions(RealIPOptions{Trusted: trusted}).
func RealIP(trusted ...netip.Prefix) func(http.Handler) http.Handler {
	return RealIPWithOptions(RealIPOptions{Trusted: trusted})
}

// RealIPWithOptions returns a RealIP middleware configured by o.
//
// The client IP is the connection's peer (r.RemoteAddr), unless that peer is
// in a trusted network: then it is read from the forwarding header, right to
// left, skipping entries that are themselves trusted; the first untrusted
// address is the client. If every entry is trusted, the leftmost one is the
// client. An entry that does not parse (garbage, "unknown", an obfuscated
// RFC 7239 identifier) stops the walk: the client is then the last address
// that was believed. At most [MaxForwardedHops] entries are read.
//
// Addresses are parsed with net/netip: IPv4-mapped IPv6 addresses are
// unmapped, IPv6 zones dropped, and ports ("1.2.3.4:80", "[2001:db8::1]:80")
// ignored. Invalid prefixes panic at start-up. The request itself is not
// changed; outside a Gateway a new RequestInfo is put into its context.
func RealIPWithOptions(o RealIPOptions) func(http.Handler) http.Handler {
	trusted := make([]netip.Prefix, len(o.Trusted))
	for i, p := range o.Trusted {
		if !p.IsValid() {
			panic("middleware: RealIP: invalid trusted prefix " + p.String())
		}
		trusted[i] = p.Masked()
	}
	src := o.Source
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ip := clientIP(r, trusted, src)
			info := pylon.Info(r.Context())
			if info == nil {
				info = &pylon.RequestInfo{}
				r = r.WithContext(pylon.NewContext(r.Context(), info))
			}
			info.ClientIP = ip
			next.ServeHTTP(w, r)
		})
	}
}

func isTrusted(ip netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// clientIP applies RealIP's rule to r.
func clientIP(r *http.Request, trusted []netip.Prefix, src ForwardedSource) netip.Addr {
	ip := remoteIP(r.RemoteAddr)
	if !ip.IsValid() || !isTrusted(ip, trusted) {
		return ip
	}
	var hops [MaxForwardedHops]string
	var n int
	if src == Forwarded {
		n = forwardedFor(r.Header["Forwarded"], &hops)
	} else {
		n = xffHops(r.Header["X-Forwarded-For"], &hops)
	}
	for i := 0; i < n; i++ { // hops[0] is the rightmost entry
		hop, ok := parseHop(hops[i])
		if !ok {
			return ip
		}
		ip = hop
		if !isTrusted(ip, trusted) {
			return ip
		}
	}
	return ip
}

// xffHops fills hops with up to len(hops) X-Forwarded-For entries, the
// rightmost (nearest) first, reading header lines from the last.
func xffHops(lines []string, hops *[MaxForwardedHops]string) int {
	n := 0
	for l := len(lines) - 1; l >= 0; l-- {
		s := lines[l]
		for {
			i := strings.LastIndexByte(s, ',')
			hops[n] = strings.TrimSpace(s[i+1:])
			n++
			if n == len(hops) {
				return n
			}
			if i < 0 {
				break
			}
			s = s[:i]
		}
	}
	return n
}

// forwardedFor fills hops with the for= values of up to len(hops) RFC 7239
// Forwarded elements, the rightmost first. An element without for= yields
// an empty entry (which stops RealIP's walk); a malformed header yields a
// malformed entry at the point where parsing failed.
func forwardedFor(lines []string, hops *[MaxForwardedHops]string) int {
	// Elements are read left to right (quoted strings may hold commas) into a
	// ring of the last len(hops), then reversed.
	var ring [MaxForwardedHops]string
	total := 0
	push := func(v string) {
		ring[total%len(ring)] = v
		total++
	}
	for _, s := range lines {
		for len(s) > 0 {
			v, rest, ok := forwardedElement(s)
			if !ok {
				push("\x00") // malformed: unparseable hop
				break
			}
			push(v)
			s = rest
		}
	}
	n := min(total, len(hops))
	for i := 0; i < n; i++ {
		hops[i] = ring[(total-1-i)%len(ring)]
	}
	return n
}

// forwardedElement parses one element (pairs separated by ';') from the front
// of s and returns its for= value, the input after the element's comma, and
// whether it parsed.
func forwardedElement(s string) (forVal, rest string, ok bool) {
	for {
		s = strings.TrimLeft(s, " \t")
		eq := strings.IndexByte(s, '=')
		if eq <= 0 {
			return "", "", false
		}
		name := strings.TrimSpace(s[:eq])
		s = s[eq+1:]
		var val string
		if strings.HasPrefix(s, `"`) {
			end := 1
			for end < len(s) && s[end] != '"' {
				if s[end] == '\\' { // quoted-pair: not part of any address
					return "", "", false
				}
				end++
			}
			if end == len(s) {
				return "", "", false
			}
			val, s = s[1:end], s[end+1:]
		} else {
			end := strings.IndexAny(s, ";, \t")
			if end < 0 {
				end = len(s)
			}
			val, s = s[:end], s[end:]
		}
		if strings.EqualFold(name, "for") {
			forVal = val
		}
		s = strings.TrimLeft(s, " \t")
		if s == "" {
			return forVal, "", true
		}
		switch s[0] {
		case ';':
			s = s[1:]
		case ',':
			return forVal, s[1:], true
		default:
			return "", "", false
		}
	}
}

// parseHop parses one forwarding-header address: "1.2.3.4", "1.2.3.4:80",
// "2001:db8::1", "[2001:db8::1]", "[2001:db8::1]:80", with an optional IPv6
// zone, which is dropped.
func parseHop(s string) (netip.Addr, bool) {
	if s == "" || len(s) > 64 {
		return netip.Addr{}, false
	}
	if s[0] == '[' {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return netip.Addr{}, false
		}
		rest := s[end+1:]
		if rest != "" && (rest[0] != ':' || !isPort(rest[1:])) {
			return netip.Addr{}, false
		}
		s = s[1:end]
	} else if i := strings.IndexByte(s, ':'); i >= 0 && strings.Count(s, ":") == 1 {
		if !isPort(s[i+1:]) {
			return netip.Addr{}, false
		}
		s = s[:i]
	}
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, false
	}
	return ip.Unmap().WithZone(""), true
}

func isPort(s string) bool {
	if s == "" || len(s) > 5 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
