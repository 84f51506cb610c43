package middleware

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// SecureHeadersOptions configure [SecureHeaders]. The zero value sends
// X-Content-Type-Options: nosniff, X-Frame-Options: DENY and
// Referrer-Policy: strict-origin-when-cross-origin, and removes Server and
// X-Powered-By.
type SecureHeadersOptions struct {
	// HSTSMaxAge, when positive, sends Strict-Transport-Security with this
	// max-age (rounded down to seconds). Zero means no HSTS header: it is
	// opt-in, because a browser that saw it refuses plain HTTP to the host
	// for that long.
	HSTSMaxAge time.Duration
	// HSTSIncludeSubdomains adds includeSubDomains to the HSTS header.
	HSTSIncludeSubdomains bool
	// HSTSPreload adds preload to the HSTS header.
	HSTSPreload bool
	// FrameOptions is the X-Frame-Options value. Empty means "DENY"; "-"
	// means no header.
	FrameOptions string
	// ReferrerPolicy is the Referrer-Policy value. Empty means
	// "strict-origin-when-cross-origin"; "-" means no header.
	ReferrerPolicy string
	// ContentSecurityPolicy is the Content-Security-Policy value. Empty
	// means no header.
	ContentSecurityPolicy string
	// KeepServerHeaders keeps the upstream's Server and X-Powered-By
	// headers. False removes them: they tell attackers what to attack.
	KeepServerHeaders bool
}

// SecureHeaders returns a middleware that sets security response headers
// just before the response header is written, so they apply to upstream
// responses as well as to the gateway's own. X-Content-Type-Options is
// always nosniff; the other headers replace an upstream's own value, except
// Content-Security-Policy, where an upstream's policy (usually more
// specific to its pages) is kept. Values containing CR, LF or NUL panic at
// start-up.
func SecureHeaders(o SecureHeadersOptions) func(http.Handler) http.Handler {
	type kv struct {
		key  string
		vals []string
		keep bool // keep an existing value
	}
	var set []kv
	add := func(key, val string, keep bool) {
		if strings.ContainsAny(val, "\r\n\x00") {
			panic("middleware: SecureHeaders: bad " + key + " value " + strconv.Quote(val))
		}
		set = append(set, kv{key, []string{val}, keep})
	}
	add("X-Content-Type-Options", "nosniff", false)
	if o.HSTSMaxAge > 0 {
		v := "max-age=" + strconv.FormatInt(int64(o.HSTSMaxAge/time.Second), 10)
		if o.HSTSIncludeSubdomains {
			v += "; includeSubDomains"
		}
		if o.HSTSPreload {
			v += "; preload"
		}
		add("Strict-Transport-Security", v, false)
	}
	switch o.FrameOptions {
	case "":
		add("X-Frame-Options", "DENY", false)
	case "-":
	default:
		add("X-Frame-Options", o.FrameOptions, false)
	}
	switch o.ReferrerPolicy {
	case "":
		add("Referrer-Policy", "strict-origin-when-cross-origin", false)
	case "-":
	default:
		add("Referrer-Policy", o.ReferrerPolicy, false)
	}
	if o.ContentSecurityPolicy != "" {
		add("Content-Security-Policy", o.ContentSecurityPolicy, true)
	}
	strip := !o.KeepServerHeaders
	hook := func(_ int, h http.Header) {
		if strip {
			delete(h, "Server")
			delete(h, "X-Powered-By")
		}
		for _, e := range set {
			if e.keep && len(h[e.key]) > 0 {
				continue
			}
			// The one-element slices are shared by every response; their
			// capacity of 1 makes an append copy them.
			h[e.key] = e.vals[:1:1]
		}
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			next.ServeHTTP(WrapWriterWithOptions(w, WriterOptions{BeforeWriteHeader: hook}), r)
		})
	}
}
