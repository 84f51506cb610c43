package middleware

import (
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// HeaderRules are changes to one header map, applied in the order Remove,
// Set, Add. Names are case-insensitive. The zero value changes nothing.
type HeaderRules struct {
	// Remove lists headers to delete.
	Remove []string
	// Set replaces each named header with the value.
	Set map[string]string
	// Add appends a value to each named header.
	Add map[string]string
}

// HeadersOptions configure [Headers].
type HeadersOptions struct {
	// Request changes the request headers, so the upstream (or the next
	// handler) sees them changed.
	Request HeaderRules
	// Response changes the response headers just before they are written,
	// so they apply to upstream responses as well as to the gateway's own.
	Response HeaderRules
}

// Headers returns a middleware that rewrites request and response headers.
// A name that is not an RFC 9110 token, or a value holding CR, LF or NUL,
// panics at start-up. Host cannot be changed this way (Go keeps it in
// r.Host, not in the header map), so naming it panics too.
func Headers(o HeadersOptions) func(http.Handler) http.Handler {
	req := compileRules("Request", o.Request)
	resp := compileRules("Response", o.Response)
	var hook func(int, http.Header)
	if !resp.empty() {
		hook = func(_ int, h http.Header) { resp.apply(h) }
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			req.apply(r.Header)
			if hook != nil {
				w = WrapWriterWithOptions(w, WriterOptions{BeforeWriteHeader: hook})
			}
			next.ServeHTTP(w, r)
		})
	}
}

type headerOp struct {
	key string
	val []string // one element, capacity 1
}

type compiledRules struct {
	remove   []string
	set, add []headerOp
}

func (c *compiledRules) empty() bool {
	return len(c.remove) == 0 && len(c.set) == 0 && len(c.add) == 0
}

func (c *compiledRules) apply(h http.Header) {
	if h == nil {
		return
	}
	for _, k := range c.remove {
		delete(h, k)
	}
	for _, op := range c.set {
		h[op.key] = op.val[:1:1] // shared; capacity 1 makes appends copy
	}
	for _, op := range c.add {
		if len(h[op.key]) == 0 {
			h[op.key] = op.val[:1:1]
		} else {
			h[op.key] = append(h[op.key], op.val[0])
		}
	}
}

func compileRules(which string, r HeaderRules) compiledRules {
	var c compiledRules
	check := func(name, val string) string {
		if !isToken(name) || strings.EqualFold(name, "Host") {
			panic("middleware: Headers: bad " + which + " header name " + strconv.Quote(name))
		}
		if strings.ContainsAny(val, "\r\n\x00") {
			panic("middleware: Headers: bad " + which + " header value for " + name + ": " + strconv.Quote(val))
		}
		return http.CanonicalHeaderKey(name)
	}
	for _, k := range r.Remove {
		c.remove = append(c.remove, check(k, ""))
	}
	for _, k := range sortedKeys(r.Set) {
		c.set = append(c.set, headerOp{check(k, r.Set[k]), []string{r.Set[k]}})
	}
	for _, k := range sortedKeys(r.Add) {
		c.add = append(c.add, headerOp{check(k, r.Add[k]), []string{r.Add[k]}})
	}
	return c
}

func sortedKeys(m map[string]string) []string {
	return slices.Sorted(maps.Keys(m))
}
