package ratelimit_test

import (
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/ratelimit"
)

func TestKeyFuncs(t *testing.T) {
	long := strings.Repeat("x", 200)
	tests := []struct {
		name       string
		key        ratelimit.KeyFunc
		remoteAddr string
		info       *pylon.RequestInfo
		header     map[string]string
		want       string
		ok         bool
	}{
		{"ipv4 from info", ratelimit.ByIP, "", &pylon.RequestInfo{ClientIP: netip.MustParseAddr("203.0.113.9")}, nil, "ip:203.0.113.9", true},
		{"ipv4 from RemoteAddr", ratelimit.ByIP, "198.51.100.4:5555", nil, nil, "ip:198.51.100.4", true},
		{"ipv6 grouped by /64", ratelimit.ByIP, "[2001:db8:1:2:aaaa:bbbb:cccc:dddd]:443", nil, nil, "ip:2001:db8:1:2::/64", true},
		{"ipv6 same /64, other host", ratelimit.ByIP, "[2001:db8:1:2::1]:443", nil, nil, "ip:2001:db8:1:2::/64", true},
		{"ipv6 with zone", ratelimit.ByIP, "[fe80::1%eth0]:443", nil, nil, "ip:fe80::/64", true},
		{"ipv4-mapped unmapped", ratelimit.ByIP, "[::ffff:192.0.2.1]:80", nil, nil, "ip:192.0.2.1", true},
		{"ipv4-mapped in info", ratelimit.ByIP, "", &pylon.RequestInfo{ClientIP: netip.MustParseAddr("::ffff:192.0.2.1")}, nil, "ip:192.0.2.1", true},
		{"info wins over RemoteAddr", ratelimit.ByIP, "10.0.0.1:1", &pylon.RequestInfo{ClientIP: netip.MustParseAddr("192.0.2.2")}, nil, "ip:192.0.2.2", true},
		{"bare address", ratelimit.ByIP, "192.0.2.3", nil, nil, "ip:192.0.2.3", true},
		{"garbage RemoteAddr", ratelimit.ByIP, "not-an-address", nil, nil, "", false},
		{"ipv4 /24", ratelimit.ByIPPrefix(24, 48), "192.0.2.77:1", nil, nil, "ip:192.0.2.0/24", true},
		{"ipv6 /128", ratelimit.ByIPPrefix(32, 128), "[2001:db8::1]:1", nil, nil, "ip:2001:db8::1", true},
		{"header trimmed, case kept", ratelimit.ByHeader("x-api-key", ratelimit.CaseSensitive), "", nil, map[string]string{"X-Api-Key": "  AbC "}, "h:AbC", true},
		{"header case folded", ratelimit.ByHeader("X-Tenant", ratelimit.CaseInsensitive), "", nil, map[string]string{"X-Tenant": "ACME"}, "h:acme", true},
		{"header missing", ratelimit.ByHeader("X-Api-Key", ratelimit.CaseSensitive), "", nil, nil, "", false},
		{"header blank", ratelimit.ByHeader("X-Api-Key", ratelimit.CaseSensitive), "", nil, map[string]string{"X-Api-Key": "   "}, "", false},
		{"header long is hashed", ratelimit.ByHeader("X-Api-Key", ratelimit.CaseSensitive), "", nil, map[string]string{"X-Api-Key": long}, "h:sha256:", true},
		{"subject", ratelimit.BySubject, "", &pylon.RequestInfo{Subject: "user-42"}, nil, "sub:user-42", true},
		{"no subject", ratelimit.BySubject, "", &pylon.RequestInfo{}, nil, "", false},
		{"no info, no subject", ratelimit.BySubject, "", nil, nil, "", false},
		{"route", ratelimit.ByRoute, "", &pylon.RequestInfo{Route: "orders"}, nil, "route:orders", true},
		{"no route", ratelimit.ByRoute, "", nil, nil, "", false},
		{"composed", ratelimit.Compose(ratelimit.BySubject, ratelimit.ByRoute), "", &pylon.RequestInfo{Subject: "u", Route: "r"}, nil, "5:sub:u|7:route:r|", true},
		{"composed, part missing", ratelimit.Compose(ratelimit.BySubject, ratelimit.ByRoute), "", &pylon.RequestInfo{Route: "r"}, nil, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = tt.remoteAddr
			for k, v := range tt.header {
				r.Header.Set(k, v)
			}
			if tt.info != nil {
				r = withInfo(r, tt.info)
			}
			got, ok := tt.key(r)
			if ok != tt.ok || !strings.HasPrefix(got, tt.want) || (tt.want != "h:sha256:" && got != tt.want) {
				t.Fatalf("key = %q, %v; want %q, %v", got, ok, tt.want, tt.ok)
			}
			if len(got) > 200 {
				t.Fatalf("key of %d bytes: not bounded", len(got))
			}
		})
	}
}

// Composed keys are unambiguous even when parts hold the separator.
func TestComposeUnambiguous(t *testing.T) {
	k := ratelimit.Compose(ratelimit.ByHeader("A", ratelimit.CaseSensitive), ratelimit.ByHeader("B", ratelimit.CaseSensitive))
	key := func(a, b string) string {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set("A", a)
		r.Header.Set("B", b)
		s, _ := k(r)
		return s
	}
	if key("x|3:h:y", "z") == key("x", "y|3:h:z") {
		t.Fatal("two different header pairs share a key")
	}
}

func FuzzKeyFuncs(f *testing.F) {
	f.Add("192.0.2.1:80", "abc")
	f.Add("[::ffff:1.2.3.4]:1", "")
	f.Add("[fe80::1%25zone]:1", strings.Repeat("k", 300))
	keys := []ratelimit.KeyFunc{ratelimit.ByIP, ratelimit.ByIPPrefix(8, 32), ratelimit.ByHeader("K", ratelimit.CaseInsensitive),
		ratelimit.Compose(ratelimit.ByIP, ratelimit.ByHeader("K", ratelimit.CaseSensitive))}
	f.Fuzz(func(t *testing.T, remote, header string) {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = remote
		r.Header["K"] = []string{header}
		for _, k := range keys {
			if s, ok := k(r); ok && len(s) > 400 {
				t.Fatalf("unbounded key of %d bytes", len(s))
			}
		}
	})
}
