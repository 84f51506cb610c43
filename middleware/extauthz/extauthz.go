// Package extauthz delegates the decision on each request to an external
// authorization service over HTTP, as Envoy's ext_authz (HTTP mode) and
// Traefik's ForwardAuth do.
//
// For each request the gateway asks the service, sending chosen request
// headers (and optionally the first bytes of the body). A 2xx answer admits
// the request: chosen answer headers are copied onto the request passed
// upstream (a client can never set them itself: they are removed from
// every incoming request first). Any other answer (401, 403, a redirect to
// a login page) is returned to the client as the service gave it: status,
// body and chosen headers. When the service cannot answer (unreachable,
// timeout, a 5xx) the failure mode decides: deny with 503 by default, or
// admit when FailOpen is set. A request body that cannot be read (larger
// than the route accepts, stalled, malformed) is the client's failure, not
// the service's: it is answered as a Backend answers it (413, 408 or 400),
// never admitted, whatever the failure mode.
//
// Answers may be cached by a key the user chooses (a session cookie, the
// Authorization header), never longer than CacheTTL; failures are never
// cached.
package extauthz

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/internal/authcache"
)

// Sentinel errors, logged as the reason a request was refused.
var (
	// ErrDenied means the service answered with a status other than 2xx
	// or 5xx; the answer was returned to the client.
	ErrDenied = errors.New("extauthz: denied")
	// ErrUnavailable means the service could not answer (unreachable,
	// timeout, 5xx); the request was denied with 503 unless FailOpen. A
	// request body that cannot be read is not such a failure.
	ErrUnavailable = errors.New("extauthz: authorization service unavailable")
	// ErrConfig is wrapped by every configuration error New returns.
	ErrConfig = errors.New("extauthz: invalid configuration")
)

// Mode is how the request to the authorization service is built.
type Mode uint8

const (
	// ForwardAuth (the zero Mode) sends GET to URL, or the request's own
	// method when a body is sent, with the original request described by
	// X-Forwarded-Method, X-Forwarded-Proto, X-Forwarded-Host,
	// X-Forwarded-Uri and X-Forwarded-For (Traefik ForwardAuth).
	ForwardAuth Mode = iota
	// Envoy sends the request's own method to URL with the request's
	// path appended to URL's path and its query, plus the same
	// X-Forwarded-* headers (Envoy ext_authz HTTP service).
	Envoy
)

// Options configures New. URL is required.
type Options struct {
	// URL is the authorization service, http or https.
	URL string
	// Mode chooses how the service is asked. Zero means ForwardAuth.
	Mode Mode
	// RequestHeaders are the client request's headers sent to the
	// service. Nil means Authorization and Cookie.
	RequestHeaders []string
	// ResponseHeaders are the headers of an admitting answer copied onto
	// the request passed upstream ("X-User-Id", "X-Tenant"). The client's
	// own values of these headers are always removed. Nil means none.
	ResponseHeaders []string
	// DenyHeaders are the headers of a denying answer returned to the
	// client. Nil means WWW-Authenticate, Location, Set-Cookie and
	// Content-Type.
	DenyHeaders []string
	// SubjectHeader is the header of an admitting answer that names the
	// subject, recorded in pylon.RequestInfo.Subject. Empty means none;
	// RequestInfo.Auth is "extauthz" either way.
	SubjectHeader string
	// MaxBodyBytes is how much of the request body is sent to the
	// service; the upstream still gets the whole body. When the body is
	// longer, X-Auth-Partial-Body: true tells the service. Zero means no
	// body is sent. When that much of the body cannot be read, the
	// service is not asked and the request is refused as a Backend
	// refuses it: 413 for a body over the route's MaxBodyBytes, 408 for
	// one that stopped arriving (pylon.ErrBodyTimeout), 400 otherwise,
	// nothing when the client has gone.
	MaxBodyBytes int64
	// MaxDenyBodyBytes bounds the denial body returned to the client.
	// Zero means 64 KiB.
	MaxDenyBodyBytes int64
	// Timeout bounds one call to the service. Zero means 2s.
	Timeout time.Duration
	// FailOpen admits requests, unauthenticated, when the service cannot
	// answer. False (the default) denies them with 503. A request whose
	// body cannot be read is never admitted (see MaxBodyBytes).
	FailOpen bool
	// HTTPClient calls the service; it must not follow redirects, which
	// are answers to return. Nil means a client of its own that does not.
	HTTPClient *http.Client

	// CacheKey returns the key an answer is cached under, for example the
	// session cookie's value. An empty key is not cached. Nil means no
	// cache. The key must cover everything the service decides on: two
	// requests with the same key get the same answer.
	CacheKey func(*http.Request) string
	// CacheTTL is how long an answer is kept. Zero means 10s.
	CacheTTL time.Duration
	// CacheSize bounds the cache in entries. Zero means 10000.
	CacheSize int

	// Logger receives service failures at Warn level, and refusals and
	// unreadable request bodies at Debug level (a refusal is logged once,
	// by the access log). Nil means slog.Default().
	Logger *slog.Logger
	// Now returns the current time, for the cache. Nil means time.Now.
	Now func() time.Time
}

// decision is one answer of the service, as cached.
type decision struct {
	allowed bool
	subject string
	up      http.Header // headers to copy upstream, when allowed
	status  int         // when denied
	header  http.Header // headers to return, when denied
	body    []byte
}

type authz struct {
	o       Options
	base    *url.URL
	reqHdr  []string
	respHdr []string
	denyHdr []string
	subject string
	client  *http.Client
	cache   *authcache.Cache[*decision, struct{}]
	now     func() time.Time
	log     *slog.Logger
}

// New returns the middleware, or an error wrapping ErrConfig.
func New(o Options) (pylon.Middleware, error) {
	base, err := url.Parse(o.URL)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("%w: URL %q is not an http(s) URL", ErrConfig, o.URL)
	}
	a := &authz{o: o, base: base, client: o.HTTPClient, now: o.Now, log: o.Logger}
	canon := func(names []string) []string {
		out := make([]string, len(names))
		for i, n := range names {
			out[i] = http.CanonicalHeaderKey(n)
		}
		return out
	}
	if o.RequestHeaders == nil {
		o.RequestHeaders = []string{"Authorization", "Cookie"}
	}
	if o.DenyHeaders == nil {
		o.DenyHeaders = []string{"WWW-Authenticate", "Location", "Set-Cookie", "Content-Type"}
	}
	a.reqHdr, a.respHdr, a.denyHdr = canon(o.RequestHeaders), canon(o.ResponseHeaders), canon(o.DenyHeaders)
	a.subject = http.CanonicalHeaderKey(o.SubjectHeader)
	if a.o.Timeout <= 0 {
		a.o.Timeout = 2 * time.Second
	}
	if a.o.MaxDenyBodyBytes <= 0 {
		a.o.MaxDenyBodyBytes = 64 << 10
	}
	if a.o.CacheTTL <= 0 {
		a.o.CacheTTL = 10 * time.Second
	}
	if a.client == nil {
		a.client = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	if a.now == nil {
		a.now = time.Now
	}
	if a.log == nil {
		a.log = slog.Default()
	}
	if o.CacheKey != nil {
		size := o.CacheSize
		if size <= 0 {
			size = 10000
		}
		a.cache = authcache.New[*decision, struct{}](size)
	}
	stage := pylon.Stage{Name: "extauthz.New", Roles: pylon.RoleAuthenticate}
	return func(next http.Handler) http.Handler {
		return pylon.WithStage(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			a.serve(w, r, next)
		}), stage)
	}, nil
}

func (a *authz) serve(w http.ResponseWriter, r *http.Request, next http.Handler) {
	// What the service says about the client is never what the client
	// says: drop the client's own values first, on every path.
	for _, h := range a.respHdr {
		r.Header.Del(h)
	}
	info := pylon.Info(r.Context())
	var key string
	now := a.now()
	var d *decision
	if a.cache != nil {
		if key = a.o.CacheKey(r); key != "" {
			d, _ = a.cache.Get(key, now.UnixNano(), struct{}{})
		}
	}
	if d == nil {
		var err error
		d, err = a.ask(r, info)
		var be *bodyError
		if errors.As(err, &be) {
			// The client's failure: the service was not asked, and the
			// failure mode does not apply.
			a.log.LogAttrs(r.Context(), slog.LevelDebug, "extauthz: request body unreadable",
				slog.String("err", be.err.Error()), slog.String("method", r.Method), slog.String("path", r.URL.Path))
			refuseBody(w, r, info, be.err)
			return
		}
		if err != nil {
			a.log.LogAttrs(r.Context(), slog.LevelWarn, "extauthz: service failed",
				slog.String("err", err.Error()), slog.Bool("fail_open", a.o.FailOpen),
				slog.String("method", r.Method), slog.String("path", r.URL.Path))
			if info != nil && info.Error == "" {
				info.Error = err.Error()
			}
			if a.o.FailOpen {
				next.ServeHTTP(w, r)
				return
			}
			if info != nil {
				info.AuthFailure = "unavailable"
			}
			pylon.WriteProblem(w, r, pylon.Problem{Status: http.StatusServiceUnavailable})
			return
		}
		if key != "" {
			a.cache.Put(key, d, now.Add(a.o.CacheTTL).UnixNano(), struct{}{}, now.UnixNano())
		}
	}
	if !d.allowed {
		a.log.LogAttrs(r.Context(), slog.LevelDebug, "extauthz: request denied",
			slog.Int("status", d.status), slog.String("method", r.Method), slog.String("path", r.URL.Path))
		if info != nil && info.Error == "" {
			info.Error, info.AuthFailure = ErrDenied.Error(), "denied"
		}
		if len(d.body) == 0 {
			for h, v := range d.header {
				if h != "Content-Type" {
					w.Header()[h] = v
				}
			}
			pylon.WriteProblem(w, r, pylon.Problem{Status: d.status})
			return
		}
		for h, v := range d.header {
			w.Header()[h] = v
		}
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.WriteHeader(d.status)
		_, _ = w.Write(d.body)
		return
	}
	for h, v := range d.up {
		r.Header[h] = v
	}
	if info != nil {
		info.Subject, info.SubjectScope, info.Auth = d.subject, "", "extauthz"
	}
	next.ServeHTTP(w, r)
}

// bodyError is a failure to read the client's request body, which ask
// returns before calling the service.
type bodyError struct{ err error }

func (e *bodyError) Error() string { return "extauthz: reading the request body: " + e.err.Error() }
func (e *bodyError) Unwrap() error { return e.err }

// refuseBody answers a request whose body could not be read as the root
// Backend answers one (its bodyError): 413 for a body over the route's
// limit, 408 for one that stopped arriving, nothing when the client has
// gone, 400 otherwise.
func refuseBody(w http.ResponseWriter, r *http.Request, info *pylon.RequestInfo, err error) {
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		pylon.Error(w, r, http.StatusRequestEntityTooLarge, "The request body is larger than this route accepts.")
	case errors.Is(err, pylon.ErrBodyTimeout): // checked first: net/http also cancels r's context
		pylon.Error(w, r, http.StatusRequestTimeout, "The request body stopped arriving.")
	case r.Context().Err() == context.Canceled:
		if info != nil {
			info.ClientCanceled, info.Error = true, "client canceled"
		}
	default:
		pylon.Error(w, r, http.StatusBadRequest, "The request body could not be read.")
	}
}

// ask calls the service and reads its decision. It returns an error
// wrapping ErrUnavailable when there is none to read, and a *bodyError,
// without asking, when the request body cannot be read.
func (a *authz) ask(r *http.Request, info *pylon.RequestInfo) (*decision, error) {
	ctx, cancel := context.WithTimeout(r.Context(), a.o.Timeout)
	defer cancel()
	method, u := http.MethodGet, *a.base
	if a.o.Mode == Envoy {
		method = r.Method
		u.Path = strings.TrimSuffix(u.Path, "/") + r.URL.Path
		u.RawPath = ""
		u.RawQuery = r.URL.RawQuery
	}
	var body io.Reader
	partial := false
	if a.o.MaxBodyBytes > 0 && r.Body != nil && r.Body != http.NoBody {
		read, err := io.ReadAll(io.LimitReader(r.Body, a.o.MaxBodyBytes+1))
		if err != nil {
			return nil, &bodyError{err}
		}
		// The upstream gets the whole body: what was read, then the rest.
		r.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(read), r.Body), r.Body}
		buf := read
		if int64(len(buf)) > a.o.MaxBodyBytes {
			partial, buf = true, buf[:a.o.MaxBodyBytes]
		}
		body, method = bytes.NewReader(buf), r.Method
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	for _, h := range a.reqHdr {
		if v := r.Header[h]; len(v) > 0 {
			req.Header[h] = v
		}
	}
	scheme, host, ip := "http", r.Host, ""
	if info != nil {
		if info.Scheme != "" {
			scheme = info.Scheme
		}
		if info.Host != "" {
			host = info.Host
		}
		if info.ClientIP.IsValid() {
			ip = info.ClientIP.String()
		}
	}
	req.Header.Set("X-Forwarded-Method", r.Method)
	req.Header.Set("X-Forwarded-Proto", scheme)
	req.Header.Set("X-Forwarded-Host", host)
	req.Header.Set("X-Forwarded-Uri", r.URL.RequestURI())
	if ip != "" {
		req.Header.Set("X-Forwarded-For", ip)
	}
	if partial {
		req.Header.Set("X-Auth-Partial-Body", "true")
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 500 {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		return nil, fmt.Errorf("%w: service answered %d", ErrUnavailable, resp.StatusCode)
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		d := &decision{allowed: true, up: http.Header{}}
		for _, h := range a.respHdr {
			if v := resp.Header[h]; len(v) > 0 {
				d.up[h] = v
			}
		}
		if a.subject != "" {
			d.subject = resp.Header.Get(a.subject)
		}
		return d, nil
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, a.o.MaxDenyBodyBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%w: reading the denial: %v", ErrUnavailable, err)
	}
	if int64(len(b)) > a.o.MaxDenyBodyBytes {
		b = nil // too large to pass on whole: answer a bare problem instead
	}
	d := &decision{status: resp.StatusCode, header: http.Header{}, body: b}
	for _, h := range a.denyHdr {
		if v := resp.Header[h]; len(v) > 0 {
			d.header[h] = v
		}
	}
	return d, nil
}
