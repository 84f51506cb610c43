package cache

import (
	"strings"
	"unicode/utf8"
)

// The subset of Structured Field Values (RFC 9651) that targeted
// cache-control fields (RFC 9213) need: a Dictionary parser. Every bare item
// type is parsed, so that a valid field is never rejected and an invalid
// one always is; only Booleans, Integers and Strings carry values the cache
// uses. Parameters are parsed and discarded.

// sfKind is the type of a bare item.
type sfKind byte

const (
	sfBool sfKind = iota + 1
	sfInteger
	sfDecimal
	sfString
	sfToken
	sfBytes
	sfDate
	sfDisplayString
	sfInnerList
)

// sfItem is a member value: its type, and for Booleans and Integers the
// value in n (1 or 0 for Booleans).
type sfItem struct {
	kind sfKind
	n    int64
}

type sfMember struct {
	key string
	val sfItem
	// conflict: the key appeared more than once with different values.
	conflict bool
}

// maxSFMembers bounds a dictionary: a targeted field with more members is
// invalid.
const maxSFMembers = 64

type sfParser struct {
	s   string
	i   int
	bad bool
}

func (p *sfParser) peek() byte {
	if p.i < len(p.s) {
		return p.s[p.i]
	}
	return 0
}

func (p *sfParser) eof() bool { return p.i >= len(p.s) }

func (p *sfParser) fail() { p.bad = true }

// parseSFDictionary parses field lines as a Dictionary (RFC 9651 §4.2.2),
// combining them with commas (§4.2). A key seen twice keeps its last
// value, in its first position, and is marked conflict when the values
// differ. ok is false when the input is not a valid dictionary.
func parseSFDictionary(lines []string) (members []sfMember, ok bool) {
	s := lines[0]
	if len(lines) > 1 {
		s = strings.Join(lines, ",")
	}
	p := sfParser{s: strings.Trim(s, " ")} // §4.2: leading and trailing SP
	for !p.eof() && !p.bad {
		key := p.key()
		var v sfItem
		if p.peek() == '=' {
			p.i++
			if p.peek() == '(' {
				p.innerList()
				v = sfItem{kind: sfInnerList}
			} else {
				v = p.bareItem()
			}
		} else {
			v = sfItem{kind: sfBool, n: 1}
		}
		p.params()
		if p.bad {
			break
		}
		dup := false
		for i := range members {
			if members[i].key == key {
				members[i].conflict = members[i].conflict || members[i].val != v
				members[i].val, dup = v, true
			}
		}
		if !dup {
			if len(members) == maxSFMembers {
				return nil, false
			}
			members = append(members, sfMember{key: key, val: v})
		}
		p.ows()
		if p.eof() {
			return members, true
		}
		if p.peek() != ',' {
			p.fail()
			break
		}
		p.i++
		p.ows()
		if p.eof() {
			p.fail() // trailing comma
		}
	}
	if p.bad {
		return nil, false
	}
	return members, true
}

func (p *sfParser) ows() {
	for p.peek() == ' ' || p.peek() == '\t' {
		p.i++
	}
}

func isLCAlpha(c byte) bool { return 'a' <= c && c <= 'z' }
func isDigit(c byte) bool   { return '0' <= c && c <= '9' }
func isAlpha(c byte) bool   { return isLCAlpha(c) || ('A' <= c && c <= 'Z') }

// isTChar: RFC 9110 §5.6.2 tchar.
func isTChar(c byte) bool {
	return isAlpha(c) || isDigit(c) || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// key: ( lcalpha / "*" ) *( lcalpha / DIGIT / "_" / "-" / "." / "*" ).
func (p *sfParser) key() string {
	start := p.i
	if c := p.peek(); !isLCAlpha(c) && c != '*' {
		p.fail()
		return ""
	}
	p.i++
	for !p.eof() {
		c := p.peek()
		if !isLCAlpha(c) && !isDigit(c) && c != '_' && c != '-' && c != '.' && c != '*' {
			break
		}
		p.i++
	}
	return p.s[start:p.i]
}

// params: *( ";" *SP key [ "=" bare-item ] ), discarded.
func (p *sfParser) params() {
	for !p.bad && p.peek() == ';' {
		p.i++
		for p.peek() == ' ' {
			p.i++
		}
		p.key()
		if p.peek() == '=' {
			p.i++
			p.bareItem()
		}
	}
}

// innerList: "(" *SP [ item *( 1*SP item ) *SP ] ")" parameters.
func (p *sfParser) innerList() {
	p.i++ // (
	for !p.bad {
		for p.peek() == ' ' {
			p.i++
		}
		if p.peek() == ')' {
			p.i++
			return
		}
		if p.eof() {
			p.fail()
			return
		}
		p.bareItem()
		p.params()
		if c := p.peek(); c != ' ' && c != ')' {
			p.fail()
		}
	}
}

func (p *sfParser) bareItem() sfItem {
	switch c := p.peek(); {
	case c == '-' || isDigit(c):
		return p.number()
	case c == '"':
		p.str()
		return sfItem{kind: sfString}
	case c == '*' || isAlpha(c):
		p.i++
		for !p.eof() && (isTChar(p.peek()) || p.peek() == ':' || p.peek() == '/') {
			p.i++
		}
		return sfItem{kind: sfToken}
	case c == ':':
		p.i++
		for !p.eof() && p.peek() != ':' {
			c := p.peek()
			if !isAlpha(c) && !isDigit(c) && c != '+' && c != '/' && c != '=' {
				p.fail()
				return sfItem{}
			}
			p.i++
		}
		if p.eof() {
			p.fail()
			return sfItem{}
		}
		p.i++
		return sfItem{kind: sfBytes}
	case c == '?':
		p.i++
		switch p.peek() {
		case '0', '1':
			n := int64(p.peek() - '0')
			p.i++
			return sfItem{kind: sfBool, n: n}
		}
	case c == '@':
		p.i++
		if it := p.number(); it.kind != sfInteger {
			p.fail()
		}
		return sfItem{kind: sfDate}
	case c == '%':
		p.i++
		p.displayString()
		return sfItem{kind: sfDisplayString}
	}
	p.fail()
	return sfItem{}
}

// number: Integer (at most 15 digits) or Decimal (at most 12 integer
// digits, 1 to 3 fractional), RFC 9651 §4.2.4.
func (p *sfParser) number() sfItem {
	neg := false
	if p.peek() == '-' {
		neg = true
		p.i++
	}
	if !isDigit(p.peek()) {
		p.fail()
		return sfItem{}
	}
	var n int64
	intDigits, fracDigits, decimal := 0, 0, false
	for !p.eof() {
		c := p.peek()
		if isDigit(c) {
			if decimal {
				fracDigits++
			} else {
				intDigits++
				n = n*10 + int64(c-'0')
			}
		} else if c == '.' && !decimal {
			if intDigits > 12 {
				p.fail()
				return sfItem{}
			}
			decimal = true
		} else {
			break
		}
		if (!decimal && intDigits > 15) || fracDigits > 3 {
			p.fail()
			return sfItem{}
		}
		p.i++
	}
	if decimal {
		if fracDigits == 0 {
			p.fail() // a trailing "."
		}
		return sfItem{kind: sfDecimal}
	}
	if neg {
		n = -n
	}
	return sfItem{kind: sfInteger, n: n}
}

// str: DQUOTE *( unescaped / "%x5C" ( DQUOTE / "\" ) ) DQUOTE, printable
// ASCII only.
func (p *sfParser) str() {
	p.i++
	for !p.eof() {
		c := p.peek()
		p.i++
		switch {
		case c == '\\':
			if n := p.peek(); n != '"' && n != '\\' {
				p.fail()
				return
			}
			p.i++
		case c == '"':
			return
		case c < 0x20 || c > 0x7e:
			p.fail()
			return
		}
	}
	p.fail() // unterminated
}

// displayString: "%" DQUOTE *( unescaped / "\" / pct-encoded ) DQUOTE,
// lower-case hex, decoding to valid UTF-8 (RFC 9651 §4.2.10).
func (p *sfParser) displayString() {
	if p.peek() != '"' {
		p.fail()
		return
	}
	p.i++
	var b []byte
	for !p.eof() {
		c := p.peek()
		p.i++
		switch {
		case c == '"':
			if !utf8.Valid(b) {
				p.fail()
			}
			return
		case c == '%':
			if p.i+2 > len(p.s) {
				p.fail()
				return
			}
			h, l := unhexLower(p.s[p.i]), unhexLower(p.s[p.i+1])
			if h < 0 || l < 0 {
				p.fail()
				return
			}
			b = append(b, byte(h<<4|l))
			p.i += 2
		case c < 0x20 || c > 0x7e:
			p.fail()
			return
		default:
			b = append(b, c)
		}
	}
	p.fail()
}

func unhexLower(c byte) int {
	switch {
	case isDigit(c):
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	}
	return -1
}
