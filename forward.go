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

// copyRequestHeader copies src into dst without the hop-by-hop headers
// and, when connNamed, without the headers that src's Connection header
// names. The Gateway removes those on arrival, before any middleware runs
// (see stripConnectionNamed), and then passes connNamed false, so that a
// client cannot use Connection to strip what a middleware or the gateway
// added; a Backend served outside a Gateway has only the header as it is.
// Value slices are shared with src: the upstream request's header is only
// ever Set or deleted, never appended to.
// The headers some servers read as the client's address (isClientIPHeader)
// are left out too, from any peer: no Trust reads them, so their value is
// whatever a client sent.
func copyRequestHeader(dst, src http.Header, connNamed bool) {
	var conn []string
	if connNamed {
		conn = src["Connection"]
	}
	for k, vv := range src {
		if isHopHeader(k) || strings.HasPrefix(k, ":") || isClientIPHeader(k) ||
			conn != nil && headerHasToken(conn, k) {
			// A pseudo-header (":protocol" of RFC 8441 extended CONNECT)
			// describes this hop's stream; the transport refuses it.
			continue
		}
		dst[k] = vv
	}
	// "TE: trailers" is the one TE value a proxy forwards: gRPC needs it.
	if te := src["Te"]; te != nil && headerHasToken(te, "trailers") {
		dst["Te"] = []string{"trailers"}
	}
}

// stripConnectionNamed removes from h the headers its Connection header
// names (RFC 9110 §7.6.1), as the request arrived. Hop-by-hop names stay:
// copyRequestHeader never forwards them, and the upgrade check reads
// Upgrade.
func stripConnectionNamed(h http.Header) {
	for _, v := range h["Connection"] {
		for v != "" {
			var t string
			t, v, _ = strings.Cut(v, ",")
			t = strings.TrimSpace(t)
			if t == "" || strings.EqualFold(t, "close") || strings.EqualFold(t, "keep-alive") {
				continue
			}
			if k := http.CanonicalHeaderKey(t); !isHopHeader(k) {
				delete(h, k)
			}
		}
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
// X-Forwarded-Proto and Forwarded (RFC 7239) from the gateway's decision
// in info (see [Trust.Identify]). Behind a trusted proxy, the one family
// the Trust read (X-Forwarded-For, or Forwarded) is kept and extended with
// the peer: it is what that proxy vouches for. The other family, which the
// proxy passes as the client sent it, is replaced from the decision
// (ClientIP, Scheme, Host), as both are for any other peer, so a client
// cannot spoof its address. X-Forwarded-Proto and X-Forwarded-Host always
// carry the decided scheme and host: what caches key on is what the
// upstream is sent.
func setForwarded(h http.Header, r *http.Request, info *RequestInfo) {
	peer := r.RemoteAddr
	if host, _, err := net.SplitHostPort(peer); err == nil {
		peer = host
	}
	if i := strings.IndexByte(peer, '%'); i >= 0 {
		peer = peer[:i] // an IPv6 zone names a local interface; it means nothing upstream
	}
	// Behind a trusted peer, the family its Trust read is extended; every
	// other one names the decided client, which for an untrusted peer is
	// the peer itself.
	trusted := info.PeerTrusted
	extendXFF := trusted && info.fwdHeader == XForwardedFor
	extendFwd := trusted && info.fwdHeader == Forwarded
	client := peer
	if trusted {
		client = info.ClientIP.String()
	}
	// The Forwarded element this hop writes: its peer, host and scheme when
	// it extends the header or the peer is untrusted (they are then the
	// decision too), else the decision.
	forVal, host, proto := peer, r.Host, "http"
	if r.TLS != nil {
		proto = "https"
	}
	if trusted && !extendFwd {
		forVal, host, proto = client, info.Host, info.Scheme
	}

	// One backing array for the three header values saves two allocations
	// on every request.
	vals := make([]string, 3)
	prior := r.Header["X-Forwarded-For"]
	switch {
	case extendXFF && len(prior) > 0:
		vals[0] = strings.Join(prior, ", ") + ", " + peer
	case extendXFF:
		vals[0] = peer
	default:
		vals[0] = client
	}
	h["X-Forwarded-For"] = vals[0:1:1]
	vals[1] = info.Host
	h["X-Forwarded-Host"] = vals[1:2:2]
	if info.Scheme == "https" {
		h["X-Forwarded-Proto"] = protoHTTPS
	} else {
		h["X-Forwarded-Proto"] = protoHTTP
	}

	var b strings.Builder
	b.Grow(len(forVal) + len(host) + 32)
	if pf := r.Header["Forwarded"]; extendFwd && len(pf) > 0 {
		for _, v := range pf {
			b.WriteString(v)
			b.WriteString(", ")
		}
	}
	b.WriteString("for=")
	if strings.IndexByte(forVal, ':') >= 0 {
		writeForwardedValue(&b, "["+forVal+"]") // quoted: "[2001:db8::1]"
	} else {
		writeForwardedValue(&b, forVal)
	}
	if host != "" {
		b.WriteString(";host=")
		writeForwardedValue(&b, host)
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

// rewriteLocation maps a Location that points at the target back to the
// gateway: the target's base path removed, a prefix a group's RewritePrefix
// added removed, and a prefix the route stripped put back (behind a
// RewritePrefix, only when the path begins with the prefix it added, at a
// segment boundary: a path outside it is left as it is). An absolute
// Location naming the target's host gets the client's host and scheme; a
// relative one (RFC 9110 §10.2.2 allows any URI reference) is resolved
// against the upstream request's URL first, then stays relative to the
// client's host, as an absolute path. A Location naming another host, or a
// relative one that the mapping leaves as it is, is left untouched.
func rewriteLocation(loc string, target *url.URL, base *url.URL, r *http.Request, info *RequestInfo) (string, bool) {
	u, err := url.Parse(loc)
	if err != nil || u.Opaque != "" {
		return "", false
	}
	absolute := u.Scheme != "" || u.Host != ""
	if absolute {
		if u.Scheme != "" && !strings.EqualFold(u.Scheme, "http") && !strings.EqualFold(u.Scheme, "https") ||
			!strings.EqualFold(u.Host, target.Host) {
			return "", false
		}
	} else {
		if u.Path == "" {
			return "", false // "?page=2" or "#top": the client resolves it as well as we could
		}
		u = target.ResolveReference(u)
	}
	path := u.Path
	if bp := strings.TrimSuffix(base.Path, "/"); bp != "" && hasPathPrefix(path, bp) {
		path = path[len(bp):]
	}
	// The stripped prefix goes back only in front of what the route
	// forwards under: behind a RewritePrefix, a path outside the prefix it
	// added is no path of the group, and stays as it is.
	inside := true
	if info != nil && info.addedPrefix != "" {
		if inside = hasPathPrefix(path, info.addedPrefix); inside {
			path = path[len(info.addedPrefix):]
		}
	}
	if inside && info != nil && info.strippedPrefix != "" {
		path = info.strippedPrefix + path
	}
	if path == "" {
		path = "/"
	}
	if !absolute && path == u.Path && loc[0] == '/' {
		return "", false
	}
	u.Path, u.RawPath = path, ""
	if !absolute {
		u.Scheme, u.Host, u.User = "", "", nil
		return u.String(), true
	}
	u.Scheme, u.Host = "http", r.Host
	if r.TLS != nil {
		u.Scheme = "https"
	}
	if info != nil && info.identified {
		u.Scheme, u.Host = info.Scheme, info.Host
	}
	return u.String(), true
}

// hasPathPrefix reports whether path begins with prefix at a segment
// boundary ("/api" begins "/api" and "/api/x", not "/apix").
func hasPathPrefix(path, prefix string) bool {
	return strings.HasPrefix(path, prefix) && (len(path) == len(prefix) || path[len(prefix)] == '/')
}
