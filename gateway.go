package pylon

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// Middleware wraps a handler. It is an alias, so middlewares written for
// chi, alice or plain net/http plug in unchanged.
type Middleware = func(http.Handler) http.Handler

// Options configures a [Gateway]. Every field's zero value is a safe
// default.
type Options struct {
	// Trust says which peers are proxies whose forwarding headers are
	// believed. It is the one trust setting: the Gateway decides once per
	// request who the client is (address, scheme, host) and records it in
	// RequestInfo, where rate limits, caches, logs, metrics and the headers
	// sent upstream read it. Zero means no proxy is trusted: the client is
	// the connection's peer, and forwarding headers from every client are
	// replaced.
	Trust Trust
	// AllowAmbiguousPaths accepts request paths with encoded slashes,
	// backslashes or dots (%2F, %5C, %2E) and NUL (%00). False means such
	// requests are refused with 400, because the gateway and an upstream may
	// decode them differently and disagree on which resource is meant.
	AllowAmbiguousPaths bool
	// AllowPathParameters accepts request paths holding ';'. False means
	// such requests are refused with 400: Go routes "/admin;x=1" and
	// "/public/..;/admin" as they are written, while Tomcat, Jetty and
	// Spring strip path parameters and would serve "/admin", so a route's
	// authentication could be walked around. Turn it on only when your
	// upstreams treat ';' as an ordinary character or use matrix
	// parameters.
	AllowPathParameters bool
	// CaseInsensitivePaths matches route patterns ignoring the letter case
	// of ASCII letters, for upstreams that fold case (IIS, case-insensitive
	// file systems), where "/ADMIN" is "/admin". The request is forwarded
	// and its path values read as the client wrote them; patterns must then
	// be written in lower case (Err reports one that is not). False means
	// paths are case-sensitive, as RFC 3986 and http.ServeMux have them.
	CaseInsensitivePaths bool
}

// Gateway is the http.Handler at the front: it records a RequestInfo for each
// request, runs the global middleware chain, matches a route and runs the
// route's chain and target. Build it with New, add middleware with Use and
// routes with Route, Group and Handle, then check Err once before serving
// (Run does). A Gateway must not be changed while it serves.
type Gateway struct {
	opts     Options
	mux      *http.ServeMux
	mws      []Middleware
	router   http.Handler      // the ambiguous-path check, then mux
	handler  http.Handler      // the global chain around router
	entries  map[string]*entry // by full ServeMux pattern
	routes   []*Route
	backends []*Backend  // route targets, for readiness
	unready  atomic.Bool // SetDraining: readiness fails by hand
	errs     []error
	stages   []Stage // of the global chain, for checkStages
}

// New returns an empty Gateway.
func New(opts Options) *Gateway {
	g := &Gateway{
		opts:    opts,
		mux:     http.NewServeMux(),
		entries: make(map[string]*entry),
	}
	// The catch-all entry answers what no route matches: 404, or 405 with
	// Allow when the path exists for other methods, both as problem JSON.
	root := &entry{g: g, pattern: "/"}
	g.entries["/"] = root
	g.mux.Handle("/", root)
	g.router = http.HandlerFunc(g.route)
	g.handler = g.router
	return g
}

// Use appends middlewares to the global chain, which runs for every request
// before routing, in the order given (the first is outermost).
func (g *Gateway) Use(mws ...Middleware) {
	g.mws = append(g.mws, mws...)
	g.handler, g.stages = chainStages(g.mws, g.router)
}

// Route starts a route on an http.ServeMux pattern ("GET /orders/{id}",
// "api.example.com/", "POST /items"). Finish it with To or Handler.
func (g *Gateway) Route(pattern string) *Route {
	return g.newRoute(nil, pattern)
}

// Handle routes pattern to h. It is Route(pattern).Handler(h).
func (g *Gateway) Handle(pattern string, h http.Handler) {
	g.Route(pattern).Handler(h)
}

// Group returns a group of routes whose paths start with prefix ("/api/v1")
// and whose chain starts with mws, after the global chain.
func (g *Gateway) Group(prefix string, mws ...Middleware) *Group {
	gr := &Group{g: g, prefix: strings.TrimSuffix(prefix, "/"), mws: slices.Clone(mws)}
	if prefix == "" || prefix[0] != '/' {
		g.errs = append(g.errs, fmt.Errorf("pylon: group %q: prefix must start with '/'", prefix))
	}
	return gr
}

// Err reports every configuration error: invalid or conflicting patterns,
// routes without a target, bad rewrite templates, and chains in an unsafe
// order (see [Role]: a cache or a per-subject rate limit before the
// authentication of the same route). Each error names its route. Err has
// no side effects: it logs nothing and may be called any number of times.
// Run refuses to serve a Gateway whose Err is not nil and returns that
// error, unlogged, for the program to report once; call Err yourself before
// serving a Gateway otherwise.
func (g *Gateway) Err() error {
	errs := slices.Clone(g.errs)
	names := make(map[string]bool, len(g.routes))
	for _, rt := range g.routes {
		if !rt.done {
			errs = append(errs, fmt.Errorf("pylon: route %q: no target: finish it with To or Handler", rt.name))
		}
		if names[rt.name] {
			errs = append(errs, fmt.Errorf("pylon: route %q: name is used by another route", rt.name))
		}
		names[rt.name] = true
		if rt.done {
			errs = append(errs, checkStages(rt.name, slices.Concat(g.stages, rt.stages))...)
		}
	}
	return errors.Join(errs...)
}

// RouteEntry describes one route of the table returned by Routes.
type RouteEntry struct {
	// Name is the route's name (its pattern unless named).
	Name string
	// Pattern is the full http.ServeMux pattern, group prefix included.
	Pattern string
	// Matchers lists the header and query conditions ("header X-Version=2").
	Matchers []string
	// Target is "backend NAME" or "handler TYPE".
	Target string
	// Middleware is the number of group and route middlewares.
	Middleware int
	// Timeout is the route's deadline, zero when none.
	Timeout time.Duration
}

// Routes returns the route table in the order the routes were declared.
func (g *Gateway) Routes() []RouteEntry {
	out := make([]RouteEntry, 0, len(g.routes))
	for _, rt := range g.routes {
		e := RouteEntry{Name: rt.name, Pattern: rt.pattern, Target: rt.targetDesc, Timeout: rt.timeout}
		for _, m := range rt.matchers {
			e.Matchers = append(e.Matchers, m.String())
		}
		e.Middleware = len(rt.chainMws())
		out = append(out, e)
	}
	return out
}

// Backends returns the backends that routes send requests to (with To), in
// the order they were first routed, for status pages and metrics. Backends
// used only inside handlers (an aggregation's) are not listed.
func (g *Gateway) Backends() []*Backend { return slices.Clone(g.backends) }

// SetDraining makes the readiness handler of [Gateway.Health] answer 503
// "draining" (true) or not (false), by hand: an operator takes a replica out
// of its load balancer's rotation while it keeps serving the requests that
// still reach it, as Run does during RunOptions.DrainDelay. It is safe to
// call while the Gateway serves.
func (g *Gateway) SetDraining(draining bool) { g.unready.Store(draining) }

// Draining reports whether SetDraining(true) is in effect.
func (g *Gateway) Draining() bool { return g.unready.Load() }

// ServeHTTP serves r: it records a RequestInfo, decides who the client is
// (Options.Trust), removes the headers the client's Connection header names,
// and hands r to the global chain and the router.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := &infoCtx{Context: r.Context()}
	info := &ctx.info
	info.Start = time.Now()
	g.opts.Trust.Identify(info, r)
	if r.Header["Connection"] != nil {
		stripConnectionNamed(r.Header)
	}
	info.connStripped = true
	if r.Header["Content-Type"] != nil && (IsGRPC(r) || IsGRPCWeb(r)) {
		info.GRPCService, info.GRPCMethod = grpcMethod(r.URL.Path)
	}
	g.handler.ServeHTTP(w, r.WithContext(ctx))
}

// route is the end of the global chain: it applies the path policy (after
// the global middlewares, so that logs and metrics count what it refuses)
// and hands the request to the router.
func (g *Gateway) route(w http.ResponseWriter, r *http.Request) {
	if !g.opts.AllowAmbiguousPaths && ambiguousPath(r.URL) {
		Error(w, r, http.StatusBadRequest, "The request path contains an ambiguous encoding.")
		return
	}
	if !g.opts.AllowPathParameters && strings.IndexByte(r.URL.EscapedPath(), ';') >= 0 {
		Error(w, r, http.StatusBadRequest, "The request path contains a path parameter (';').")
		return
	}
	if g.opts.CaseInsensitivePaths && hasUpperASCII(r.URL.Path) {
		r = foldPath(r)
	}
	g.mux.ServeHTTP(w, r)
}

// ambiguousPath reports whether u's path holds a backslash or NUL, or its
// escaped form encodes a slash or a dot, which servers decode differently.
func ambiguousPath(u *url.URL) bool {
	if strings.IndexByte(u.Path, '\\') >= 0 || strings.IndexByte(u.Path, 0) >= 0 {
		return true
	}
	raw := u.RawPath
	for i := 0; i+2 < len(raw); i++ {
		if raw[i] != '%' {
			continue
		}
		switch raw[i+1] {
		case '2':
			if c := raw[i+2]; c == 'f' || c == 'F' || c == 'e' || c == 'E' {
				return true
			}
		case '5':
			if c := raw[i+2]; c == 'c' || c == 'C' {
				return true
			}
		case '0':
			if raw[i+2] == '0' {
				return true
			}
		}
	}
	return false
}

// entry serves one ServeMux pattern: the routes sharing it, tried in order
// (routes with matchers first, then the one without).
type entry struct {
	g       *Gateway
	pattern string
	routes  []*Route
	vary    []string // the header names the routes' matchers read, for Vary
}

func (e *entry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if e.g.opts.CaseInsensitivePaths { // else nothing was folded
		if info := Info(r.Context()); info != nil && info.unfolded != nil {
			unfoldPath(r, info, e.pattern)
		}
	}
	for _, rt := range e.routes {
		if rt.match(r) {
			rt.handler.ServeHTTP(w, r)
			return
		}
	}
	e.g.notFound(w, r, len(e.routes) > 0)
}

func (e *entry) add(rt *Route) error {
	for _, o := range e.routes {
		if sameMatchers(o.matchers, rt.matchers) {
			if len(rt.matchers) == 0 {
				return fmt.Errorf("pylon: route %q: pattern %q is already routed by %q", rt.name, rt.pattern, o.name)
			}
			return fmt.Errorf("pylon: route %q: pattern %q with the same matchers is already routed by %q", rt.name, rt.pattern, o.name)
		}
	}
	e.routes = append(e.routes, rt)
	rt.entry = e
	for _, m := range rt.matchers {
		if m.header && !slices.Contains(e.vary, m.name) {
			e.vary = append(e.vary, m.name)
		}
	}
	// Routes with matchers are tried first, in the order declared; the one
	// without (the fallback) last.
	slices.SortStableFunc(e.routes, func(a, b *Route) int {
		return boolInt(len(a.matchers) == 0) - boolInt(len(b.matchers) == 0)
	})
	return nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

var allMethods = [...]string{
	http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
	http.MethodDelete, http.MethodOptions, http.MethodTrace,
}

// notFound answers a request no route took: 405 with Allow when the path is
// routed for other methods, else 404. patternMatched means the request's
// own method matched a pattern whose matchers all refused it.
func (g *Gateway) notFound(w http.ResponseWriter, r *http.Request, patternMatched bool) {
	if !patternMatched {
		var allow []string
		for _, m := range allMethods {
			if m == r.Method {
				continue
			}
			r2 := *r
			r2.Method = m
			if _, p := g.mux.Handler(&r2); p != "" {
				if e := g.entries[p]; e != nil && len(e.routes) > 0 {
					allow = append(allow, m)
				}
			}
		}
		if len(allow) > 0 {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			Error(w, r, http.StatusMethodNotAllowed, "The method is not allowed for this resource.")
			return
		}
	}
	Error(w, r, http.StatusNotFound, "No route matches this request.")
}

// register adds a finished route to the router.
func (g *Gateway) register(rt *Route) {
	if g.opts.CaseInsensitivePaths && hasUpperASCII(literalPath(rt.path)) {
		rt.errorf("pattern path has upper-case letters, which never match with CaseInsensitivePaths; write it in lower case")
		return
	}
	e := g.entries[rt.pattern]
	if e == nil {
		e = &entry{g: g, pattern: rt.pattern}
		if err := muxHandle(g.mux, rt.pattern, e); err != nil {
			g.errs = append(g.errs, fmt.Errorf("pylon: route %q: %w", rt.name, err))
			return
		}
		g.entries[rt.pattern] = e
	}
	if err := e.add(rt); err != nil {
		g.errs = append(g.errs, err)
	}
}

// muxHandle registers h, turning ServeMux's panic on an invalid or
// conflicting pattern into an error.
func muxHandle(mux *http.ServeMux, pattern string, h http.Handler) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%v", p)
		}
	}()
	mux.Handle(pattern, h)
	return nil
}

// MustNewBackend is NewBackend for start-up wiring: it panics where
// NewBackend fails, so that a misconfigured backend stops the program before
// it serves. Like every Must function in Pylon, it is named after the
// constructor it wraps.
func MustNewBackend(name string, opts BackendOptions) *Backend {
	b, err := NewBackend(name, opts)
	if err != nil {
		panic(err)
	}
	return b
}
