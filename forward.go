package pylon

import (
	"net"
	"net/http"
	"net/url"
	"strings"
)

// isHopHeader reports whether k is a hop-by-hop header of RFC 9110 §7.6.1
// or one of its historical companions: they describe one connection and are
// never forwarded.
func isHopHeader(k string) bool {
	switch k {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
		"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade":
		return true
	}
	return false
}

// headerHasToken reports whether the comma-separated values contain token,
// compared case-insensitively.
func headerHasToken(values []string, token string) bool {
	for _, v := range values {
		for v != "" {
			var t string
			t, v, _ = strings.Cut(v, ",")
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// copyRequestHeader copies src into dst without the hop-by-hop headers and
// without the headers that src's Connection header names. It runs before the
// gateway sets any header of its own, so a client cannot use Connection to
// strip what the gateway adds. Value slices are shared with src: the
// upstream request's header is only ever Set or deleted, never appended to.
func copyRequestHeader(dst, src http.Header) {
	conn := src["Connection"]
	for k, vv := range src {
		if isHopHeader(k) || headerHasToken(conn, k) {
			continue
		}
		dst[k] = vv
	}
	// "TE: trailers" is the one TE value a proxy forwards: gRPC needs it.
	if te := src["Te"]; te != nil && headerHasToken(te, "trailers") {
		dst["Te"] = []string{"trailers"}
	}
}

// removeHopByHop deletes hop-by-hop headers, and the headers named in
// Connection, from a response header.
func removeHopByHop(h http.Header) {
	if conn := h["Connection"]; conn != nil {
		for _, v := range conn {
			for v != "" {
				var t string
				t, v, _ = strings.Cut(v, ",")
				if t = strings.TrimSpace(t); t != "" {
					h.Del(t)
				}
			}
		}
	}
	for k := range h {
		if isHopHeader(k) {
			delete(h, k)
		}
	}
}

var (
	protoHTTP  = []string{"http"}
	protoHTTPS = []string{"https"}
)

// setForwarded rebuilds X-Forwarded-For, X-Forwarded-Host,
// X-Forwarded-Proto and Forwarded (RFC 7239). What the client sent is kept
// and extended only when the connection's peer is a trusted proxy; from any
// other peer it is replaced, so a client cannot spoof its address.
func setForwarded(h http.Header, r *http.Request, trusted bool) {
	peer := r.RemoteAddr
	if host, _, err := net.SplitHostPort(peer); err == nil {
		peer = host
	}
	if i := strings.IndexByte(peer, '%'); i >= 0 {
		peer = peer[:i] // an IPv6 zone names a local interface; it means nothing upstream
	}
	proto := "http"
	protoV := protoHTTP
	if r.TLS != nil {
		proto, protoV = "https", protoHTTPS
	}

	// One backing array for the three header values saves two allocations
	// on every request.
	vals := make([]string, 3)
	prior := r.Header["X-Forwarded-For"]
	if trusted && len(prior) > 0 {
		vals[0] = strings.Join(prior, ", ") + ", " + peer
	} else {
		vals[0] = peer
	}
	h["X-Forwarded-For"] = vals[0:1:1]
	if !trusted || r.Header["X-Forwarded-Host"] == nil {
		vals[1] = r.Host
		h["X-Forwarded-Host"] = vals[1:2:2]
	}
	if !trusted || r.Header["X-Forwarded-Proto"] == nil {
		h["X-Forwarded-Proto"] = protoV
	}

	var b strings.Builder
	b.Grow(len(peer) + len(r.Host) + 32)
	if pf := r.Header["Forwarded"]; trusted && len(pf) > 0 {
		for _, v := range pf {
			b.WriteString(v)
			b.WriteString(", ")
		}
	}
	b.WriteString("for=")
	if strings.IndexByte(peer, ':') >= 0 {
		writeForwardedValue(&b, "["+peer+"]") // quoted: "[2001:db8::1]"
	} else {
		writeForwardedValue(&b, peer)
	}
	if r.Host != "" {
		b.WriteString(";host=")
		writeForwardedValue(&b, r.Host)
	}
	b.WriteString(";proto=")
	b.WriteString(proto)
	vals[2] = b.String()
	h["Forwarded"] = vals[2:3:3]
}

// writeForwardedValue writes v as an RFC 7239 token, or as a quoted string
// when it is not one.
func writeForwardedValue(b *strings.Builder, v string) {
	token := v != ""
	for i := 0; i < len(v) && token; i++ {
		c := v[i]
		token = c < 0x7f && c > ' ' && !strings.ContainsRune("\"(),/:;<=>?@[\\]{}", rune(c))
	}
	if token {
		b.WriteString(v)
		return
	}
	b.WriteByte('"')
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c == '"' || c == '\\' {
			b.WriteByte('\\')
		}
		if c >= ' ' && c != 0x7f {
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
}

// cleanQuery returns q unchanged when it parses, and otherwise only its
// parameters that parse, in order, as httputil.ProxyRequest.SetURL does. A
// semicolon is not a separator for Go; forwarding it could let an upstream
// that splits on it see parameters the gateway never saw.
func cleanQuery(q string) string {
	if queryParses(q) {
		return q
	}
	var b strings.Builder
	for q != "" {
		var kv string
		kv, q, _ = strings.Cut(q, "&")
		if kv == "" || strings.IndexByte(kv, ';') >= 0 {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		if _, err := url.QueryUnescape(k); err != nil {
			continue
		}
		if _, err := url.QueryUnescape(v); err != nil {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		b.WriteString(kv)
	}
	return b.String()
}

// queryParses reports, without allocating, whether q parses as a query: no
// semicolon and every '%' followed by two hex digits.
func queryParses(q string) bool {
	for i := 0; i < len(q); i++ {
		switch q[i] {
		case ';':
			return false
		case '%':
			if i+2 >= len(q) || !isHex(q[i+1]) || !isHex(q[i+2]) {
				return false
			}
		}
	}
	return true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// rewriteLocation maps a Location that points at the target itself back to
// the gateway: the client's host and scheme, the target's base path removed
// and a prefix the route stripped put back.
func rewriteLocation(loc string, target *url.URL, base *url.URL, r *http.Request, info *RequestInfo) (string, bool) {
	if !strings.HasPrefix(loc, "http://") && !strings.HasPrefix(loc, "https://") {
		return "", false
	}
	u, err := url.Parse(loc)
	if err != nil || !strings.EqualFold(u.Host, target.Host) {
		return "", false
	}
	u.Scheme = "http"
	if r.TLS != nil {
		u.Scheme = "https"
	}
	u.Host = r.Host
	if bp := strings.TrimSuffix(base.Path, "/"); bp != "" && strings.HasPrefix(u.Path, bp) {
		u.Path = u.Path[len(bp):]
		u.RawPath = ""
	}
	if info != nil && info.strippedPrefix != "" {
		u.Path = info.strippedPrefix + u.Path
		u.RawPath = ""
	}
	return u.String(), true
}
