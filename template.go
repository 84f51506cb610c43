package pylon

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// wildcards returns the wildcard names of a ServeMux pattern path, each
// mapped to whether it is a "{name...}" wildcard.
func wildcards(path string) map[string]bool {
	ws := make(map[string]bool)
	for path != "" {
		i := strings.IndexByte(path, '{')
		if i < 0 {
			break
		}
		j := strings.IndexByte(path[i:], '}')
		if j < 0 {
			break
		}
		name := path[i+1 : i+j]
		path = path[i+j+1:]
		if name == "$" {
			continue
		}
		rest := strings.HasSuffix(name, "...")
		ws[strings.TrimSuffix(name, "...")] = rest
	}
	return ws
}

// pathTemplate is a parsed Rewrite template: literal text and wildcards.
type pathTemplate struct {
	parts []tmplPart
}

type tmplPart struct {
	lit, rawLit string // literal text, decoded and escaped
	name        string // wildcard name when lit is empty
	rest        bool
}

// parseTemplate parses a path template such as "/items/{id}/{rest...}",
// checking that each wildcard exists in the route's pattern.
func parseTemplate(t string, known map[string]bool) (*pathTemplate, error) {
	if t == "" || t[0] != '/' {
		return nil, errors.New("template must start with '/'")
	}
	if strings.ContainsAny(t, "?#") {
		return nil, errors.New("template must be a path only")
	}
	pt := &pathTemplate{}
	for t != "" {
		i := strings.IndexByte(t, '{')
		if i < 0 {
			i = len(t)
		}
		if i > 0 {
			lit := t[:i]
			if strings.IndexByte(lit, '}') >= 0 {
				return nil, errors.New("unbalanced '}'")
			}
			pt.parts = append(pt.parts, tmplPart{lit: lit, rawLit: (&url.URL{Path: lit}).EscapedPath()})
			t = t[i:]
			continue
		}
		j := strings.IndexByte(t, '}')
		if j < 0 {
			return nil, errors.New("unclosed '{'")
		}
		name := strings.TrimSuffix(t[1:j], "...")
		rest, ok := known[name]
		if !ok {
			return nil, fmt.Errorf("wildcard {%s} is not in the route's pattern", name)
		}
		pt.parts = append(pt.parts, tmplPart{name: name, rest: rest})
		t = t[j+1:]
	}
	return pt, nil
}

// fill returns the template's path, decoded and escaped, for request r.
// A wildcard's value is escaped so it stays what it matched: a single
// segment never turns into two.
func (pt *pathTemplate) fill(r *http.Request) (path, rawPath string) {
	var p, raw strings.Builder
	for _, part := range pt.parts {
		if part.name == "" {
			p.WriteString(part.lit)
			raw.WriteString(part.rawLit)
			continue
		}
		v := r.PathValue(part.name)
		p.WriteString(v)
		if !part.rest {
			raw.WriteString(url.PathEscape(v))
			continue
		}
		for i, seg := range strings.Split(v, "/") {
			if i > 0 {
				raw.WriteByte('/')
			}
			raw.WriteString(url.PathEscape(seg))
		}
	}
	path, rawPath = p.String(), raw.String()
	if rawPath == (&url.URL{Path: path}).EscapedPath() {
		rawPath = ""
	}
	return path, rawPath
}
