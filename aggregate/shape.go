package aggregate

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// The functions below work on raw JSON that json.Valid has accepted, so
// they scan without re-validating. They keep members in the order the
// upstream wrote them and copy values compactly (insignificant whitespace
// removed), which makes the merged document deterministic and small.

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

// stringEnd returns the index just past the string starting at b[i] == '"'.
func stringEnd(b []byte, i int) int {
	i++
	for {
		j := bytes.IndexByte(b[i:], '"')
		if j < 0 {
			return len(b)
		}
		i += j
		// The quote ends the string unless an odd run of backslashes
		// precedes it.
		n := 0
		for k := i - 1; k >= 0 && b[k] == '\\'; k-- {
			n++
		}
		i++
		if n%2 == 0 {
			return i
		}
	}
}

// scanned, when set (by tests), is told how many bytes each scan of an
// object or array by valueEnd covered.
var scanned func(n int)

// valueEnd returns the index just past the value starting at b[i].
func valueEnd(b []byte, i int) int {
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		e := containerEnd(b, i)
		if scanned != nil {
			scanned(e - i)
		}
		return e
	}
	for i < len(b) {
		c := b[i]
		if c == ',' || c == '}' || c == ']' || isSpace(c) {
			break
		}
		i++
	}
	return i
}

// containerEnd returns the index just past the object or array at b[i].
func containerEnd(b []byte, i int) int {
	depth := 0
	for ; i < len(b); i++ {
		switch b[i] {
		case '"':
			i = stringEnd(b, i) - 1
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				return i + 1
			}
		}
	}
	return len(b)
}

// appendCompact appends the value at b[i:end] without insignificant
// whitespace.
func appendCompact(dst, b []byte) []byte {
	for len(b) > 0 {
		// Copy up to the next string or whitespace in one go.
		j := 0
		for j < len(b) && b[j] != '"' && !isSpace(b[j]) {
			j++
		}
		dst = append(dst, b[:j]...)
		b = b[j:]
		if len(b) == 0 {
			break
		}
		if b[0] == '"' {
			e := stringEnd(b, 0)
			dst = append(dst, b[:e]...)
			b = b[e:]
			continue
		}
		b = b[skipSpace(b, 0):]
	}
	return dst
}

// member is one member of an object: its raw key (quotes included) and the
// span of its value.
type member struct {
	key        []byte
	start, end int
}

// nextMember reads the member at b[i] (after '{' or ','), returning it and
// the index after it, or ok false at the closing '}'.
func nextMember(b []byte, i int) (m member, next int, ok bool) {
	i = skipSpace(b, i)
	if i >= len(b) || b[i] == '}' {
		return member{}, i, false
	}
	ke := stringEnd(b, i)
	m.key = b[i:ke]
	i = skipSpace(b, ke) + 1 // ':'
	m.start = skipSpace(b, i)
	m.end = valueEnd(b, m.start)
	i = skipSpace(b, m.end)
	if i < len(b) && b[i] == ',' {
		i++
	}
	return m, i, true
}

// keyName returns the decoded name of a raw key. Keys without escapes, the
// usual case, are not copied by map lookups that convert the result.
func keyName(raw []byte) []byte {
	inner := raw[1 : len(raw)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return inner
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return inner
	}
	return []byte(s)
}

// lookup returns the span of the value at the dotted path fields inside the
// value at b[i:], or ok false when a step is missing. A field steps into an
// object by name, or into an array by index ("items.0").
func lookup(b []byte, i int, fields []string) (start, end int, ok bool) {
	i = skipSpace(b, i)
	if len(fields) == 0 {
		end = len(b)
		for end > i && isSpace(b[end-1]) {
			end--
		}
		return i, end, i < end
	}
	for _, f := range fields {
		if i < len(b) && b[i] == '[' {
			// A number indexes an array.
			n, err := strconv.Atoi(f)
			if err != nil || n < 0 {
				return 0, 0, false
			}
			i = skipSpace(b, i+1)
			for ; n > 0 && i < len(b) && b[i] != ']'; n-- {
				i = skipSpace(b, valueEnd(b, i))
				if i < len(b) && b[i] == ',' {
					i = skipSpace(b, i+1)
				}
			}
			if n > 0 || i >= len(b) || b[i] == ']' {
				return 0, 0, false
			}
			continue
		}
		if i >= len(b) || b[i] != '{' {
			return 0, 0, false
		}
		found := false
		for j := i + 1; ; {
			m, next, more := nextMember(b, j)
			if !more {
				break
			}
			if string(keyName(m.key)) == f {
				i, found = m.start, true
				break
			}
			j = next
		}
		if !found {
			return 0, 0, false
		}
	}
	if i >= len(b) {
		return 0, 0, false
	}
	return i, valueEnd(b, i), true
}

// scalar returns the text of a string, number or boolean value for a path
// template, or ok false for null, objects and arrays.
func scalar(v []byte) (string, bool) {
	if len(v) == 0 {
		return "", false
	}
	switch v[0] {
	case '"':
		if bytes.IndexByte(v, '\\') < 0 {
			return string(v[1 : len(v)-1]), true
		}
		var s string
		if json.Unmarshal(v, &s) != nil {
			return "", false
		}
		return s, true
	case '{', '[', 'n':
		return "", false
	}
	return string(v), true
}

// node is one level of a shaping tree built from Allow, Deny and Rename
// paths. The same node applies to every element of an array.
type node struct {
	children map[string]*node
	allowed  bool   // on an Allow path
	leaf     bool   // end of an Allow path: kept whole (Deny and Rename still apply below)
	deny     bool   // end of a Deny path: dropped
	rename   string // new name; quoted in renameQ
	renameQ  []byte
	restrict bool // only allowed children are kept
	active   bool // this node changes something below it
	targets  map[string]bool
}

// errEmptyPath is a dotted path with an empty segment.
var errEmptyPath = errors.New("empty field name in path")

func splitPath(p string) ([]string, error) {
	fs := strings.Split(p, ".")
	for _, f := range fs {
		if f == "" {
			return nil, fmt.Errorf("path %q: %w", p, errEmptyPath)
		}
	}
	return fs, nil
}

// buildShape builds the shaping tree, or nil when there is nothing to do.
func buildShape(allow, deny []string, renames [][2]string) (*node, error) {
	if len(allow)+len(deny)+len(renames) == 0 {
		return nil, nil
	}
	root := &node{}
	walk := func(p string) (*node, error) {
		fs, err := splitPath(p)
		if err != nil {
			return nil, err
		}
		n := root
		for _, f := range fs {
			c := n.children[f]
			if c == nil {
				if n.children == nil {
					n.children = make(map[string]*node)
				}
				c = &node{}
				n.children[f] = c
			}
			n = c
		}
		return n, nil
	}
	for _, p := range allow {
		fs, err := splitPath(p)
		if err != nil {
			return nil, fmt.Errorf("Allow: %w", err)
		}
		n := root
		for _, f := range fs {
			if n.children == nil {
				n.children = make(map[string]*node)
			}
			c := n.children[f]
			if c == nil {
				c = &node{}
				n.children[f] = c
			}
			c.allowed = true
			n = c
		}
		n.leaf = true
	}
	for _, p := range deny {
		n, err := walk(p)
		if err != nil {
			return nil, fmt.Errorf("Deny: %w", err)
		}
		n.deny = true
	}
	for _, rn := range renames {
		from, to := rn[0], rn[1]
		if to == "" || strings.Contains(to, ".") {
			return nil, fmt.Errorf("Rename %q: new name %q must be a plain, non-empty field name", from, to)
		}
		fs, err := splitPath(from)
		if err != nil {
			return nil, fmt.Errorf("Rename: %w", err)
		}
		n, _ := walk(from)
		if n.rename != "" {
			return nil, fmt.Errorf("Rename %q: renamed twice", from)
		}
		n.rename = to
		n.renameQ, _ = json.Marshal(to)
		parent := root
		for _, f := range fs[:len(fs)-1] {
			parent = parent.children[f]
		}
		if parent.targets[to] {
			return nil, fmt.Errorf("Rename %q: two fields renamed to %q", from, to)
		}
		if parent.targets == nil {
			parent.targets = make(map[string]bool)
		}
		parent.targets[to] = true
	}
	root.finish(len(allow) > 0)
	return root, nil
}

// finish computes restrict and active, top down then bottom up.
func (n *node) finish(restrict bool) {
	n.restrict = restrict
	n.active = restrict || len(n.targets) > 0
	for _, c := range n.children {
		c.finish(restrict && c.allowed && !c.leaf)
		if c.deny || c.rename != "" || c.active {
			n.active = true
		}
	}
}

// maxDepth is how deeply an answer may nest objects and arrays (512
// levels, as documented on ErrInvalidJSON). A deeper answer is invalid:
// it bounds the recursion of shaping and the work it does.
const maxDepth = 512

// depthOK reports whether the JSON value b nests objects and arrays at most
// maxDepth deep.
func depthOK(b []byte) bool {
	d := 0
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '"':
			i = stringEnd(b, i) - 1
		case '{', '[':
			d++
			if d > maxDepth {
				return false
			}
		case '}', ']':
			d--
		}
	}
	return true
}

// shape appends the value v, shaped by n, to dst.
func shape(dst, v []byte, n *node) []byte {
	if len(v) == 0 {
		return dst
	}
	dst, _ = shapeAt(dst, v, skipSpace(v, 0), n)
	return dst
}

// shapeAt appends the value starting at b[i], shaped by n, to dst, and
// returns the index just past that value. Each byte is scanned a bounded
// number of times: containers are walked once, and only a value copied or
// dropped whole is scanned by valueEnd.
func shapeAt(dst, b []byte, i int, n *node) ([]byte, int) {
	if n == nil || !n.active || i >= len(b) || (b[i] != '[' && b[i] != '{') {
		e := valueEnd(b, i)
		return appendCompact(dst, b[i:e]), e
	}
	if b[i] == '{' {
		return shapeObject(dst, b, i, n)
	}
	dst = append(dst, '[')
	first := true
	for i = skipSpace(b, i+1); i < len(b) && b[i] != ']'; {
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst, i = shapeAt(dst, b, i, n)
		i = skipSpace(b, i)
		if i < len(b) && b[i] == ',' {
			i = skipSpace(b, i+1)
		}
	}
	return append(dst, ']'), min(i+1, len(b))
}

// memberKey reads the key of the member at b[i] (after '{' or ','),
// returning it and the index of its value, or ok false and the index of the
// closing '}'.
func memberKey(b []byte, i int) (key []byte, value int, ok bool) {
	i = skipSpace(b, i)
	if i >= len(b) || b[i] == '}' {
		return nil, i, false
	}
	ke := stringEnd(b, i)
	key = b[i:ke]
	i = skipSpace(b, ke) + 1 // ':'
	return key, skipSpace(b, i), true
}

// afterValue returns the index of the next member after a value ending at
// b[e].
func afterValue(b []byte, e int) int {
	i := skipSpace(b, e)
	if i < len(b) && b[i] == ',' {
		i++
	}
	return i
}

// shapeObject is shapeAt for the object at b[i].
func shapeObject(dst, b []byte, i int, n *node) ([]byte, int) {
	// When a renamed field is present, a sibling already bearing its new
	// name is dropped (the renamed field replaces it). This extra pass
	// happens only at objects with a rename, whose nesting the shaping
	// tree bounds.
	var replaced map[string]bool
	if len(n.targets) > 0 {
		for j := i + 1; ; {
			m, next, ok := nextMember(b, j)
			if !ok {
				break
			}
			if c := n.children[string(keyName(m.key))]; c != nil && c.rename != "" && !c.deny && (!n.restrict || c.allowed) {
				if replaced == nil {
					replaced = make(map[string]bool, len(n.targets))
				}
				replaced[c.rename] = true
			}
			j = next
		}
	}
	dst = append(dst, '{')
	first := true
	for j := i + 1; ; {
		key, vs, ok := memberKey(b, j)
		if !ok {
			return append(dst, '}'), min(vs+1, len(b))
		}
		name := keyName(key)
		c := n.children[string(name)]
		if (n.restrict && (c == nil || !c.allowed)) ||
			(c != nil && c.deny) ||
			(replaced != nil && (c == nil || c.rename == "") && replaced[string(name)]) {
			j = afterValue(b, valueEnd(b, vs))
			continue
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		if c != nil && c.rename != "" {
			dst = append(dst, c.renameQ...)
		} else {
			dst = append(dst, key...)
		}
		dst = append(dst, ':')
		var e int
		dst, e = shapeAt(dst, b, vs, c)
		j = afterValue(b, e)
	}
}
