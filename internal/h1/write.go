package h1

import (
	"bufio"
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
)

// checkRequest refuses what the standard transport refuses before sending:
// a method that is not a token, header names that are not tokens, header
// values with control characters. Request.Write checks none of them.
func checkRequest(req *http.Request) error {
	if req.Method != "" && !isToken(req.Method) {
		return fmt.Errorf("h1: invalid method %q", req.Method)
	}
	for k, vv := range req.Header {
		if !isToken(k) {
			return fmt.Errorf("h1: invalid header field name %q", k)
		}
		for _, v := range vv {
			if !validValue(v) {
				return fmt.Errorf("h1: invalid header field value for %q", k)
			}
		}
	}
	return nil
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !tokenChar[s[i]] {
			return false
		}
	}
	return true
}

var tokenChar = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// validValue reports whether v has no control character but tab.
func validValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// simpleHostChar are the bytes a Host written by writeHead may hold; any
// other (a zone, a non-ASCII name) goes through Request.Write, which cleans
// it.
var simpleHostChar = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "-._:[]" {
		t[c] = true
	}
	return t
}()

var headExclude = map[string]bool{"Host": true, "User-Agent": true, "Content-Length": true, "Transfer-Encoding": true, "Trailer": true}

var errNotSimple = errors.New("h1: not a simple request")

// writeHead writes a body-less GET or HEAD request without trailers exactly
// as Request.Write would, without its per-request allocations: the request
// line, Host, User-Agent and Connection: close by hand, the other header
// fields by Header.WriteSubset. It returns errNotSimple, having written
// nothing, for any other request.
func writeHead(bw *bufio.Writer, req *http.Request) error {
	if (req.Method != "GET" && req.Method != "HEAD" && req.Method != "") || len(req.Trailer) > 0 {
		return errNotSimple
	}
	u := req.URL
	if u.Opaque != "" {
		return errNotSimple
	}
	host := req.Host
	if host == "" {
		host = u.Host
	}
	for i := 0; i < len(host); i++ {
		if !simpleHostChar[host[i]] {
			return errNotSimple
		}
	}
	path := u.EscapedPath()
	if path == "" {
		path = "/"
	}
	if hasCTL(path) || hasCTL(u.RawQuery) {
		return errNotSimple
	}
	ua := "Go-http-client/1.1" // Request.Write's default
	if v, ok := req.Header["User-Agent"]; ok {
		ua = ""
		if len(v) > 0 {
			ua = textproto.TrimString(v[0])
		}
		if hasCTL(ua) {
			return errNotSimple
		}
	}
	if req.Method == "HEAD" {
		bw.WriteString("HEAD ")
	} else {
		bw.WriteString("GET ")
	}
	bw.WriteString(path)
	if u.ForceQuery || u.RawQuery != "" {
		bw.WriteByte('?')
		bw.WriteString(u.RawQuery)
	}
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(host)
	bw.WriteString("\r\n")
	if ua != "" {
		bw.WriteString("User-Agent: ")
		bw.WriteString(ua)
		bw.WriteString("\r\n")
	}
	if req.Close && !hasClose(req.Header) {
		bw.WriteString("Connection: close\r\n")
	}
	if err := req.Header.WriteSubset(bw, headExclude); err != nil {
		return err
	}
	_, err := bw.WriteString("\r\n")
	return err
}

func hasCTL(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c == 0x7f {
			return true
		}
	}
	return false
}
