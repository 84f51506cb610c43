package middleware

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/pylon-gateway/pylon"
)

// MaxCORSRequestHeaders is the most header names a preflight's
// Access-Control-Request-Headers may list; a longer list is refused.
const MaxCORSRequestHeaders = 64

// CORSOptions configure [CORS].
type CORSOptions struct {
	// AllowedOrigins lists the origins allowed to read responses, each
	// matched exactly against the Origin header ("https://app.example.com",
	// scheme and optional port included, no trailing slash), or a pattern
	// with one "*" for one or more DNS labels ("https://*.example.com"
	// matches "https://a.example.com" and "https://a.b.example.com", not
	// "https://example.com"). "*" alone allows every origin and is refused
	// together with AllowCredentials. The "null" origin (sandboxed frames,
	// file: pages) is allowed only when "null" is listed. Empty means no
	// origin: the middleware then only adds Vary: Origin.
	AllowedOrigins []string
	// AllowedMethods are the methods a preflight may ask for. Empty means
	// GET, HEAD and POST.
	AllowedMethods []string
	// AllowedHeaders are the request headers (case-insensitive) a preflight
	// may ask for. Empty means none beyond the CORS-safelisted ones.
	AllowedHeaders []string
	// ExposedHeaders are the response headers a page may read beyond the
	// CORS-safelisted ones. Empty means none.
	ExposedHeaders []string
	// AllowCredentials lets pages send cookies and HTTP authentication and
	// read the answer. The Origin is then echoed, never "*".
	AllowCredentials bool
	// MaxAge is how long a browser may cache a preflight answer, rounded
	// down to seconds. Zero means no Access-Control-Max-Age header (the
	// browser's default, 5 seconds); negative means "-1" (no caching).
	MaxAge time.Duration
}

// CORS returns a middleware implementing Cross-Origin Resource Sharing as
// the Fetch standard describes it. Misconfiguration (an empty or malformed
// origin, "*" with credentials, a header name that is not a token) panics
// at start-up.
//
// A preflight (OPTIONS with Origin and Access-Control-Request-Method) is
// answered here, with 204 when the origin, method and headers are allowed
// and with a 403 problem otherwise, without calling the next handler: place
// CORS before authentication and rate limiting so preflights are neither
// rejected nor counted by them.
//
// Any other request is passed on. When its Origin is allowed, the response
// carries Access-Control-Allow-Origin (and -Credentials, -Expose-Headers);
// these replace any Access-Control-* headers the upstream set, so a backend
// with CORS of its own cannot widen the policy. Every response gets
// Vary: Origin unless every origin is allowed without credentials.
func CORS(o CORSOptions) func(http.Handler) http.Handler {
	c := newCORS(o)
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c.serve(next, w, r)
		})
	}
}

type corsPolicy struct {
	any      bool                // "*"
	exact    map[string]struct{} // exact origins, including "null"
	patterns []originPattern
	methods  []string
	headers  map[string]struct{} // lower case
	creds    bool

	allowMethods string
	expose       string
	exposeV      []string                         // expose as a header value, shared by every response
	applyFn      func(int, http.Header, []string) // c.apply, bound once: a method value allocates
	maxAge       string
}

type originPattern struct{ prefix, suffix string } // "https://" and ".example.com"

func newCORS(o CORSOptions) *corsPolicy {
	c := &corsPolicy{exact: map[string]struct{}{}, headers: map[string]struct{}{}, creds: o.AllowCredentials}
	for _, origin := range o.AllowedOrigins {
		switch {
		case origin == "*":
			if o.AllowCredentials {
				panic("middleware: CORS: AllowedOrigins \"*\" with AllowCredentials")
			}
			c.any = true
		case strings.Count(origin, "*") == 1:
			i := strings.IndexByte(origin, '*')
			p := originPattern{prefix: origin[:i], suffix: origin[i+1:]}
			if !strings.HasSuffix(p.prefix, "://") || !strings.HasPrefix(p.suffix, ".") || strings.ContainsAny(p.suffix, "/*") || len(p.suffix) < 2 {
				panic("middleware: CORS: bad origin pattern " + strconv.Quote(origin))
			}
			c.patterns = append(c.patterns, p)
		case origin == "null" || (strings.Contains(origin, "://") && !strings.HasSuffix(origin, "/") && !strings.ContainsAny(origin, "* \t\r\n")):
			c.exact[origin] = struct{}{}
		default:
			panic("middleware: CORS: bad origin " + strconv.Quote(origin))
		}
	}
	c.methods = o.AllowedMethods
	if len(c.methods) == 0 {
		c.methods = []string{http.MethodGet, http.MethodHead, http.MethodPost}
	}
	for _, m := range c.methods {
		if !isToken(m) {
			panic("middleware: CORS: bad method " + strconv.Quote(m))
		}
	}
	c.allowMethods = strings.Join(c.methods, ", ")
	for _, h := range o.AllowedHeaders {
		if !isToken(h) {
			panic("middleware: CORS: bad header name " + strconv.Quote(h))
		}
		c.headers[strings.ToLower(h)] = struct{}{}
	}
	for _, h := range o.ExposedHeaders {
		if !isToken(h) {
			panic("middleware: CORS: bad header name " + strconv.Quote(h))
		}
	}
	c.expose = strings.Join(o.ExposedHeaders, ", ")
	c.exposeV = []string{c.expose}
	c.applyFn = c.apply
	switch {
	case o.MaxAge > 0:
		c.maxAge = strconv.FormatInt(int64(o.MaxAge/time.Second), 10)
	case o.MaxAge < 0:
		c.maxAge = "-1"
	}
	return c
}

// allowed reports whether origin may read responses.
func (c *corsPolicy) allowed(origin string) bool {
	if origin == "" {
		return false
	}
	if _, ok := c.exact[origin]; ok {
		return true
	}
	if origin == "null" {
		return false
	}
	if c.any {
		return true
	}
	for _, p := range c.patterns {
		if len(origin) > len(p.prefix)+len(p.suffix) && strings.HasPrefix(origin, p.prefix) && strings.HasSuffix(origin, p.suffix) {
			if validHostLabels(origin[len(p.prefix) : len(origin)-len(p.suffix)]) {
				return true
			}
		}
	}
	return false
}

// validHostLabels reports whether s is one or more DNS labels (letters,
// digits, hyphens, separated by dots).
func validHostLabels(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' && s[i-1] != '.') {
			return false
		}
	}
	return true
}

func (c *corsPolicy) serve(next http.Handler, w http.ResponseWriter, r *http.Request) {
	origin := r.Header.Get("Origin")
	if r.Method == http.MethodOptions && origin != "" && r.Header.Get("Access-Control-Request-Method") != "" {
		c.preflight(w, r, origin)
		return
	}
	if !c.any || c.creds {
		h := w.Header()
		if _, exists := h["Vary"]; exists {
			h.Add("Vary", "Origin")
		} else {
			h["Vary"] = varyOrigin[:1:1] // shared; capacity 1 makes appends copy
		}
	}
	base := rw{before: stripCORS}
	if c.allowed(origin) {
		// The request's own Origin value slice is echoed: sharing it costs
		// nothing, and its capacity of one makes any append copy.
		vals := r.Header["Origin"]
		if len(vals) == 0 || vals[0] != origin {
			vals = []string{origin}
		}
		base = rw{beforeVals: c.applyFn, vals: vals[:1:1]}
		if c.any && !c.creds {
			base.vals = anyOrigin
		}
	}
	next.ServeHTTP(wrap(w, base), r)
}

var varyOrigin = []string{"Origin"}

// stripCORS removes the upstream's CORS response headers, so that a backend
// with CORS of its own cannot widen the policy.
func stripCORS(_ int, h http.Header) {
	for k := range h {
		if strings.HasPrefix(k, "Access-Control-") {
			delete(h, k)
		}
	}
}

// corsState is one request's CORS response headers, for an allowed origin.
var (
	anyOrigin = []string{"*"}
	credsTrue = []string{"true"}
)

// apply replaces the upstream's CORS response headers with ours; origin is
// the one-value Access-Control-Allow-Origin.
func (c *corsPolicy) apply(status int, h http.Header, origin []string) {
	stripCORS(status, h)
	h["Access-Control-Allow-Origin"] = origin
	if c.creds {
		h["Access-Control-Allow-Credentials"] = credsTrue
	}
	if c.expose != "" {
		h["Access-Control-Expose-Headers"] = c.exposeV
	}
}

func (c *corsPolicy) preflight(w http.ResponseWriter, r *http.Request, origin string) {
	h := w.Header()
	h.Add("Vary", "Origin, Access-Control-Request-Method, Access-Control-Request-Headers")
	if !c.allowed(origin) {
		pylon.Error(w, r, http.StatusForbidden, "CORS: origin not allowed")
		return
	}
	method := r.Header.Get("Access-Control-Request-Method")
	if !c.methodAllowed(method) {
		pylon.Error(w, r, http.StatusForbidden, "CORS: method not allowed")
		return
	}
	reqHeaders, ok := c.headersAllowed(r.Header.Values("Access-Control-Request-Headers"))
	if !ok {
		pylon.Error(w, r, http.StatusForbidden, "CORS: request header not allowed")
		return
	}
	if c.any && !c.creds {
		h.Set("Access-Control-Allow-Origin", "*")
	} else {
		h.Set("Access-Control-Allow-Origin", origin)
	}
	if c.creds {
		h.Set("Access-Control-Allow-Credentials", "true")
	}
	h.Set("Access-Control-Allow-Methods", c.allowMethods)
	if reqHeaders != "" {
		h.Set("Access-Control-Allow-Headers", reqHeaders)
	}
	if c.maxAge != "" {
		h.Set("Access-Control-Max-Age", c.maxAge)
	}
	w.WriteHeader(http.StatusNoContent)
}

func (c *corsPolicy) methodAllowed(m string) bool {
	for _, a := range c.methods {
		if a == m { // methods are case-sensitive (Fetch normalizes the six common ones)
			return true
		}
	}
	return false
}

// headersAllowed checks a preflight's Access-Control-Request-Headers and
// returns the list to echo in Access-Control-Allow-Headers.
func (c *corsPolicy) headersAllowed(lines []string) (string, bool) {
	count := 0
	for _, line := range lines {
		for name := range strings.SplitSeq(line, ",") {
			name = strings.TrimSpace(name)
			if name == "" {
				continue
			}
			count++
			if count > MaxCORSRequestHeaders || !isToken(name) {
				return "", false
			}
			if _, ok := c.headers[strings.ToLower(name)]; !ok {
				return "", false
			}
		}
	}
	if count == 0 {
		return "", true
	}
	return strings.ToLower(strings.Join(lines, ",")), true
}

// isToken reports whether s is an RFC 9110 token (a valid method or header
// name).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}
