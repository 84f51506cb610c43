package aggregate

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// partKind is what fills one part of a path template.
type partKind uint8

const (
	partLit      partKind = iota // literal text, already escaped
	partWildcard                 // r.PathValue(name)
	partRest                     // r.PathValue(name) of a {name...} wildcard
	partQuery                    // r.URL.Query().Get(name)
	partDep                      // a field of another call's answer
)

type part struct {
	kind    partKind
	lit     string
	name    string   // wildcard or query name; the call key for partDep
	field   []string // partDep: dotted path inside the call's answer
	inQuery bool     // the part is in the query, not the path
	dep     int      // partDep: index of the call depended on
}

// template is a parsed call path: an optional origin (for round trippers)
// and parts.
type template struct {
	origin string // "http://host:port", or empty
	parts  []part
	size   int // literal bytes, to size the builder
}

// parseTemplate parses a call's path template. keys maps call keys to
// their index, to resolve dependencies.
func parseTemplate(s string, absolute bool, keys map[string]int) (*template, error) {
	t := &template{}
	rest := s
	if absolute {
		u, err := url.Parse(strings.NewReplacer("{", "", "}", "").Replace(s))
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, errors.New("a round tripper's path must be an absolute http(s) URL")
		}
		i := strings.Index(s, "://") + 3
		j := strings.IndexByte(s[i:], '/')
		if j < 0 {
			return nil, errors.New("the URL has no path")
		}
		t.origin, rest = s[:i+j], s[i+j:]
		if strings.ContainsAny(t.origin, "{}") {
			return nil, errors.New("placeholders are not allowed in the URL's host")
		}
	}
	if rest == "" || rest[0] != '/' {
		return nil, errors.New("path must start with '/'")
	}
	if strings.IndexByte(rest, '#') >= 0 {
		return nil, errors.New("path must not have a fragment")
	}
	// The literal text must be a valid escaped path and query.
	probe := rest
	for strings.Contains(probe, "{") {
		i := strings.IndexByte(probe, '{')
		j := strings.IndexByte(probe[i:], '}')
		if j < 0 {
			return nil, errors.New("unclosed '{'")
		}
		probe = probe[:i] + "x" + probe[i+j+1:]
	}
	if strings.IndexByte(probe, '}') >= 0 {
		return nil, errors.New("unbalanced '}'")
	}
	if _, err := url.ParseRequestURI(probe); err != nil {
		return nil, fmt.Errorf("invalid path: %v", err)
	}

	inQuery := false
	for rest != "" {
		i := strings.IndexByte(rest, '{')
		if i < 0 {
			i = len(rest)
		}
		if i > 0 {
			lit := rest[:i]
			t.parts = append(t.parts, part{kind: partLit, lit: lit})
			if strings.IndexByte(lit, '?') >= 0 {
				inQuery = true // what follows the first '?' is the query
			}
			t.size += len(lit)
			rest = rest[i:]
			continue
		}
		j := strings.IndexByte(rest, '}')
		name := rest[1:j]
		rest = rest[j+1:]
		p := part{inQuery: inQuery}
		switch {
		case strings.HasPrefix(name, "?"):
			p.kind, p.name = partQuery, name[1:]
			if p.name == "" {
				return nil, errors.New("empty query placeholder {?}")
			}
		case strings.HasSuffix(name, "..."):
			p.kind, p.name = partRest, strings.TrimSuffix(name, "...")
			if inQuery {
				return nil, fmt.Errorf("{%s} may only be used in the path", name)
			}
			if !isIdent(p.name) {
				return nil, fmt.Errorf("invalid wildcard {%s}", name)
			}
		case strings.Contains(name, "."):
			fields := strings.Split(name, ".")
			for _, f := range fields {
				if f == "" {
					return nil, fmt.Errorf("invalid field placeholder {%s}", name)
				}
			}
			idx, ok := keys[fields[0]]
			if !ok {
				return nil, fmt.Errorf("placeholder {%s} names unknown call %q", name, fields[0])
			}
			p.kind, p.name, p.field, p.dep = partDep, fields[0], fields[1:], idx
		default:
			if !isIdent(name) {
				return nil, fmt.Errorf("invalid wildcard {%s}", name)
			}
			p.kind, p.name = partWildcard, name
		}
		t.parts = append(t.parts, p)
	}
	return t, nil
}

// isIdent reports whether s is a valid ServeMux wildcard name (a Go
// identifier).
func isIdent(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		if c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (i > 0 && c >= '0' && c <= '9') || c > 0x7f {
			continue
		}
		return false
	}
	return true
}

// errBadValue is a placeholder value that would not stay one path segment.
var errBadValue = errors.New("aggregate: value is not a safe path segment")

// fill builds the call's URL for request r. dep returns the value of a
// dependency placeholder. A bad value from the client (a wildcard) returns
// clientErr set; a bad value from a dependency returns ErrDependency.
func (t *template) fill(r *http.Request, dep func(p *part) (string, bool)) (s string, clientErr bool, err error) {
	var b strings.Builder
	b.Grow(len(t.origin) + t.size + 32)
	b.WriteString(t.origin)
	var query url.Values
	for i := range t.parts {
		p := &t.parts[i]
		var v string
		switch p.kind {
		case partLit:
			b.WriteString(p.lit)
			continue
		case partWildcard:
			v = r.PathValue(p.name)
		case partRest:
			v = r.PathValue(p.name)
			for k, seg := range strings.Split(v, "/") {
				if !safeSegment(seg) {
					return "", true, errBadValue
				}
				if k > 0 {
					b.WriteByte('/')
				}
				b.WriteString(url.PathEscape(seg))
			}
			continue
		case partQuery:
			if query == nil {
				query = r.URL.Query()
			}
			v = query.Get(p.name)
		case partDep:
			var ok bool
			if v, ok = dep(p); !ok {
				return "", false, fmt.Errorf("%w: no value for {%s.%s}", ErrDependency, p.name, strings.Join(p.field, "."))
			}
		}
		if p.inQuery {
			b.WriteString(url.QueryEscape(v))
			continue
		}
		if !safeSegment(v) {
			if p.kind == partDep {
				return "", false, fmt.Errorf("%w: {%s.%s}: %w", ErrDependency, p.name, strings.Join(p.field, "."), errBadValue)
			}
			return "", p.kind != partDep, errBadValue
		}
		b.WriteString(url.PathEscape(v))
	}
	return b.String(), false, nil
}

// safeSegment reports whether v can stand for one path segment: not empty,
// not a dot segment, and with nothing an upstream might decode into a
// separator.
func safeSegment(v string) bool {
	if v == "" || v == "." || v == ".." {
		return false
	}
	return !strings.ContainsAny(v, "/\\\x00")
}
