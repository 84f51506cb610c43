package middleware_test

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/middleware"
)

func TestRealIP(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	many := strings.TrimSuffix(strings.Repeat("10.1.1.1, ", 1000), ", ")
	tests := []struct {
		name   string
		remote string
		src    pylon.ForwardedHeader
		header map[string][]string
		want   string
	}{
		{"untrusted peer ignores XFF", "198.51.100.1:1234", 0, map[string][]string{"X-Forwarded-For": {"1.2.3.4"}}, "198.51.100.1"},
		{"trusted peer, XFF", "10.0.0.1:1234", 0, map[string][]string{"X-Forwarded-For": {"1.2.3.4"}}, "1.2.3.4"},
		{"right to left, skipping trusted hops", "10.0.0.1:1", 0, map[string][]string{"X-Forwarded-For": {"6.6.6.6, 1.2.3.4, 10.9.9.9"}}, "1.2.3.4"},
		{"several header lines", "10.0.0.1:1", 0, map[string][]string{"X-Forwarded-For": {"6.6.6.6, 1.2.3.4", "10.2.2.2"}}, "1.2.3.4"},
		{"all trusted: leftmost", "10.0.0.1:1", 0, map[string][]string{"X-Forwarded-For": {"10.3.3.3, 10.2.2.2"}}, "10.3.3.3"},
		{"no header: peer", "10.0.0.1:1", 0, nil, "10.0.0.1"},
		{"garbage stops the walk", "10.0.0.1:1", 0, map[string][]string{"X-Forwarded-For": {"1.2.3.4, nonsense"}}, "10.0.0.1"},
		{"empty entry stops the walk", "10.0.0.1:1", 0, map[string][]string{"X-Forwarded-For": {"1.2.3.4,,10.2.2.2"}}, "10.2.2.2"},
		{"entry with port", "10.0.0.1:1", 0, map[string][]string{"X-Forwarded-For": {"1.2.3.4:5678"}}, "1.2.3.4"},
		{"IPv6 entry", "10.0.0.1:1", 0, map[string][]string{"X-Forwarded-For": {"2001:db8::1"}}, "2001:db8::1"},
		{"IPv6 with zone and port", "10.0.0.1:1", 0, map[string][]string{"X-Forwarded-For": {"[fe80::1%eth0]:80"}}, "fe80::1"},
		{"IPv6 peer with zone, untrusted", "[fe80::1%eth0]:443", 0, nil, "fe80::1"},
		{"IPv6 trusted peer", "[fd00::1]:443", 0, map[string][]string{"X-Forwarded-For": {"2001:db8::7"}}, "2001:db8::7"},
		{"IPv4-mapped peer", "[::ffff:10.0.0.1]:1", 0, map[string][]string{"X-Forwarded-For": {"1.2.3.4"}}, "1.2.3.4"},
		{"1000 entries, all trusted: capped", "10.0.0.1:1", 0, map[string][]string{"X-Forwarded-For": {many}}, "10.1.1.1"},
		{"1000 entries then client", "10.0.0.1:1", 0, map[string][]string{"X-Forwarded-For": {"9.9.9.9, " + many}}, "10.1.1.1"},
		{"8 KiB value", "10.0.0.1:1", 0, map[string][]string{"X-Forwarded-For": {strings.Repeat("a", 8<<10)}}, "10.0.0.1"},
		{"CR LF and invalid UTF-8", "10.0.0.1:1", 0, map[string][]string{"X-Forwarded-For": {"1.2.3.4\r\n\xff"}}, "10.0.0.1"},
		{"unparseable peer", "not-an-address", 0, map[string][]string{"X-Forwarded-For": {"1.2.3.4"}}, "invalid IP"},

		{"Forwarded", "10.0.0.1:1", pylon.Forwarded, map[string][]string{"Forwarded": {"for=192.0.2.60;proto=http;by=203.0.113.43"}}, "192.0.2.60"},
		{"Forwarded quoted v6 with port", "10.0.0.1:1", pylon.Forwarded, map[string][]string{"Forwarded": {`for="[2001:db8:cafe::17]:4711"`}}, "2001:db8:cafe::17"},
		{"Forwarded list, right to left", "10.0.0.1:1", pylon.Forwarded, map[string][]string{"Forwarded": {`for=6.6.6.6, For="1.2.3.4:80";proto=https, for=10.5.5.5`}}, "1.2.3.4"},
		{"Forwarded quoted comma", "10.0.0.1:1", pylon.Forwarded, map[string][]string{"Forwarded": {`for=1.2.3.4;x="a,b", for=10.5.5.5`}}, "1.2.3.4"},
		{"Forwarded unknown stops", "10.0.0.1:1", pylon.Forwarded, map[string][]string{"Forwarded": {"for=1.2.3.4, for=unknown"}}, "10.0.0.1"},
		{"Forwarded obfuscated stops", "10.0.0.1:1", pylon.Forwarded, map[string][]string{"Forwarded": {"for=1.2.3.4, for=_hidden"}}, "10.0.0.1"},
		{"Forwarded unterminated quote", "10.0.0.1:1", pylon.Forwarded, map[string][]string{"Forwarded": {`for="[2001:db8::1]`}}, "10.0.0.1"},
		{"Forwarded without for", "10.0.0.1:1", pylon.Forwarded, map[string][]string{"Forwarded": {"proto=https"}}, "10.0.0.1"},
		{"Forwarded ignores XFF", "10.0.0.1:1", pylon.Forwarded, map[string][]string{"X-Forwarded-For": {"1.2.3.4"}}, "10.0.0.1"},
		{"XFF ignores Forwarded", "10.0.0.1:1", 0, map[string][]string{"Forwarded": {"for=1.2.3.4"}}, "10.0.0.1"},
		{"Forwarded 1000 elements", "10.0.0.1:1", pylon.Forwarded, map[string][]string{"Forwarded": {strings.Repeat("for=1.2.3.4, ", 999) + "for=10.1.1.1"}}, "1.2.3.4"},
		{"Forwarded garbage", "10.0.0.1:1", pylon.Forwarded, map[string][]string{"Forwarded": {"\"\";;==,\\"}}, "10.0.0.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got netip.Addr
			h := middleware.RealIP(pylon.Trust{Proxies: trusted, Header: tt.src})(
				http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					got = pylon.Info(r.Context()).ClientIP
				}))
			req := httptest.NewRequest("GET", "/", nil)
			req.RemoteAddr = tt.remote
			for k, v := range tt.header {
				req.Header[k] = v
			}
			h.ServeHTTP(httptest.NewRecorder(), req)
			if got.String() != tt.want {
				t.Errorf("client IP %s, want %s", got, tt.want)
			}
		})
	}
}

func TestRealIPNoTrustedProxies(t *testing.T) {
	var got netip.Addr
	info := &pylon.RequestInfo{}
	h := middleware.RealIP(pylon.Trust{})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if pylon.Info(r.Context()) != info {
			t.Error("RealIP replaced the Gateway's RequestInfo")
		}
		got = info.ClientIP
	}))
	req := httptest.NewRequest("GET", "/", nil)
	req.RemoteAddr = "127.0.0.1:9"
	req.Header.Set("X-Forwarded-For", "1.2.3.4")
	h.ServeHTTP(httptest.NewRecorder(), req.WithContext(pylon.NewContext(req.Context(), info)))
	if got != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("client IP %s: forwarded headers are distrusted by default", got)
	}
}

func FuzzRealIP(f *testing.F) {
	f.Add("1.2.3.4, 10.0.0.2", `for="[2001:db8::1]:80";by=x, for=10.0.0.3`)
	f.Add("[fe80::1%eth0]:80", `for=unknown`)
	trusted := netip.MustParsePrefix("10.0.0.0/8")
	xff := middleware.RealIP(pylon.Trust{Proxies: []netip.Prefix{trusted}})(ok)
	fwd := middleware.RealIP(pylon.Trust{Proxies: []netip.Prefix{trusted}, Header: pylon.Forwarded})(ok)
	f.Fuzz(func(t *testing.T, x, fw string) {
		req := httptest.NewRequest("GET", "/", nil)
		req.RemoteAddr = "10.0.0.1:1"
		req.Header["X-Forwarded-For"] = []string{x}
		req.Header["Forwarded"] = []string{fw}
		xff.ServeHTTP(httptest.NewRecorder(), req)
		fwd.ServeHTTP(httptest.NewRecorder(), req)
	})
}
