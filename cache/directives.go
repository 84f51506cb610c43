package cache

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// maxDelta caps delta-seconds values (RFC 9111 §1.2.2: 2^31 seconds).
const maxDelta = time.Duration(1<<31) * time.Second

// respDirectives are the Cache-Control response directives the cache
// understands. Durations are -1 when the directive is absent.
type respDirectives struct {
	noStore, noCache, private, public bool
	mustRevalidate, proxyRevalidate   bool
	mustUnderstand                    bool
	maxAge, sMaxAge, swr, sie         time.Duration
}

// reqDirectives are the Cache-Control request directives the cache
// understands. Durations are -1 when the directive is absent.
type reqDirectives struct {
	noStore, noCache, onlyIfCached bool
	maxAge, maxStale, minFresh     time.Duration
}

// eachDirective calls fn for each directive of the Cache-Control field
// lines vv, with its lower-cased name and unquoted value.
func eachDirective(vv []string, fn func(name, value string)) {
	for _, v := range vv {
		for v != "" {
			var part string
			// A quoted value may hold commas: split outside quotes only.
			i, inQuote := 0, false
			for ; i < len(v); i++ {
				c := v[i]
				if c == '"' {
					inQuote = !inQuote
				} else if c == '\\' && inQuote && i+1 < len(v) {
					i++
				} else if c == ',' && !inQuote {
					break
				}
			}
			part, v = v[:i], v[min(i+1, len(v)):]
			part = strings.TrimSpace(part)
			if part == "" {
				continue
			}
			name, value, _ := strings.Cut(part, "=")
			name = strings.ToLower(strings.TrimSpace(name))
			value = strings.TrimSpace(value)
			if len(value) >= 2 && value[0] == '"' && value[len(value)-1] == '"' {
				value = value[1 : len(value)-1]
			}
			fn(name, value)
		}
	}
}

// parseDelta parses delta-seconds. An invalid value is reported as 0 and
// !ok; values beyond 2^31 seconds are capped.
func parseDelta(s string) (time.Duration, bool) {
	if s == "" {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n >= int64(maxDelta/time.Second) {
		return maxDelta, true
	}
	return time.Duration(n) * time.Second, true
}

// freshnessConflict makes a response stale whose max-age or s-maxage
// appeared more than once with different values. RFC 9111 §4.2.1 (and
// §5.2) lets a cache use the first occurrence or consider the response
// stale; stale is the conservative choice: whoever appended the second
// value (a framework, a middleware, an injected header line) can neither
// extend the lifetime nor be trusted to have shortened it. Repeats of one
// value are that value.
func (d *respDirectives) freshnessConflict() {
	if d.maxAge >= 0 {
		d.maxAge = 0
	}
	if d.sMaxAge >= 0 {
		d.sMaxAge = 0
	}
}

// firstDelta sets *dst to a directive's delta-seconds value v when it is
// the directive's first occurrence, and reports a later one with another
// value.
func firstDelta(dst *time.Duration, v time.Duration) (conflict bool) {
	if *dst < 0 {
		*dst = v
		return false
	}
	return *dst != v
}

func parseRespDirectives(h http.Header) respDirectives {
	d := respDirectives{maxAge: -1, sMaxAge: -1, swr: -1, sie: -1}
	conflict := false
	eachDirective(h["Cache-Control"], func(name, value string) {
		switch name {
		case "no-store":
			d.noStore = true
		case "no-cache":
			// A qualified no-cache="Set-Cookie" is treated like the
			// unqualified form: revalidate every time (conservative).
			d.noCache = true
		case "private":
			d.private = true
		case "public":
			d.public = true
		case "must-revalidate":
			d.mustRevalidate = true
		case "proxy-revalidate":
			d.proxyRevalidate = true
		case "must-understand":
			d.mustUnderstand = true
		case "max-age":
			v, _ := parseDelta(value) // invalid: 0, stale (RFC 9111 §4.2.1)
			conflict = firstDelta(&d.maxAge, v) || conflict
		case "s-maxage":
			v, _ := parseDelta(value)
			conflict = firstDelta(&d.sMaxAge, v) || conflict
		case "stale-while-revalidate":
			if v, ok := parseDelta(value); ok {
				d.swr = v
			}
		case "stale-if-error":
			if v, ok := parseDelta(value); ok {
				d.sie = v
			}
		}
	})
	if conflict {
		d.freshnessConflict()
	}
	// Pragma: no-cache in a response has no defined meaning (RFC 9111 §5.4)
	// but old origins use it to mean no-cache; honour it when there is no
	// Cache-Control at all.
	if pragmaNoCache(h) {
		d.noCache = true
	}
	return d
}

// pragmaNoCache reports a Pragma: no-cache in a header with no
// Cache-Control, the HTTP/1.0 way of asking for no-cache.
func pragmaNoCache(h http.Header) bool {
	if len(h["Cache-Control"]) != 0 {
		return false
	}
	for _, p := range h["Pragma"] {
		if strings.Contains(strings.ToLower(p), "no-cache") {
			return true
		}
	}
	return false
}

func parseReqDirectives(h http.Header) reqDirectives {
	d := reqDirectives{maxAge: -1, maxStale: -1, minFresh: -1}
	eachDirective(h["Cache-Control"], func(name, value string) {
		switch name {
		case "no-store":
			d.noStore = true
		case "no-cache":
			d.noCache = true
		case "only-if-cached":
			d.onlyIfCached = true
		case "max-age":
			d.maxAge, _ = parseDelta(value)
		case "max-stale":
			if value == "" {
				d.maxStale = maxDelta
			} else if v, ok := parseDelta(value); ok {
				d.maxStale = v
			}
		case "min-fresh":
			if v, ok := parseDelta(value); ok {
				d.minFresh = v
			}
		}
	})
	if pragmaNoCache(h) {
		d.noCache = true
	}
	return d
}

// respDirectives returns the response directives this cache obeys: those
// of the first targeted field (Options.TargetedFields, RFC 9213 §2.2) the
// response has with a valid, non-empty Dictionary value, and then targeted
// is true and Cache-Control, Pragma and Expires are ignored; otherwise
// those of Cache-Control.
func (c *Cache) respDirectives(h http.Header) (d respDirectives, targeted bool) {
	for _, name := range c.targeted {
		vv := h[name]
		if len(vv) == 0 {
			continue
		}
		if m, ok := parseSFDictionary(vv); ok && len(m) > 0 {
			return targetedDirectives(m), true
		}
	}
	return parseRespDirectives(h), false
}

// targetedDirectives maps the members of a targeted field to directives
// (RFC 9213 §2.1): directives without a value are Booleans, delta-seconds
// are Integers, no-cache and private may be qualified with a String.
// A directive whose value has another type is ignored.
func targetedDirectives(m []sfMember) respDirectives {
	d := respDirectives{maxAge: -1, sMaxAge: -1, swr: -1, sie: -1}
	flag := func(v sfItem, qualified bool) bool {
		return (v.kind == sfBool && v.n == 1) || (qualified && v.kind == sfString)
	}
	delta := func(v sfItem, dst *time.Duration) {
		if v.kind != sfInteger || v.n < 0 {
			return
		}
		if v.n >= int64(maxDelta/time.Second) {
			*dst = maxDelta
			return
		}
		*dst = time.Duration(v.n) * time.Second
	}
	conflict := false
	for _, mem := range m {
		v := mem.val
		switch mem.key {
		case "no-store":
			d.noStore = d.noStore || flag(v, false)
		case "no-cache":
			d.noCache = d.noCache || flag(v, true)
		case "private":
			d.private = d.private || flag(v, true)
		case "public":
			d.public = d.public || flag(v, false)
		case "must-revalidate":
			d.mustRevalidate = d.mustRevalidate || flag(v, false)
		case "proxy-revalidate":
			d.proxyRevalidate = d.proxyRevalidate || flag(v, false)
		case "must-understand":
			d.mustUnderstand = d.mustUnderstand || flag(v, false)
		case "max-age":
			delta(v, &d.maxAge)
			conflict = conflict || mem.conflict
		case "s-maxage":
			delta(v, &d.sMaxAge)
			conflict = conflict || mem.conflict
		case "stale-while-revalidate":
			delta(v, &d.swr)
		case "stale-if-error":
			delta(v, &d.sie)
		}
	}
	// A Dictionary keeps a repeated key's last value (RFC 9651 §4.2.2);
	// for freshness, RFC 9111 §4.2.1 applies on top, as in Cache-Control:
	// different values make the response stale.
	if conflict {
		d.freshnessConflict()
	}
	return d
}
