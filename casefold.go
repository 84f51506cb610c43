package pylon

import (
	"net/http"
	"net/url"
	"strings"
)

// hasUpperASCII reports whether s holds an ASCII upper-case letter.
func hasUpperASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return true
		}
	}
	return false
}

// lowerASCII folds only ASCII letters, so byte offsets stay the same.
func lowerASCII(s string) string {
	if !hasUpperASCII(s) {
		return s
	}
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// literalPath returns the pattern path without its wildcards.
func literalPath(p string) string {
	var b strings.Builder
	for p != "" {
		i := strings.IndexByte(p, '{')
		if i < 0 {
			b.WriteString(p)
			break
		}
		b.WriteString(p[:i])
		j := strings.IndexByte(p[i:], '}')
		if j < 0 {
			break
		}
		p = p[i+j+1:]
	}
	return b.String()
}

// foldPath returns a copy of r whose path is folded to lower case for
// matching; the original URL waits in RequestInfo for unfoldPath.
func foldPath(r *http.Request) *http.Request {
	info := Info(r.Context())
	if info == nil {
		return r
	}
	u := *r.URL
	u.Path, u.RawPath = lowerASCII(u.Path), lowerASCII(u.RawPath)
	info.unfolded = r.URL
	r2 := *r
	r2.URL = &u
	return &r2
}

// unfoldPath gives r back the URL the client sent and reads the pattern's
// path values from it, where the router read them from the folded path.
func unfoldPath(r *http.Request, info *RequestInfo, pattern string) {
	r.URL, info.unfolded = info.unfolded, nil
	p := pattern
	if i := strings.IndexByte(p, '/'); i >= 0 {
		p = p[i:]
	} else {
		return
	}
	segs := strings.Split(r.URL.EscapedPath(), "/")
	for i, ps := range strings.Split(p, "/") {
		if len(ps) < 3 || ps[0] != '{' || ps[len(ps)-1] != '}' || ps == "{$}" {
			continue
		}
		name := ps[1 : len(ps)-1]
		if i >= len(segs) {
			break
		}
		raw := segs[i]
		if n, ok := strings.CutSuffix(name, "..."); ok {
			name, raw = n, strings.Join(segs[i:], "/")
		}
		if v, err := url.PathUnescape(raw); err == nil {
			r.SetPathValue(name, v)
		}
	}
}
