package compress

import (
	"strconv"
	"strings"
)

// Negotiate returns the content coding, of offered (in the server's order of
// preference), that the Accept-Encoding field values accept (RFC 9110
// §12.5.3), or "" when the response should not be encoded: the field is
// absent or empty, accepts none of offered, or explicitly prefers identity
// (a higher qvalue for "identity", or for "*" when identity is unlisted) to
// every one of them.
//
// Codings compare case-insensitively, "x-gzip" counts as "gzip" (§8.4.1.3),
// a coding the field does not list is accepted at the qvalue of "*" (or not
// at all), q=0 refuses, and among codings of equal qvalue the server's order
// decides. A malformed qvalue counts as 0.
func Negotiate(acceptEncoding []string, offered []string) string {
	if len(acceptEncoding) == 0 {
		return ""
	}
	const unset = -1
	var star = unset
	identity := unset
	// q of each offered coding, by index; at most a few codings are offered.
	var qs [8]int
	for i := range qs {
		qs[i] = unset
	}
	any := false
	for _, line := range acceptEncoding {
		for line != "" {
			var elem string
			elem, line, _ = strings.Cut(line, ",")
			name, params, _ := strings.Cut(elem, ";")
			name = strings.TrimSpace(name)
			if name == "" {
				continue
			}
			any = true
			q := parseQ(params)
			switch {
			case name == "*":
				star = q
			case strings.EqualFold(name, "identity"):
				identity = q
			default:
				if strings.EqualFold(name, "x-gzip") {
					name = "gzip"
				}
				for i, c := range offered {
					if i < len(qs) && strings.EqualFold(name, c) {
						qs[i] = q
					}
				}
			}
		}
	}
	if !any {
		return "" // "Accept-Encoding:" with no value: identity only
	}
	best, bestQ := "", 0
	for i, c := range offered {
		if i >= len(qs) {
			break
		}
		q := qs[i]
		if q == unset {
			q = star
		}
		if q > bestQ {
			best, bestQ = c, q
		}
	}
	if best == "" {
		return ""
	}
	if identity == unset {
		identity = star // unlisted identity competes only through "*"
	}
	if identity > bestQ {
		return ""
	}
	return best
}

// parseQ returns the qvalue of an element's parameters in thousandths
// (1000 when there is none, 0 when it is malformed).
func parseQ(params string) int {
	for params != "" {
		var p string
		p, params, _ = strings.Cut(params, ";")
		k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
		if !ok || !strings.EqualFold(strings.TrimSpace(k), "q") {
			continue
		}
		return qvalue(strings.TrimSpace(v))
	}
	return 1000
}

// qvalue parses an RFC 9110 §12.4.2 qvalue ("0", "0.5", "1.000") into
// thousandths; anything else is 0.
func qvalue(v string) int {
	if v == "" || len(v) > 5 || (v[0] != '0' && v[0] != '1') {
		return 0
	}
	if len(v) == 1 {
		return int(v[0]-'0') * 1000
	}
	if v[1] != '.' {
		return 0
	}
	frac := v[2:]
	for _, c := range frac {
		if c < '0' || c > '9' || v[0] == '1' && c != '0' {
			return 0
		}
	}
	n := 0
	if frac != "" {
		n, _ = strconv.Atoi((frac + "00")[:3])
	}
	return int(v[0]-'0')*1000 + n
}
