package cache

import (
	"github.com/pylon-gateway/pylon"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// maxKeyLen bounds a cache key; requests whose key would be longer bypass
// the cache.
const maxKeyLen = 8 << 10

// DefaultStripHeaders are the request headers removed from every request the
// cache forwards to fill an entry when Options.StripHeaders is nil. Origins
// and frameworks are known to reflect them into responses (the classic
// unkeyed-input cache-poisoning vectors), while the cache key ignores them.
// The gateway rebuilds X-Forwarded-Host and Forwarded from the request it
// keyed on, so nothing is lost.
var DefaultStripHeaders = []string{
	"Forwarded",
	"X-Forwarded-Host",
	"X-Forwarded-Server",
	"X-Forwarded-Port",
	"X-Forwarded-Prefix",
	"X-Host",
	"X-Original-Host",
	"X-Original-Url",
	"X-Rewrite-Url",
	"X-Http-Method-Override",
	"X-Http-Method",
	"X-Method-Override",
}

// baseKey returns the request's primary key (without subject or Vary
// values) and the normalized raw query, or ok false when the request
// cannot be keyed (unparseable query, key too long).
//
// The key is "GET " + scheme + "://" + lower-cased host + escaped path,
// then "?" + the normalized query when there is one, then for each key
// header present (Options.KeyHeaders) "\x00h" +
// name + ":" + values joined with ",". HEAD is keyed as GET: a HEAD request
// is answered from the stored GET response.
func (c *Cache) baseKey(r *http.Request, info *pylon.RequestInfo) (key, query string, ok bool) {
	query, ok = c.normQuery(r.URL.RawQuery)
	if !ok {
		return "", "", false
	}
	// The scheme and host are the gateway's decision (Options.Trust), the
	// ones the upstream is sent, never a forwarding header the client
	// controls.
	scheme, host := "http://", r.Host
	if r.TLS != nil {
		scheme = "https://"
	}
	if info != nil && info.Scheme != "" {
		host = info.Host
		if info.Scheme == "https" {
			scheme = "https://"
		} else {
			scheme = "http://"
		}
	}
	if host == "" {
		host = r.URL.Host
	}
	path := r.URL.EscapedPath()
	n := 4 + len(scheme) + len(host) + len(path) + 1 + len(query)
	var b strings.Builder
	b.Grow(n + 32)
	b.WriteString("GET ")
	b.WriteString(scheme)
	for i := 0; i < len(host); i++ {
		ch := host[i]
		if 'A' <= ch && ch <= 'Z' {
			ch += 'a' - 'A'
		}
		b.WriteByte(ch)
	}
	b.WriteString(path)
	if query != "" {
		b.WriteByte('?')
		b.WriteString(query)
	}
	for _, name := range c.keyHeaders {
		vv := r.Header[name]
		if len(vv) == 0 {
			continue
		}
		b.WriteString("\x00h")
		b.WriteString(name)
		b.WriteByte(':')
		for i, v := range vv {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strings.TrimSpace(v))
		}
	}
	key = b.String()
	if c.opts.Key != nil {
		key = c.opts.Key(r, key)
	}
	if key == "" || len(key) > maxKeyLen {
		return "", "", false
	}
	return key, query, true
}

// subjectKey extends key with the authenticated subject.
func subjectKey(key, subject string) string {
	return key + "\x00s" + strconv.Quote(subject)
}

// normQuery returns raw with its parameters sorted by name (values of one
// name keep their order) and filtered by QueryParams/IgnoreQueryParams.
// Parameters keep their original encoding. ok is false when raw does not
// parse (bad escapes, or ';', which Go no longer treats as a separator).
func (c *Cache) normQuery(raw string) (string, bool) {
	if raw == "" {
		return "", true
	}
	if strings.IndexByte(raw, ';') >= 0 {
		return "", false
	}
	filter := c.queryAllow != nil || c.queryDeny != nil
	// Fast path: already sorted, valid and nothing to filter.
	sorted, valid := true, true
	prev := ""
	for rest := raw; rest != "" && valid; {
		var part string
		part, rest, _ = strings.Cut(rest, "&")
		name, _, _ := strings.Cut(part, "=")
		if strings.IndexByte(part, '%') >= 0 || strings.IndexByte(part, '+') >= 0 {
			valid = false // needs unescaping: slow path
			break
		}
		if name < prev {
			sorted = false
		}
		prev = name
	}
	if sorted && valid && !filter {
		return raw, true
	}
	type param struct{ name, raw string }
	var params []param
	for rest := raw; rest != ""; {
		var part string
		part, rest, _ = strings.Cut(rest, "&")
		if part == "" {
			continue
		}
		rawName, rawVal, _ := strings.Cut(part, "=")
		name, err := url.QueryUnescape(rawName)
		if err != nil {
			return "", false
		}
		if _, err := url.QueryUnescape(rawVal); err != nil {
			return "", false
		}
		if c.queryAllow != nil && !c.queryAllow[name] {
			continue
		}
		if c.queryDeny != nil && c.queryDeny[name] {
			continue
		}
		params = append(params, param{name, part})
	}
	slices.SortStableFunc(params, func(a, b param) int { return strings.Compare(a.name, b.name) })
	var b strings.Builder
	b.Grow(len(raw))
	for i, p := range params {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(p.raw)
	}
	return b.String(), true
}

// varyNames parses the Vary field lines into canonical, sorted, unique
// names; star reports "*".
func varyNames(vv []string) (names []string, star bool) {
	for _, v := range vv {
		for f := range strings.SplitSeq(v, ",") {
			f = strings.TrimSpace(f)
			if f == "" {
				continue
			}
			if f == "*" {
				return nil, true
			}
			names = append(names, http.CanonicalHeaderKey(f))
		}
	}
	slices.Sort(names)
	return slices.Compact(names), false
}

// variantKey returns the key of the variant of key selected by r's values
// of names, in the marker generation gen. A header r lacks is written as
// its name alone and a present one as name + ":" + values, so an absent
// header only ever matches an absent one, never one present with an empty
// value (RFC 9111 §4.1); for Accept-Encoding the two even mean different
// things (RFC 9110 §12.5.3: empty asks for no coding, absent for any).
func variantKey(key string, gen uint64, names []string, r *http.Request) string {
	var b strings.Builder
	b.Grow(len(key) + 24 + 32*len(names))
	b.WriteString(key)
	b.WriteString("\x00v")
	b.WriteString(strconv.FormatUint(gen, 36))
	for _, name := range names {
		b.WriteByte(0)
		b.WriteString(name)
		if _, ok := r.Header[name]; !ok {
			continue // absent: no ':' (a field name never holds one)
		}
		b.WriteByte(':')
		if name == "Accept-Encoding" {
			b.WriteString(normAcceptEncoding(r.Header[name]))
			continue
		}
		for i, v := range r.Header[name] {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strings.TrimSpace(v))
		}
	}
	return b.String()
}

// normAcceptEncoding returns Accept-Encoding values in a form where values
// that mean the same (RFC 9110 §12.5.3) are equal: codings lower-cased
// ("x-gzip" as "gzip"), each with its qvalue in thousandths, sorted, one
// per coding. Browsers that send "gzip, deflate, br, zstd" in any order and
// spacing then share one stored variant per encoding, as a compression
// middleware after the cache answers them, instead of one per spelling.
func normAcceptEncoding(vals []string) string {
	if len(vals) == 0 {
		return ""
	}
	var elems []string
	for _, line := range vals {
		for e := range strings.SplitSeq(line, ",") {
			name, params, _ := strings.Cut(e, ";")
			name = strings.ToLower(strings.TrimSpace(name))
			if name == "" {
				continue
			}
			if name == "x-gzip" {
				name = "gzip"
			}
			q := "1000"
			for p := range strings.SplitSeq(params, ";") {
				k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
				if ok && strings.EqualFold(strings.TrimSpace(k), "q") {
					q = normQ(strings.TrimSpace(v))
				}
			}
			elems = append(elems, name+"="+q)
		}
	}
	slices.Sort(elems)
	elems = slices.CompactFunc(elems, func(a, b string) bool {
		an, _, _ := strings.Cut(a, "=")
		bn, _, _ := strings.Cut(b, "=")
		return an == bn
	})
	return strings.Join(elems, ";")
}

// normQ writes a qvalue as thousandths ("0.5" → "500"); a malformed one is
// kept as written, so it never shares a variant with a valid one.
func normQ(v string) string {
	if len(v) == 0 || len(v) > 5 || (v[0] != '0' && v[0] != '1') || (len(v) > 1 && v[1] != '.') {
		return "?" + v
	}
	frac := ""
	if len(v) > 2 {
		frac = v[2:]
	}
	for _, c := range frac {
		if c < '0' || c > '9' {
			return "?" + v
		}
	}
	n, _ := strconv.Atoi(v[:1] + (frac + "000")[:3])
	return strconv.Itoa(n)
}
