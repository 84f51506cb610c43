package pylon

import (
	"net/http"
	"net/netip"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// MaxForwardedHops is how many forwarding-header entries are read, from the
// right, before the walk stops: a client cannot make the gateway do more
// work by sending a longer header.
const MaxForwardedHops = 32

// ForwardedHeader names the header whose client address is believed behind a
// trusted proxy.
type ForwardedHeader int

const (
	// XForwardedFor reads X-Forwarded-For for the address, and
	// X-Forwarded-Proto and X-Forwarded-Host for the scheme and host (the
	// default).
	XForwardedFor ForwardedHeader = iota
	// Forwarded reads the RFC 7239 Forwarded header: the address from the
	// for= parameters, the scheme and host from the proto= and host= of
	// the rightmost element (the one the nearest proxy added).
	Forwarded
)

// Trust is the one trust setting: which peers are proxies whose forwarding
// headers are believed, and which header they set. The Gateway applies it
// once per request (Options.Trust); every package reads the decision from
// RequestInfo (ClientIP, Scheme, Host, PeerTrusted) instead of parsing
// forwarding headers again. The zero Trust believes no peer.
type Trust struct {
	// Proxies are the networks of the proxies in front of the gateway. Nil
	// means none: the client is always the connection's peer, and the
	// forwarding headers a client sends are replaced, never extended.
	Proxies []netip.Prefix
	// Header is the one header read behind a trusted proxy. Zero means
	// X-Forwarded-For (with X-Forwarded-Proto and X-Forwarded-Host). Only
	// one family is read, the one your proxies set: a proxy that sets one
	// passes a client's forged copy of the other untouched, so upstream the
	// gateway extends only the family it read and replaces the other from
	// its decision, as it does for an untrusted peer. Client-IP headers no
	// Trust reads (X-Real-IP, True-Client-IP, ...) are never forwarded.
	Header ForwardedHeader
}

// trusts reports whether ip is in one of t's networks.
func (t *Trust) trusts(ip netip.Addr) bool {
	for _, p := range t.Proxies {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// Identify records in info who r's client is under t, unless info already
// holds a decision (the Gateway's): the peer's address and whether it is a
// trusted proxy (PeerTrusted), the client's address (ClientIP), and the
// scheme and host the client used (Scheme, Host).
//
// The client address is the connection's peer (r.RemoteAddr), unless that
// peer is trusted: then it is read from the forwarding header, right to
// left, skipping entries that are themselves trusted; the first untrusted
// address is the client. If every entry is trusted, the leftmost one is the
// client. An entry that does not parse (garbage, "unknown", an obfuscated
// RFC 7239 identifier) stops the walk: the client is then the last address
// that was believed. At most [MaxForwardedHops] entries are read. Addresses
// are parsed with net/netip: IPv4-mapped IPv6 addresses are unmapped, IPv6
// zones dropped, and ports ignored.
//
// Scheme is "https" when the connection is TLS, else "http"; behind a
// trusted peer, a forwarded "http" or "https" replaces it. Host is r.Host;
// behind a trusted peer, a forwarded host that is a valid host replaces it.
// Of a forwarded scheme or host, the rightmost value is read: the one the
// trusted peer set or appended, never one a client put in front of it.
//
// Identify is idempotent: the first decision for a request stands, so a
// middleware that calls it inside a Gateway changes nothing.
func (t Trust) Identify(info *RequestInfo, r *http.Request) {
	if info.identified {
		return
	}
	info.identified = true
	info.Scheme = "http"
	if r.TLS != nil {
		info.Scheme = "https"
	}
	info.Host = r.Host
	peer := remoteAddr(r.RemoteAddr)
	info.ClientIP = peer
	if !peer.IsValid() || !t.trusts(peer) {
		info.PeerTrusted = false
		return
	}
	info.PeerTrusted = true
	info.fwdHeader = t.Header

	var hops [MaxForwardedHops]string
	var n int
	var proto, host string
	if t.Header == Forwarded {
		n, proto, host = forwardedFor(r.Header["Forwarded"], &hops)
	} else {
		n = xffHops(r.Header["X-Forwarded-For"], &hops)
		proto = lastValue(r.Header["X-Forwarded-Proto"])
		host = lastValue(r.Header["X-Forwarded-Host"])
	}
	switch {
	case strings.EqualFold(proto, "https"):
		info.Scheme = "https"
	case strings.EqualFold(proto, "http"):
		info.Scheme = "http"
	}
	if host != "" && validHost(host) {
		info.Host = host
	}
	ip := peer
	for i := 0; i < n; i++ { // hops[0] is the rightmost entry
		hop, ok := parseHop(hops[i])
		if !ok {
			break
		}
		ip = hop
		if !t.trusts(ip) {
			break
		}
	}
	info.ClientIP = ip
}

// remoteAddr parses a RemoteAddr ("1.2.3.4:5", "[::1]:5" or a bare address,
// as some test servers set), unmapped and without zone.
func remoteAddr(s string) netip.Addr {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap().WithZone("")
	}
	if a, ok := parseHop(s); ok {
		return a
	}
	return netip.Addr{}
}

// lastValue returns the last comma-separated element of the last line,
// trimmed: the value the nearest proxy, the trusted one, set or appended. A
// client's own value to the left of it is never read.
func lastValue(lines []string) string {
	if len(lines) == 0 {
		return ""
	}
	v := lines[len(lines)-1]
	return strings.TrimSpace(v[strings.LastIndexByte(v, ',')+1:])
}

// validHost reports whether h is a plausible Host value (RFC 9110 §7.2:
// uri-host [":" port]): no spaces, slashes, controls or other delimiters a
// cache key or a redirect could be confused by.
func validHost(h string) bool {
	if len(h) > 255 {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("-._~:[]!$&'()*+=%", c) >= 0:
		default:
			return false
		}
	}
	return true
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
// Forwarded elements, the rightmost first, and returns the proto= and host=
// of the rightmost element. An element without for= yields an empty entry
// (which stops the walk); an element that does not parse yields a
// malformed entry (which stops it too). Elements are read from the right,
// so that a client's malformed element (an unterminated quote, a stray
// token) hides only what is to its left, never the element a trusted proxy
// appended after it on the same line.
func forwardedFor(lines []string, hops *[MaxForwardedHops]string) (n int, proto, host string) {
	for l := len(lines) - 1; l >= 0 && n < len(hops); l-- {
		s := lines[l]
		for strings.TrimSpace(s) != "" && n < len(hops) {
			e, before, ok := lastForwardedElement(s)
			if !ok {
				hops[n] = "\x00" // unparseable hop
				return n + 1, proto, host
			}
			if n == 0 {
				proto, host = e.proto, e.host
			}
			hops[n] = e.forVal
			n++
			s = s[:before]
		}
	}
	return n, proto, host
}

// lastForwardedElement parses the rightmost element of s: the shortest
// suffix after a comma that is one whole element (a comma may stand in a
// quoted string, so a suffix that does not parse is extended to the comma
// before). before is where the element's comma is (0 for the first).
func lastForwardedElement(s string) (e fwdElement, before int, ok bool) {
	for i := strings.LastIndexByte(s, ','); ; i = strings.LastIndexByte(s[:i], ',') {
		if el, rest, ok := forwardedElement(s[i+1:]); ok && strings.TrimSpace(rest) == "" {
			return el, max(i, 0), true
		}
		if i < 0 {
			return fwdElement{}, 0, false
		}
	}
}

// fwdElement is the parameters of one Forwarded element that matter here.
type fwdElement struct{ forVal, proto, host string }

// forwardedElement parses one element (pairs separated by ';') from the front
// of s and returns its parameters, the input after the element's comma, and
// whether it parsed.
func forwardedElement(s string) (e fwdElement, rest string, ok bool) {
	for {
		s = strings.TrimLeft(s, " \t")
		eq := strings.IndexByte(s, '=')
		if eq <= 0 {
			return e, "", false
		}
		name := strings.TrimSpace(s[:eq])
		if !httpguts.ValidHeaderFieldName(name) { // a token (RFC 7239 §4), as a field name is
			return e, "", false
		}
		s = s[eq+1:]
		var val string
		if strings.HasPrefix(s, `"`) {
			end := 1
			for end < len(s) && s[end] != '"' {
				if s[end] == '\\' { // quoted-pair: not part of any address
					return e, "", false
				}
				end++
			}
			if end == len(s) {
				return e, "", false
			}
			val, s = s[1:end], s[end+1:]
		} else {
			end := strings.IndexAny(s, ";, \t")
			if end < 0 {
				end = len(s)
			}
			val, s = s[:end], s[end:]
		}
		switch {
		case strings.EqualFold(name, "for"):
			e.forVal = val
		case strings.EqualFold(name, "proto"):
			e.proto = val
		case strings.EqualFold(name, "host"):
			e.host = val
		}
		s = strings.TrimLeft(s, " \t")
		if s == "" {
			return e, "", true
		}
		switch s[0] {
		case ';':
			s = s[1:]
		case ',':
			return e, s[1:], true
		default:
			return e, "", false
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

// isClientIPHeader reports whether k is a header some servers read as the
// client's address (or scheme, port, prefix) and that no Trust reads. They
// are never forwarded, from any peer: a trusted proxy that does not set one
// passes a client's forged copy untouched.
func isClientIPHeader(k string) bool {
	switch k {
	case "X-Real-Ip", "True-Client-Ip", "Cf-Connecting-Ip", "X-Client-Ip",
		"X-Cluster-Client-Ip", "Fastly-Client-Ip", "X-Original-Forwarded-For",
		"X-Forwarded", "Forwarded-For", "X-Forwarded-Port", "X-Forwarded-Prefix",
		"X-Forwarded-Server", "X-Forwarded-Ssl", "X-Forwarded-Scheme", "X-Url-Scheme",
		"Front-End-Https":
		return true
	}
	return false
}
