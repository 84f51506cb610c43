package pylon

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Group is a set of routes sharing a path prefix and a middleware chain.
type Group struct {
	g      *Gateway
	parent *Group
	prefix string
	mws    []Middleware
	strip  bool   // StripPrefix or RewritePrefix: routes forward without the prefix
	to     string // RewritePrefix: what they forward with instead
}

// StripPrefix makes the group's routes forward without the group's full
// prefix (its parents' included): in group "/api/v1", "GET /orders/{id}"
// matches "/api/v1/orders/42" and forwards "/orders/42". It applies to
// routes started in the group (and its nested groups) after the call; a
// route's own StripPrefix or Rewrite replaces it. A Location header the
// target answers with gets the prefix back, absolute or relative.
func (gr *Group) StripPrefix() *Group {
	gr.strip, gr.to = true, ""
	return gr
}

// RewritePrefix makes the group's routes forward with prefix to in place of
// the group's full prefix: in group "/api/v1" with RewritePrefix("/v1"),
// "/api/v1/orders/42" forwards "/v1/orders/42". to must begin with '/';
// "/" is StripPrefix. Like StripPrefix, it applies to routes started after
// the call, a route's own StripPrefix or Rewrite replaces it, and Location
// headers under to are mapped back ("/v1/orders/43" to
// "/api/v1/orders/43"); one outside to ("/other") keeps its path.
func (gr *Group) RewritePrefix(to string) *Group {
	to = strings.TrimSuffix(to, "/")
	if to != "" && to[0] != '/' {
		gr.g.errs = append(gr.g.errs, fmt.Errorf("pylon: group %q: RewritePrefix %q must start with '/'", gr.fullPrefix(), to))
		return gr
	}
	gr.strip, gr.to = true, to
	return gr
}

// pathPolicy returns the nearest group's StripPrefix or RewritePrefix: the
// prefix to strip and the one to put in its place.
func (gr *Group) pathPolicy() (strip, to string, ok bool) {
	for g := gr; g != nil; g = g.parent {
		if g.strip {
			return g.fullPrefix(), g.to, true
		}
	}
	return "", "", false
}

// Route starts a route in the group. The group's prefix is put in front of
// the pattern's path: in group "/api/v1", "GET /orders/{id}" becomes
// "GET /api/v1/orders/{id}".
func (gr *Group) Route(pattern string) *Route {
	return gr.g.newRoute(gr, pattern)
}

// Handle routes pattern, in the group, to h.
func (gr *Group) Handle(pattern string, h http.Handler) {
	gr.Route(pattern).Handler(h)
}

// Group returns a nested group: its prefix follows this group's, its
// middlewares run after this group's.
func (gr *Group) Group(prefix string, mws ...Middleware) *Group {
	sub := gr.g.Group(prefix, mws...)
	sub.parent = gr
	return sub
}

// Use appends middlewares to the group's chain. They apply to the routes the
// group finishes after this call.
func (gr *Group) Use(mws ...Middleware) {
	gr.mws = append(gr.mws, mws...)
}

func (gr *Group) fullPrefix() string {
	if gr == nil {
		return ""
	}
	return gr.parent.fullPrefix() + gr.prefix
}

func (gr *Group) chainMws() []Middleware {
	if gr == nil {
		return nil
	}
	return append(gr.parent.chainMws(), gr.mws...)
}

// Route is a route under construction. Its methods set options and return
// the route, so they chain; To or Handler finish it. A route's mistakes are
// reported by Gateway.Err, naming the route.
type Route struct {
	g       *Gateway
	group   *Group
	pattern string // full, with the group prefix
	method  string
	host    string
	path    string
	name    string
	named   bool // Name was called

	matchers []matcher
	mws      []Middleware
	timeout  time.Duration
	maxBody  int64
	strip    string
	// addPrefix is put in front of the stripped path (a group's
	// RewritePrefix); inherited says strip came from the group.
	addPrefix string
	inherited bool
	rewrite   *pathTemplate
	trailers  bool // request trailers are forwarded

	handler    http.Handler
	stages     []Stage // of the group and route chain, for checkStages
	targetDesc string
	done       bool
	entry      *entry // the routes sharing the pattern, once registered
}

func (g *Gateway) newRoute(gr *Group, pattern string) *Route {
	rt := &Route{g: g, group: gr}
	method, rest := "", strings.TrimSpace(pattern)
	if i := strings.IndexAny(rest, " \t"); i >= 0 {
		method, rest = rest[:i], strings.TrimLeft(rest[i:], " \t")
	}
	i := strings.IndexByte(rest, '/')
	if i < 0 {
		g.errs = append(g.errs, fmt.Errorf("pylon: route %q: pattern has no path", pattern))
		i = len(rest)
		rest += "/"
	}
	rt.method, rt.host, rt.path = method, rest[:i], gr.fullPrefix()+rest[i:]
	rt.pattern = rt.path
	if rt.host != "" {
		rt.pattern = rt.host + rt.pattern
	}
	if rt.method != "" {
		rt.pattern = rt.method + " " + rt.pattern
	}
	rt.name = rt.pattern
	g.routes = append(g.routes, rt)
	if strip, to, ok := gr.pathPolicy(); ok {
		rt.StripPrefix(strip)
		rt.addPrefix, rt.inherited = to, true
	}
	return rt
}

func (rt *Route) errorf(format string, args ...any) {
	rt.g.errs = append(rt.g.errs, fmt.Errorf("pylon: route %q: "+format, append([]any{rt.name}, args...)...))
}

// Name names the route for logs, metrics and Routes. Zero means the route's
// pattern, followed by its matchers in brackets when it has any. Names must
// be unique within a gateway.
func (rt *Route) Name(name string) *Route {
	if name == "" {
		rt.errorf("empty name")
		return rt
	}
	for _, o := range rt.g.routes {
		if o != rt && o.name == name {
			rt.errorf("name %q is already used", name)
			return rt
		}
	}
	rt.name = name
	rt.named = true
	return rt
}

// Header adds a condition: the request must carry header name with value
// (compared exactly), or, when value is empty, carry it at all. Routes that
// share a pattern are told apart this way (API versions by header, say).
// The answers of every route of a pattern several routes share then carry
// Vary with the header's name (RFC 9110 §12.5.5), so that a cache — the
// cache package's on the route, or a CDN in front — keeps one client
// type's answer from another's.
func (rt *Route) Header(name, value string) *Route {
	rt.matchers = append(rt.matchers, matcher{header: true, name: http.CanonicalHeaderKey(name), value: value})
	return rt
}

// Query adds a condition: the request's query must have parameter name with
// value, or, when value is empty, have it at all.
func (rt *Route) Query(name, value string) *Route {
	rt.matchers = append(rt.matchers, matcher{name: name, value: value})
	return rt
}

// Use appends middlewares to the route's chain. They run after the global
// and group chains, in the order given.
func (rt *Route) Use(mws ...Middleware) *Route {
	rt.mws = append(rt.mws, mws...)
	return rt
}

// Timeout sets the route's deadline: the request's context ends after d, and
// a Backend target answers 504 when its upstream has not answered by then.
// Zero means no deadline beyond the Backend's own timeouts.
func (rt *Route) Timeout(d time.Duration) *Route {
	if d < 0 {
		rt.errorf("negative timeout")
	}
	rt.timeout = d
	return rt
}

// MaxBodyBytes limits the request body to n bytes: a larger declared
// Content-Length is refused with 413 before anything is forwarded, and a
// chunked body that grows past n ends with 413 too. Zero means no limit
// from the route.
func (rt *Route) MaxBodyBytes(n int64) *Route {
	if n < 0 {
		rt.errorf("negative body limit")
	}
	rt.maxBody = n
	return rt
}

// RequestTrailers forwards the request's trailers to a Backend target. By
// default they are dropped: trailers arrive after the body, so after every
// routing, authentication and rate-limit decision was made without them.
// gRPC clients do not send request trailers; few protocols need this.
func (rt *Route) RequestTrailers() *Route {
	rt.trailers = true
	return rt
}

// StripPrefix removes prefix from the path before the target sees it, from
// the decoded and the escaped path alike: with prefix "/api", "/api/orders"
// is forwarded as "/orders". The prefix must begin the route's path.
func (rt *Route) StripPrefix(prefix string) *Route {
	prefix = strings.TrimSuffix(prefix, "/")
	lit := rt.path
	if i := strings.IndexByte(lit, '{'); i >= 0 {
		lit = lit[:i]
	}
	if prefix == "" || prefix[0] != '/' || !strings.HasPrefix(lit, prefix) ||
		(len(lit) > len(prefix) && lit[len(prefix)] != '/') {
		rt.errorf("StripPrefix %q is not a prefix of path %q", prefix, rt.path)
		return rt
	}
	rt.strip, rt.addPrefix, rt.inherited = prefix, "", false
	return rt
}

// Rewrite replaces the path the target sees with template, filled from the
// pattern's wildcards: on pattern "GET /v2/items/{id}", Rewrite("/items/{id}")
// forwards "/v2/items/42" as "/items/42". A "{rest...}" wildcard fills in as
// the path it matched. The query is kept.
func (rt *Route) Rewrite(template string) *Route {
	t, err := parseTemplate(template, wildcards(rt.path))
	if err != nil {
		rt.errorf("Rewrite %q: %v", template, err)
		return rt
	}
	rt.rewrite = t
	if rt.inherited {
		rt.strip, rt.addPrefix, rt.inherited = "", "", false
	}
	return rt
}

// To finishes the route with a Backend target.
func (rt *Route) To(b *Backend) {
	if b == nil {
		rt.errorf("To: nil backend")
		return
	}
	if !slices.Contains(rt.g.backends, b) {
		rt.g.backends = append(rt.g.backends, b)
	}
	rt.finish(b, "backend "+b.Name())
}

// Handler finishes the route with any handler as its target.
func (rt *Route) Handler(h http.Handler) {
	if h == nil {
		rt.errorf("Handler: nil handler")
		return
	}
	rt.finish(h, fmt.Sprintf("handler %T", h))
}

func (rt *Route) finish(target http.Handler, desc string) {
	if rt.done {
		rt.errorf("target set twice")
		return
	}
	rt.done = true
	rt.targetDesc = desc
	if !rt.named && len(rt.matchers) > 0 {
		// Routes sharing a pattern need names apart: the default one
		// lists the matchers too, as in "GET /items/{id} [header X-V=2]".
		ms := make([]string, len(rt.matchers))
		for i, m := range rt.matchers {
			ms[i] = m.String()
		}
		rt.name = rt.pattern + " [" + strings.Join(ms, ", ") + "]"
	}
	if rt.strip != "" && rt.rewrite != nil {
		rt.errorf("StripPrefix and Rewrite both set; use one")
	}
	inner := http.Handler(&varyTarget{rt: rt, next: target})
	if rt.strip != "" || rt.rewrite != nil {
		inner = &rewriter{rt: rt, next: inner}
	}
	next, stages := chainStages(rt.chainMws(), inner)
	rt.handler = &routeHandler{rt: rt, next: next}
	rt.stages = stages
	rt.g.register(rt)
}

func (rt *Route) chainMws() []Middleware {
	return append(rt.group.chainMws(), rt.mws...)
}

// match reports whether r meets all of the route's conditions.
func (rt *Route) match(r *http.Request) bool {
	for _, m := range rt.matchers {
		if !m.match(r) {
			return false
		}
	}
	return true
}

// routeHandler records the route in RequestInfo and applies its deadline
// and body limit, then runs the route's chain.
type routeHandler struct {
	rt   *Route
	next http.Handler
}

func (h *routeHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rt := h.rt
	if info := Info(r.Context()); info != nil {
		info.Route, info.Pattern = rt.name, rt.pattern
		info.requestTrailers = rt.trailers
	}
	if rt.maxBody > 0 {
		if r.ContentLength > rt.maxBody {
			Error(w, r, http.StatusRequestEntityTooLarge, "The request body is larger than this route accepts.")
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, rt.maxBody)
	}
	if rt.timeout > 0 {
		ctx, cancel := context.WithTimeout(r.Context(), rt.timeout)
		defer cancel()
		r = r.WithContext(ctx)
	}
	h.next.ServeHTTP(w, r)
}

// rewriter applies StripPrefix or Rewrite to a copy of the request's URL.
type rewriter struct {
	rt   *Route
	next http.Handler
}

func (h *rewriter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u := *r.URL
	var ok bool
	if h.rt.strip != "" {
		u.Path, u.RawPath, ok = stripPrefix(r.URL, h.rt.strip, h.rt.g.opts.CaseInsensitivePaths)
		if add := h.rt.addPrefix; ok && add != "" {
			u.Path = add + u.Path
			if u.RawPath != "" {
				u.RawPath = add + u.RawPath
			}
		}
		if info := Info(r.Context()); ok && info != nil {
			info.strippedPrefix, info.addedPrefix = h.rt.strip, h.rt.addPrefix
		}
	} else {
		u.Path, u.RawPath = h.rt.rewrite.fill(r)
		ok = true
	}
	if !ok {
		Error(w, r, http.StatusBadRequest, "The request path is ambiguous.")
		return
	}
	r2 := new(http.Request)
	*r2 = *r
	r2.URL = &u
	h.next.ServeHTTP(w, r2)
}

// stripPrefix removes prefix (a decoded path of whole segments) from u's
// path and from its escaped form, segment by segment. It fails when the two
// would disagree (an encoded slash inside the prefix).
func stripPrefix(u *url.URL, prefix string, fold bool) (path, rawPath string, ok bool) {
	if len(u.Path) < len(prefix) || (len(u.Path) > len(prefix) && u.Path[len(prefix)] != '/') ||
		!(u.Path[:len(prefix)] == prefix || fold && strings.EqualFold(u.Path[:len(prefix)], prefix)) {
		return "", "", false
	}
	path = u.Path[len(prefix):]
	if path == "" {
		path = "/"
	}
	if u.RawPath == "" {
		return path, "", true
	}
	raw := u.RawPath
	for n := strings.Count(prefix, "/"); n > 0; n-- {
		i := strings.IndexByte(raw[1:], '/')
		if i < 0 {
			raw = ""
			break
		}
		raw = raw[i+1:]
	}
	if raw == "" {
		raw = "/"
	}
	if dec, err := url.PathUnescape(raw); err != nil || dec != path {
		return "", "", false
	}
	return path, raw, true
}

// matcher is one header or query condition of a route.
type matcher struct {
	header      bool
	name, value string
}

func (m matcher) String() string {
	kind := "query"
	if m.header {
		kind = "header"
	}
	if m.value == "" {
		return kind + " " + m.name
	}
	return kind + " " + m.name + "=" + m.value
}

func (m matcher) match(r *http.Request) bool {
	if m.header {
		vv, ok := r.Header[m.name]
		if !ok {
			return false
		}
		if m.value == "" {
			return true
		}
		return slices.Contains(vv, m.value)
	}
	return queryHas(r.URL.RawQuery, m.name, m.value)
}

// queryHas reports whether the raw query has parameter name (with value,
// unless value is empty), decoding only what it compares.
func queryHas(q, name, value string) bool {
	for q != "" {
		var kv string
		kv, q, _ = strings.Cut(q, "&")
		k, v, _ := strings.Cut(kv, "=")
		if k != name {
			if !strings.ContainsAny(k, "%+") {
				continue
			}
			dk, err := url.QueryUnescape(k)
			if err != nil || dk != name {
				continue
			}
		}
		if value == "" {
			return true
		}
		if v == value {
			return true
		}
		if dv, err := url.QueryUnescape(v); err == nil && dv == value {
			return true
		}
	}
	return false
}

func sameMatchers(a, b []matcher) bool {
	if len(a) != len(b) {
		return false
	}
	as := make([]string, len(a))
	bs := make([]string, len(b))
	for i := range a {
		as[i], bs[i] = a[i].String(), b[i].String()
	}
	slices.Sort(as)
	slices.Sort(bs)
	return slices.Equal(as, bs)
}

// varyTarget runs a route's target with Vary naming the headers that tell
// the routes of its pattern apart (entry.vary, when the pattern has more
// than one route), set before the target
// writes: a cache on the route sees it in the response it stores, and an
// upstream's own Vary is added to it.
type varyTarget struct {
	rt   *Route
	next http.Handler
}

func (v *varyTarget) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if e := v.rt.entry; e != nil && len(e.vary) > 0 && len(e.routes) > 1 {
		h := w.Header()
		for _, name := range e.vary {
			if !headerHasToken(h["Vary"], name) && !headerHasToken(h["Vary"], "*") {
				h["Vary"] = append(h["Vary"][:len(h["Vary"]):len(h["Vary"])], name)
			}
		}
	}
	v.next.ServeHTTP(w, r)
}
