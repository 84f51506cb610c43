package pylon

import (
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
)

// FuzzStripPrefix checks that stripping never panics and that the escaped
// and decoded paths it returns always agree.
func FuzzStripPrefix(f *testing.F) {
	for _, s := range []string{"/api/a", "/api/a%2Fb", "/api", "/api%2Fx/y", "/api/%zz", "/api//x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := url.ParseRequestURI(raw)
		if err != nil {
			return
		}
		path, rawPath, ok := stripPrefix(u, "/api", false)
		if !ok {
			return
		}
		if !strings.HasPrefix(path, "/") {
			t.Fatalf("stripped path %q does not start with /", path)
		}
		if rawPath != "" {
			dec, err := url.PathUnescape(rawPath)
			if err != nil || dec != path {
				t.Fatalf("raw %q decodes to %q, want %q", rawPath, dec, path)
			}
		}
		if !strings.HasSuffix(u.Path, strings.TrimPrefix(path, "/")) {
			t.Fatalf("%q is not a suffix of %q", path, u.Path)
		}
	})
}

// FuzzRouteRewrite sends arbitrary paths through a gateway with rewrite and
// strip routes: no panic, and what the target sees is a consistent URL whose
// wildcard values survived the rewrite unchanged.
func FuzzRouteRewrite(f *testing.F) {
	for _, s := range []string{"/v2/items/42", "/v2/items/a%2Fb", "/v2/files/a/b", "/shop/x%20y", "/v2/items/%E2%82%AC", "/v2/files/..%2f"} {
		f.Add(s)
	}
	var seen *url.URL
	var seenID string
	capture := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen, seenID = r.URL, ""
	})
	g := New(Options{AllowAmbiguousPaths: true})
	g.Route("GET /v2/items/{id}").Rewrite("/items/{id}").Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = r.URL
		seenID = strings.TrimPrefix(r.URL.Path, "/items/")
	}))
	g.Route("GET /v2/files/{rest...}").Rewrite("/store/{rest}").Handler(capture)
	g.Route("/shop/").StripPrefix("/shop").Handler(capture)
	if err := g.Err(); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, p string) {
		u, err := url.ParseRequestURI(p)
		if err != nil || u.Path == "" || u.Path[0] != '/' {
			return
		}
		req := httptest.NewRequest("GET", "http://gw.example"+u.EscapedPath(), nil)
		seen = nil
		var id string
		if strings.HasPrefix(req.URL.Path, "/v2/items/") {
			id = strings.TrimPrefix(req.URL.Path, "/v2/items/")
		}
		rec := httptest.NewRecorder()
		g.ServeHTTP(rec, req)
		if seen == nil {
			return
		}
		if seen.RawPath != "" {
			dec, err := url.PathUnescape(seen.RawPath)
			if err != nil || dec != seen.Path {
				t.Fatalf("inconsistent URL: raw %q path %q", seen.RawPath, seen.Path)
			}
		}
		if seenID != "" && id != "" && !strings.Contains(id, "/") && seenID != id {
			t.Fatalf("wildcard changed: %q -> %q", id, seenID)
		}
	})
}

// FuzzHeaderRewrite checks the request-header rewrite on arbitrary
// Connection lists, forwarding headers and peer addresses: no hop-by-hop or
// Connection-named header survives, and an untrusted client never gets its
// own X-Forwarded-For or Forwarded value through, nor any peer a client-IP
// header, and behind a trusted proxy the family its Trust does not read
// names only the decided client.
func FuzzHeaderRewrite(f *testing.F) {
	f.Add("close, X-Secret", "X-Secret", "1.2.3.4", "for=1.2.3.4", "10.0.0.1:5000", "shop.example", false)
	f.Add("X-Forwarded-For", "Keep-Alive", "", "", "[2001:db8::1%eth0]:1", "[::1]:8080", true)
	f.Add(",,,", "Te", "a, b", `for="[v6]"`, "garbage", "h\"o\\st", false)
	f.Fuzz(func(t *testing.T, conn, named, xff, fwd, remote, host string, trusted bool) {
		if strings.ContainsAny(conn+named+xff+fwd+host, "\r\n\x00") {
			return // net/http refuses such header values before a handler runs
		}
		if !isToken(named) {
			return // net/http refuses a header field name that is not a token
		}
		in := http.Header{}
		in.Set("Connection", conn)
		if named != "" {
			in[http.CanonicalHeaderKey(named)] = []string{"v"}
		}
		if xff != "" {
			in.Set("X-Forwarded-For", xff)
		}
		if fwd != "" {
			in.Set("Forwarded", fwd)
		}
		in.Set("Keep-Alive", "300")
		in.Set("X-Real-Ip", xff)
		in.Set("True-Client-Ip", xff)
		in.Set("X-Forwarded-Proto", named)
		in.Set("X-Forwarded-Host", host)
		r := &http.Request{Header: in, RemoteAddr: remote, Host: host}
		var trust Trust
		if trusted {
			trust.Proxies = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}
			// Both families, without a new fuzz argument (the corpus
			// keeps its shape).
			trust.Header = ForwardedHeader(len(remote) % 2)
		}
		info := &RequestInfo{}
		trust.Identify(info, r)
		// As the Gateway does: the names Connection lists are removed on
		// arrival; then a middleware adds a header the client named.
		stripConnectionNamed(in)
		in.Set("X-Added-By-Gateway", "yes")
		out := http.Header{}
		copyRequestHeader(out, in, false)
		setForwarded(out, r, info)

		if headerHasToken([]string{conn}, "X-Added-By-Gateway") && out.Get("X-Added-By-Gateway") != "yes" {
			t.Fatalf("a header the gateway added was removed because the client's Connection named it")
		}
		if info.Scheme != "http" && info.Scheme != "https" {
			t.Fatalf("scheme %q", info.Scheme)
		}
		if got := out.Get("X-Forwarded-Proto"); got != info.Scheme {
			t.Fatalf("X-Forwarded-Proto %q, decided scheme %q", got, info.Scheme)
		}
		if got := out.Get("X-Forwarded-Host"); got != info.Host {
			t.Fatalf("X-Forwarded-Host %q, decided host %q", got, info.Host)
		}
		if !info.PeerTrusted {
			if info.ClientIP != remoteAddr(remote) {
				t.Fatalf("untrusted peer %q: client IP %s from its headers", remote, info.ClientIP)
			}
			if info.Host != host {
				t.Fatalf("untrusted peer: host %q, want the request's %q", info.Host, host)
			}
		}
		for k := range out {
			if isClientIPHeader(k) {
				t.Fatalf("client-IP header %s forwarded (peer trusted: %v)", k, info.PeerTrusted)
			}
		}
		if info.PeerTrusted && trust.Header == Forwarded {
			if got := out.Get("X-Forwarded-For"); got != info.ClientIP.String() {
				t.Fatalf("trusted peer, Forwarded read: X-Forwarded-For %q, want the decided client %s", got, info.ClientIP)
			}
		}
		if info.PeerTrusted && trust.Header == XForwardedFor {
			if got := out.Get("Forwarded"); unquotedCommas(got) != 0 || !strings.HasPrefix(got, "for=") {
				t.Fatalf("trusted peer, X-Forwarded-For read: Forwarded extended: %q", got)
			}
		}
		for h := range out {
			if h != "Te" && isHopHeader(h) {
				t.Fatalf("hop-by-hop header %s forwarded", h)
			}
		}
		for k := range out {
			switch k {
			case "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "Forwarded", "Te", "X-Added-By-Gateway":
				continue // set by the gateway after the copy
			}
			if headerHasToken([]string{conn}, k) {
				t.Fatalf("header %s named in Connection was forwarded", k)
			}
		}
		if !trusted {
			peer := remote
			if h, _, err := net.SplitHostPort(remote); err == nil {
				peer = h
			}
			peer, _, _ = strings.Cut(peer, "%")
			if got := out.Get("X-Forwarded-For"); got != peer {
				t.Fatalf("untrusted X-Forwarded-For is %q, want only the peer %q", got, peer)
			}
			if got := out.Get("Forwarded"); unquotedCommas(got) != 0 {
				t.Fatalf("untrusted Forwarded extended: %q", got)
			}
		}
		for _, v := range out.Values("Forwarded") {
			if strings.ContainsAny(v, "\r\n") {
				t.Fatalf("Forwarded value holds a line break: %q", v)
			}
		}
	})
}

// unquotedCommas counts the element separators of a Forwarded value: commas
// outside quoted strings.
func unquotedCommas(v string) int {
	n, quoted := 0, false
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case quoted && c == '\\':
			i++
		case c == '"':
			quoted = !quoted
		case c == ',' && !quoted:
			n++
		}
	}
	return n
}

// isToken reports whether s is an RFC 9110 token, as header field names are.
func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("\"(),/:;<=>?@[\\]{}", c) >= 0 {
			return false
		}
	}
	return true
}
