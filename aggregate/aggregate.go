package aggregate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/pylon-gateway/pylon"
)

// Options configures a [Handler]. Every field's zero value is a safe
// default, written in its comment.
type Options struct {
	// MaxCalls caps the number of calls of one aggregate. Zero means 16.
	MaxCalls int
	// MaxBodyBytes caps each call's response body; a larger body fails the
	// call with ErrTooLarge. Call.MaxBytes overrides it. Zero means 10 MiB.
	MaxBodyBytes int64
	// MaxRequestBytes caps the incoming body read for calls that
	// ForwardBody; a larger one is answered 413. Zero means 1 MiB.
	MaxRequestBytes int64
	// CallTimeout bounds each call that sets no Timeout of its own, under
	// the route's deadline. Zero means 10s.
	CallTimeout time.Duration
	// PartialHeader names the response header that marks a partial answer
	// (some optional call failed); its value lists the failed calls' keys in
	// the order written, comma separated. Zero means "Pylon-Partial".
	PartialHeader string
	// ErrorsMember, when set, adds a member of that name to a partial answer:
	// an object from each failed optional call's key to its client-safe
	// reason (see Reason), as {"_errors":{"payment":"timeout"}}. Empty means
	// no such member: the header alone marks the answer partial.
	ErrorsMember string

	// Allow, Deny and Rename shape the merged document, after each call's
	// own shaping, with the same dotted paths as the Call methods
	// ("order.items.sku"). They let two aggregates share the same calls and
	// give two clients (web, mobile) different views. Rename maps an old
	// dotted path to a new plain name. Nil means the merged document is
	// sent as merged.
	Allow  []string
	Deny   []string
	Rename map[string]string

	// OnCall, when set, is called once per call after each request, in the
	// order the calls are written, from the goroutine serving the request,
	// with the incoming request and the call's outcome: for metrics and
	// logs. It must not keep r.
	OnCall func(r *http.Request, res CallResult)
}

// CallResult is the outcome of one call, given to Options.OnCall. It holds
// internal detail (targets, error causes) for logs and metrics only.
type CallResult struct {
	// Key is the call's key.
	Key string
	// Backend is the target's name when it has a Name() string method (a
	// *pylon.Backend does), else empty.
	Backend string
	// Target is the upstream target chosen by a *pylon.Backend, or the URL
	// a round tripper was sent.
	Target string
	// Status is the upstream's status code, 0 when there was none.
	Status int
	// Duration is the time from the call's start to its answer being read.
	// Zero when the call was not made.
	Duration time.Duration
	// Bytes is the size of the upstream's response body.
	Bytes int
	// Optional reports that the call was optional.
	Optional bool
	// Err is nil on success, else one of the sentinel errors, wrapped with
	// log-only detail.
	Err error
}

// Handler is an aggregate: an http.Handler that, for each request, makes
// its calls (concurrently, each as soon as the calls it depends on have
// answered), shapes their JSON answers and merges them into one JSON
// object, in the order the calls are written.
//
// The answer is 200 with the merged object when every required call
// succeeded. When an optional call failed the answer is still 200, without
// that call's data, and marked partial by a header (Options.PartialHeader)
// and, if asked, an errors member (Options.ErrorsMember). When a required
// call failed the answer is a problem response naming the call's key: 504
// when it timed out, 404 when it answered 404 and PassNotFound is set, 502
// otherwise. An aggregate with a single call passes its 200-203 status
// through (another 2xx becomes 200: the answer is a JSON document), and a
// 4xx status too, as a problem response with the upstream's
// WWW-Authenticate, Allow and Retry-After.
//
// A call fails when it cannot be made, times out, answers a status other
// than 2xx (redirects are never followed), or answers a body that is not
// JSON or is larger than its cap.
type Handler struct {
	calls     []*compiled
	opts      Options
	partial   string
	errorsQ   []byte // the quoted errors member name, or nil
	result    *node
	needBody  bool
	hasMerge  bool
	hasDeps   []bool // hasDeps[i]: some call waits for call i
	inlineIdx int    // the call run on the serving goroutine
}

// compiled is a Call checked and ready to run.
type compiled struct {
	key        string
	keyQ       []byte // `"key"`
	groupQ     []byte // `"group":`
	wrapQ      []byte // `"wrap":` when wrapping non-objects, else nil
	handler    http.Handler
	rt         http.RoundTripper
	backend    string
	method     string
	tmpl       *template
	deps       []int
	optional   bool
	timeout    time.Duration
	headers    []string
	merge      bool
	target     []string
	shape      *node
	passNotFnd bool
	maxBytes   int64
	fwdBody    bool
}

// defaultHeaders are forwarded to calls unless Call.Headers says otherwise.
var defaultHeaders = []string{"Authorization", "X-Request-Id", "Traceparent", "Tracestate"}

// New returns an aggregate of calls with default Options, or an error naming
// the first misconfigured call (duplicate or invalid keys, bad templates,
// unknown or cyclic dependencies, key collisions). See [NewWithOptions].
func New(calls ...*Call) (*Handler, error) {
	return NewWithOptions(Options{}, calls...)
}

// MustNew is New for start-up wiring: it panics where New fails, with a
// message naming the call, so that a misconfigured gateway stops before it
// serves (like regexp.MustCompile).
func MustNew(calls ...*Call) *Handler {
	return MustNewWithOptions(Options{}, calls...)
}

// MustNewWithOptions is NewWithOptions for start-up wiring: it panics where
// NewWithOptions fails.
func MustNewWithOptions(opts Options, calls ...*Call) *Handler {
	h, err := NewWithOptions(opts, calls...)
	if err != nil {
		panic(err)
	}
	return h
}

// NewWithOptions returns an aggregate of calls configured by opts, or an
// error naming the first misconfigured call.
func NewWithOptions(opts Options, calls ...*Call) (*Handler, error) {
	if opts.MaxCalls < 0 || opts.MaxBodyBytes < 0 || opts.MaxRequestBytes < 0 || opts.CallTimeout < 0 {
		return nil, errors.New("aggregate: negative limit in Options")
	}
	if opts.MaxCalls == 0 {
		opts.MaxCalls = 16
	}
	if opts.MaxBodyBytes == 0 {
		opts.MaxBodyBytes = 10 << 20
	}
	if opts.MaxRequestBytes == 0 {
		opts.MaxRequestBytes = 1 << 20
	}
	if opts.CallTimeout == 0 {
		opts.CallTimeout = 10 * time.Second
	}
	h := &Handler{opts: opts, partial: opts.PartialHeader}
	if h.partial == "" {
		h.partial = "Pylon-Partial"
	}
	if !validToken(h.partial) {
		return nil, fmt.Errorf("aggregate: PartialHeader %q is not a valid header name", h.partial)
	}
	h.partial = http.CanonicalHeaderKey(h.partial)
	if opts.ErrorsMember != "" {
		h.errorsQ, _ = json.Marshal(opts.ErrorsMember)
	}
	if len(calls) == 0 {
		return nil, errors.New("aggregate: no calls")
	}
	if len(calls) > opts.MaxCalls {
		return nil, fmt.Errorf("aggregate: %d calls, more than MaxCalls (%d)", len(calls), opts.MaxCalls)
	}

	keys := make(map[string]int, len(calls))
	for i, c := range calls {
		if c == nil {
			return nil, fmt.Errorf("aggregate: call %d is nil", i)
		}
		if c.key == "" || strings.ContainsAny(c.key, ".{}") {
			return nil, fmt.Errorf("aggregate: call %q: a key must be non-empty, without '.', '{' or '}'", c.key)
		}
		if _, dup := keys[c.key]; dup {
			return nil, fmt.Errorf("aggregate: call %q: key used twice", c.key)
		}
		keys[c.key] = i
	}

	groups := make(map[string]string) // group key -> call key
	for _, c := range calls {
		cc, err := compile(c, opts, keys)
		if err != nil {
			return nil, fmt.Errorf("aggregate: call %q: %w", c.key, err)
		}
		if !cc.merge {
			g := c.group
			if g == "" {
				g = c.key
			}
			if other, dup := groups[g]; dup {
				return nil, fmt.Errorf("aggregate: call %q: group key %q is already used by call %q", c.key, g, other)
			}
			if g == opts.ErrorsMember {
				return nil, fmt.Errorf("aggregate: call %q: group key %q is the ErrorsMember", c.key, g)
			}
			groups[g] = c.key
		}
		h.needBody = h.needBody || cc.fwdBody
		h.hasMerge = h.hasMerge || cc.merge
		h.calls = append(h.calls, cc)
	}
	if err := checkCycles(h.calls); err != nil {
		return nil, err
	}
	h.hasDeps = make([]bool, len(h.calls))
	h.inlineIdx = -1
	for i, c := range h.calls {
		for _, d := range c.deps {
			h.hasDeps[d] = true
		}
		if len(c.deps) == 0 {
			h.inlineIdx = i // the last independent call runs inline
		}
	}

	renames := make([][2]string, 0, len(opts.Rename))
	for from, to := range opts.Rename {
		renames = append(renames, [2]string{from, to})
	}
	// Sorted, so that an error names the same path every time.
	slices.SortFunc(renames, func(a, b [2]string) int { return strings.Compare(a[0], b[0]) })
	res, err := buildShape(opts.Allow, opts.Deny, renames)
	if err != nil {
		return nil, fmt.Errorf("aggregate: Options: %w", err)
	}
	h.result = res
	return h, nil
}

func compile(c *Call, opts Options, keys map[string]int) (*compiled, error) {
	if len(c.errs) > 0 {
		return nil, errors.Join(c.errs...)
	}
	cc := &compiled{
		key: c.key, method: c.method, optional: c.optional, timeout: c.timeout,
		merge: c.merge, passNotFnd: c.passNotFnd, maxBytes: c.maxBytes, fwdBody: c.forwardBody,
	}
	if strings.ContainsAny(c.method, " \t\r\n") || !validToken(c.method) {
		return nil, fmt.Errorf("invalid method %q", c.method)
	}
	switch t := c.target.(type) {
	case nil:
		return nil, errors.New("nil target")
	case remote:
		if t.rt == nil {
			return nil, errors.New("Remote with a nil RoundTripper")
		}
		cc.rt = t.rt
	default:
		cc.handler = t
	}
	if n, ok := c.target.(interface{ Name() string }); ok {
		cc.backend = n.Name()
	}
	tmpl, err := parseTemplate(c.path, cc.rt != nil, keys)
	if err != nil {
		return nil, fmt.Errorf("path %q: %w", c.path, err)
	}
	cc.tmpl = tmpl
	for _, p := range tmpl.parts {
		if p.kind == partDep {
			if p.dep == keys[c.key] {
				return nil, fmt.Errorf("path %q depends on the call itself", c.path)
			}
			if !containsInt(cc.deps, p.dep) {
				cc.deps = append(cc.deps, p.dep)
			}
		}
	}
	if cc.timeout == 0 {
		cc.timeout = opts.CallTimeout
	}
	if cc.maxBytes == 0 {
		cc.maxBytes = opts.MaxBodyBytes
	}
	cc.headers = defaultHeaders
	if c.headersSet {
		cc.headers = c.headers
	}
	group := c.group
	if group == "" {
		group = c.key
	}
	cc.groupQ = quoteKey(group)
	cc.keyQ = cc.groupQ[:0:0]
	cc.keyQ = append(cc.keyQ, quoteKey(c.key)...)
	cc.keyQ = cc.keyQ[:len(cc.keyQ)-1]
	if c.wrap != "" {
		cc.wrapQ = quoteKey(c.wrap)
	} else if c.merge {
		cc.wrapQ = quoteKey(c.key)
	}
	if c.targetPath != "" {
		if cc.target, err = splitPath(c.targetPath); err != nil {
			return nil, fmt.Errorf("Target: %w", err)
		}
	}
	if cc.shape, err = buildShape(c.allow, c.deny, c.renames); err != nil {
		return nil, err
	}
	return cc, nil
}

// quoteKey returns `"key":`.
func quoteKey(k string) []byte {
	q, _ := json.Marshal(k)
	return append(q, ':')
}

func containsInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// validToken reports whether s is an RFC 9110 token (a method or header
// name).
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

// checkCycles fails when calls depend on each other in a cycle, naming the
// calls in it.
func checkCycles(calls []*compiled) error {
	const (
		white = iota
		grey
		black
	)
	color := make([]int, len(calls))
	var stack []int
	var visit func(i int) error
	visit = func(i int) error {
		color[i] = grey
		stack = append(stack, i)
		for _, d := range calls[i].deps {
			switch color[d] {
			case grey:
				var names []string
				for k := len(stack) - 1; k >= 0; k-- {
					names = append([]string{calls[stack[k]].key}, names...)
					if stack[k] == d {
						break
					}
				}
				names = append(names, calls[d].key)
				return fmt.Errorf("aggregate: call %q: dependency cycle: %s", calls[d].key, strings.Join(names, " -> "))
			case white:
				if err := visit(d); err != nil {
					return err
				}
			}
		}
		stack = stack[:len(stack)-1]
		color[i] = black
		return nil
	}
	for i := range calls {
		if color[i] == white {
			if err := visit(i); err != nil {
				return err
			}
		}
	}
	return nil
}

// result is one call's outcome within one request.
type result struct {
	done      chan struct{} // closed when the call is over; nil when no call waits for it
	status    int
	body      []byte // the whole upstream body (pooled)
	val       []byte // the value kept, shaped and compact (pooled)
	err       error
	clientBad bool // a wildcard value is not a safe path segment
	target    string
	dur       time.Duration
	bytes     int
	refusal   http.Header // a 4xx answer's WWW-Authenticate, Allow, Retry-After
}

// refusalFields are the fields a single-call aggregate's 4xx answer
// carries on from the upstream's: without them a 401, 405 or 429 breaks
// RFC 9110 §15.5.2 and §15.5.6, or leaves a client guessing when to retry.
var refusalFields = [...]string{"Www-Authenticate", "Allow", "Retry-After"}

// keepRefusal records h's refusalFields when status is a 4xx.
func (res *result) keepRefusal(h http.Header) {
	if res.status < 400 || res.status > 499 {
		return
	}
	for _, k := range refusalFields {
		if vv := h[k]; len(vv) > 0 {
			if res.refusal == nil {
				res.refusal = http.Header{}
			}
			res.refusal[k] = slices.Clone(vv)
		}
	}
}

// errSiblingFailed cancels the remaining calls when a required one failed.
var errSiblingFailed = errors.New("aggregate: a required call failed")

// ServeHTTP makes the calls and answers the merged document.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	info := pylon.Info(r.Context())
	var reqBody []byte
	if h.needBody && r.Body != nil && r.Body != http.NoBody {
		if r.ContentLength > h.opts.MaxRequestBytes {
			pylon.Error(w, r, http.StatusRequestEntityTooLarge, "The request body is too large.")
			return
		}
		b, err := io.ReadAll(io.LimitReader(r.Body, h.opts.MaxRequestBytes+1))
		if err != nil {
			if r.Context().Err() != nil {
				clientGone(info)
				return
			}
			pylon.Error(w, r, http.StatusBadRequest, "The request body could not be read.")
			return
		}
		if int64(len(b)) > h.opts.MaxRequestBytes {
			pylon.Error(w, r, http.StatusRequestEntityTooLarge, "The request body is too large.")
			return
		}
		reqBody = b
	}

	began := time.Now()
	ctx, cancel := context.WithCancelCause(r.Context())
	defer cancel(nil)
	results := make([]result, len(h.calls))
	for i := range results {
		if h.hasDeps[i] {
			results[i].done = make(chan struct{})
		}
	}
	run := &runState{h: h, r: r, ctx: ctx, cancel: cancel, results: results, body: reqBody, info: info}
	var wg sync.WaitGroup
	for i := range h.calls {
		if i != h.inlineIdx {
			wg.Go(func() { run.call(i) })
		}
	}
	run.call(h.inlineIdx)
	wg.Wait()
	defer func() {
		for i := range results {
			putBuf(results[i].body)
			putBuf(results[i].val)
		}
	}()
	if info != nil {
		info.Backend = "aggregate"
		info.UpstreamDuration = time.Since(began)
	}
	if r.Context().Err() == context.Canceled {
		clientGone(info)
		h.report(r, results)
		return
	}
	h.answer(w, r, info, results)
	h.report(r, results)
}

func clientGone(info *pylon.RequestInfo) {
	if info != nil {
		info.ClientCanceled = true
		info.Error = "client canceled"
	}
}

// report gives each call's outcome to OnCall.
func (h *Handler) report(r *http.Request, results []result) {
	info := pylon.Info(r.Context())
	if info != nil {
		info.Calls = make([]pylon.CallInfo, 0, len(h.calls))
	}
	for i, c := range h.calls {
		res := &results[i]
		if info != nil {
			ci := pylon.CallInfo{Key: c.key, Backend: c.backend, Target: res.target, Status: res.status, Duration: res.dur,
				Outcome: outcome(res.err)}
			if res.err != nil {
				ci.Error = res.err.Error()
			}
			info.Calls = append(info.Calls, ci)
		}
		if h.opts.OnCall != nil {
			h.opts.OnCall(r, CallResult{
				Key: c.key, Backend: c.backend, Target: res.target, Status: res.status,
				Duration: res.dur, Bytes: res.bytes, Optional: c.optional, Err: res.err,
			})
		}
	}
}

// runState is what the calls of one request share.
type runState struct {
	h       *Handler
	r       *http.Request
	ctx     context.Context
	cancel  context.CancelCauseFunc
	results []result
	body    []byte
	info    *pylon.RequestInfo
}

// call runs call i and records its result. It never panics: a panicking
// in-process target fails the call.
func (s *runState) call(i int) {
	c := s.h.calls[i]
	res := &s.results[i]
	if res.done != nil {
		defer close(res.done)
	}
	for _, d := range c.deps {
		dr := &s.results[d]
		<-dr.done
		if dr.err != nil {
			res.err = fmt.Errorf("%w: call %q failed", ErrDependency, s.h.calls[d].key)
			s.failed(c, res)
			return
		}
	}
	if err := s.ctx.Err(); err != nil {
		res.err = s.ctxErr(s.ctx, err)
		return
	}
	url, clientBad, err := c.tmpl.fill(s.r, s.depValue)
	if err != nil {
		res.err, res.clientBad = err, clientBad
		if clientBad {
			s.cancel(errSiblingFailed)
			return
		}
		s.failed(c, res)
		return
	}
	s.do(c, res, url)
	if res.err != nil {
		s.failed(c, res)
	}
}

// failed cancels the other calls when a required call failed.
func (s *runState) failed(c *compiled, res *result) {
	if !c.optional && !errors.Is(res.err, ErrCanceled) {
		s.cancel(errSiblingFailed)
	}
}

// depValue returns the value of a dependency placeholder.
func (s *runState) depValue(p *part) (string, bool) {
	dr := &s.results[p.dep]
	start, end, ok := lookup(dr.body, 0, p.field)
	if !ok {
		return "", false
	}
	return scalar(dr.body[start:end])
}

// ctxErr classifies a failure that happened while a context was done:
// the route's deadline or the call's timeout is a timeout, the client going
// away or a sibling failing is a cancellation.
func (s *runState) ctxErr(callCtx context.Context, cause error) error {
	if err := s.r.Context().Err(); err != nil {
		if err == context.DeadlineExceeded {
			return fmt.Errorf("%w: route deadline: %w", ErrTimeout, cause)
		}
		return fmt.Errorf("%w: client went away", ErrCanceled)
	}
	if s.ctx.Err() != nil {
		return fmt.Errorf("%w: %w", ErrCanceled, context.Cause(s.ctx))
	}
	if callCtx != nil && callCtx.Err() == context.DeadlineExceeded {
		return fmt.Errorf("%w: call timeout: %w", ErrTimeout, cause)
	}
	return nil
}

// forwardingHeaders are the incoming request's forwarding chain, which an
// in-process call carries when the client's peer is a trusted proxy.
var forwardingHeaders = []string{"X-Forwarded-For", "Forwarded"}

// do makes the call and reads its answer into res.
func (s *runState) do(c *compiled, res *result, url string) {
	callCtx, cancel := context.WithTimeout(s.ctx, c.timeout)
	defer cancel()
	var cinfo *pylon.RequestInfo
	ctx := callCtx
	if c.handler != nil {
		// Each call gets a RequestInfo of its own, so that concurrent calls
		// never write to the request's.
		if pi := s.info; pi != nil {
			cinfo = pi.Child()
		} else {
			cinfo = &pylon.RequestInfo{}
		}
		cinfo.Start = time.Now()
		ctx = pylon.NewContext(callCtx, cinfo)
	}
	var body io.Reader
	if c.fwdBody && s.body != nil {
		body = bytes.NewReader(s.body)
	}
	req, err := http.NewRequestWithContext(ctx, c.method, url, body)
	if err != nil {
		res.err = fmt.Errorf("%w: %w", ErrUnavailable, err)
		return
	}
	in := s.r
	req.Header = make(http.Header, len(c.headers)+2)
	for _, k := range c.headers {
		if v := in.Header[k]; v != nil {
			req.Header[k] = v
		}
	}
	if s.info != nil && s.info.RequestID != "" && req.Header["X-Request-Id"] == nil && containsStr(c.headers, "X-Request-Id") {
		req.Header["X-Request-Id"] = []string{s.info.RequestID}
	}
	req.Header["Accept"] = acceptJSON
	if body != nil {
		if ct := in.Header["Content-Type"]; ct != nil {
			req.Header["Content-Type"] = ct
		}
	}
	req.RemoteAddr, req.TLS = in.RemoteAddr, in.TLS
	if c.handler != nil && req.Host == "" {
		req.Host = in.Host
	}
	if c.handler != nil && s.info != nil && s.info.PeerTrusted {
		// The chain a trusted proxy vouched for: a Backend extends it
		// exactly as for a direct request (and rebuilds the rest from the
		// decision the call's RequestInfo inherited).
		for _, k := range forwardingHeaders {
			if v := in.Header[k]; v != nil && req.Header[k] == nil {
				req.Header[k] = v
			}
		}
	}

	start := time.Now()
	if c.handler != nil {
		// The handler runs on a goroutine of its own so that the call's
		// timeout bounds it even when it ignores its context. When the
		// call's context ends first, its writer, request and RequestInfo
		// are left to it: nothing here reads them again, and the goroutine
		// ends when the handler returns.
		w := &bodyWriter{header: make(http.Header), max: c.maxBytes}
		served := make(chan error, 1)
		go func() { served <- serve(c.handler, w, req) }()
		var perr error
		answered := true
		select {
		case perr = <-served:
		case <-callCtx.Done():
			select {
			case perr = <-served: // it returned as the call ended: kept
			default:
				answered = false
			}
		}
		if !answered {
			res.dur = time.Since(start)
			if res.err = s.ctxErr(callCtx, callCtx.Err()); res.err == nil {
				res.err = fmt.Errorf("%w: call timeout", ErrTimeout)
			}
			return
		}
		res.dur = time.Since(start)
		res.status, res.body, res.bytes, res.target = w.status, w.buf, len(w.buf), cinfo.Target
		res.keepRefusal(w.header)
		if w.over {
			res.err = fmt.Errorf("%w: over %d bytes", ErrTooLarge, c.maxBytes)
			return
		}
		if perr != nil || w.status == 0 {
			if e := s.ctxErr(callCtx, errOr(perr, errNoAnswer)); e != nil {
				res.err = e
				return
			}
			if perr != nil {
				res.err = fmt.Errorf("%w: %w", ErrUnavailable, perr)
				return
			}
			res.status = http.StatusOK // a handler that wrote nothing answered 200
		}
	} else {
		res.target = url
		resp, err := c.rt.RoundTrip(req)
		if err != nil {
			res.dur = time.Since(start)
			if e := s.ctxErr(callCtx, err); e != nil {
				res.err = e
				return
			}
			res.err = fmt.Errorf("%w: %w", ErrUnavailable, err)
			return
		}
		res.status = resp.StatusCode
		res.keepRefusal(resp.Header)
		if statusErr(resp.StatusCode) == nil {
			res.body, err = readCapped(resp.Body, resp.ContentLength, c.maxBytes)
			res.bytes = len(res.body)
		}
		closeBody(resp.Body)
		res.dur = time.Since(start)
		if errors.Is(err, ErrTooLarge) {
			res.err = err
			return
		}
		if err != nil {
			if e := s.ctxErr(callCtx, err); e != nil {
				res.err = e
				return
			}
			res.err = fmt.Errorf("%w: reading body: %w", ErrUnavailable, err)
			return
		}
	}
	if err := statusErr(res.status); err != nil {
		res.err = err
		if res.status == http.StatusGatewayTimeout || res.status == http.StatusBadGateway {
			// A *pylon.Backend answers 502/504 itself when our context ends.
			if e := s.ctxErr(callCtx, err); e != nil {
				res.err = e
			}
		}
		return
	}
	raw := res.body
	if res.status == http.StatusNoContent || (len(bytes.TrimSpace(raw)) == 0 && c.method == http.MethodHead) {
		res.val = append(getBuf(), "null"...)
		return
	}
	// The answer is checked and shaped here, on the call's goroutine, so
	// that the merge only copies bytes.
	if !utf8.Valid(raw) {
		res.err = fmt.Errorf("%w: not UTF-8", ErrInvalidJSON)
		return
	}
	if !depthOK(raw) {
		res.err = fmt.Errorf("%w: nested deeper than %d", ErrInvalidJSON, maxDepth)
		return
	}
	if c.target == nil && c.shape == nil {
		buf := bytes.NewBuffer(getBuf())
		if err := json.Compact(buf, raw); err != nil {
			putBuf(buf.Bytes())
			res.err = ErrInvalidJSON
			return
		}
		res.val = buf.Bytes()
		return
	}
	if !json.Valid(raw) {
		res.err = ErrInvalidJSON
		return
	}
	vs, ve, ok := lookup(raw, 0, c.target)
	if !ok {
		res.err = fmt.Errorf("%w: no field %q", ErrInvalidJSON, strings.Join(c.target, "."))
		return
	}
	res.val = shape(getBuf(), raw[vs:ve], c.shape)
}

var (
	acceptJSON  = []string{"application/json"}
	errNoAnswer = errors.New("aggregate: the target wrote no answer")
)

func errOr(err, def error) error {
	if err != nil {
		return err
	}
	return def
}

func containsStr(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// serve calls h, turning a panic (http.ErrAbortHandler from a Backend whose
// upstream body broke, or any other) into an error: a panic on a call's
// goroutine would otherwise end the program.
func serve(h http.Handler, w http.ResponseWriter, r *http.Request) (err error) {
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				err = errAborted
				return
			}
			err = fmt.Errorf("aggregate: target panicked: %v", p)
		}
	}()
	h.ServeHTTP(w, r)
	return nil
}

var errAborted = errors.New("aggregate: the target aborted its answer")

// statusErr classifies an upstream status.
func statusErr(code int) error {
	switch {
	case code >= 200 && code < 300:
		return nil
	case code >= 300 && code < 400:
		return ErrRedirect
	case code == http.StatusNotFound:
		return ErrNotFound
	case code == http.StatusGatewayTimeout:
		return ErrTimeout
	case code >= 400 && code < 500:
		return ErrRejected
	}
	return ErrUnavailable
}

// readCapped reads a body of at most max bytes into a pooled buffer.
func readCapped(body io.Reader, length, max int64) ([]byte, error) {
	if length > max {
		return nil, fmt.Errorf("%w: Content-Length %d over %d bytes", ErrTooLarge, length, max)
	}
	buf := getBuf()
	if length > int64(cap(buf)) {
		putBuf(buf)
		buf = make([]byte, 0, length)
	}
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if int64(len(buf)) > max {
			putBuf(buf)
			return nil, fmt.Errorf("%w: over %d bytes", ErrTooLarge, max)
		}
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			putBuf(buf)
			return nil, err
		}
	}
}

func closeBody(rc io.ReadCloser) {
	_, _ = io.CopyN(io.Discard, rc, 4<<10)
	rc.Close()
}

// answer writes the response: a problem when a required call failed, else
// the merged document.
func (h *Handler) answer(w http.ResponseWriter, r *http.Request, info *pylon.RequestInfo, results []result) {
	for i := range results {
		if results[i].clientBad {
			setInfoError(info, h.calls, results)
			pylon.Error(w, r, http.StatusBadRequest, "A path parameter of the request is not valid.")
			return
		}
	}
	out := getBuf()
	defer func() { putBuf(out) }()
	out = h.merge(out, results)

	// The first failed required call, in the order written, that was not
	// merely canceled because another failed, decides the answer.
	fail := -1
	for i, c := range h.calls {
		if err := results[i].err; err != nil && !c.optional {
			if fail < 0 || (errors.Is(results[fail].err, ErrCanceled) && !errors.Is(err, ErrCanceled)) {
				fail = i
			}
		}
	}
	if fail >= 0 {
		setInfoError(info, h.calls, results)
		h.fail(w, r, fail, &results[fail])
		return
	}

	status := http.StatusOK
	if len(h.calls) == 1 && results[0].err == nil && results[0].status <= http.StatusNonAuthoritativeInfo {
		// Single-call pass-through of 200-203; a 204, 205 or 206 would
		// promise no body or a range, and the answer is a JSON document.
		status = results[0].status
	}
	var failed []string
	for i, c := range h.calls {
		if results[i].err != nil {
			failed = append(failed, c.key)
		}
	}
	if h.result != nil {
		shaped := shape(getBuf(), out, h.result)
		putBuf(out)
		out = shaped
	}
	if len(failed) > 0 {
		setInfoError(info, h.calls, results)
		w.Header().Set(h.partial, strings.Join(failed, ", "))
		if h.errorsQ != nil {
			out = h.appendErrors(out, results)
		}
	}
	out = append(out, '\n')
	hd := w.Header()
	hd.Set("Content-Type", "application/json")
	hd.Set("Content-Length", strconv.Itoa(len(out)))
	if status == http.StatusNoContent {
		hd.Del("Content-Length")
		w.WriteHeader(status)
		return
	}
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(out)
	}
}

// merge appends the merged document of the successful calls to out. A
// merged call whose members collide with what earlier calls wrote, or with
// each other, fails with ErrConflict.
func (h *Handler) merge(out []byte, results []result) []byte {
	out = append(out, '{')
	first := true
	var seen map[string]bool
	if h.hasMerge {
		seen = make(map[string]bool, 8)
		if h.opts.ErrorsMember != "" {
			seen[h.opts.ErrorsMember] = true
		}
	}
	for i, c := range h.calls {
		res := &results[i]
		if res.err != nil {
			continue
		}
		v := res.val
		isObj := v[0] == '{'
		if !c.merge || !isObj {
			name := c.groupQ
			if c.merge {
				name = c.wrapQ
			}
			if seen != nil {
				k := string(keyName(name[:len(name)-1]))
				if seen[k] {
					res.err = fmt.Errorf("%w: %q", ErrConflict, k)
					continue
				}
				seen[k] = true
			}
			if !first {
				out = append(out, ',')
			}
			first = false
			out = append(out, name...)
			if !c.merge && !isObj && c.wrapQ != nil {
				out = append(out, '{')
				out = append(out, c.wrapQ...)
				out = append(out, v...)
				out = append(out, '}')
			} else {
				out = append(out, v...)
			}
			continue
		}
		// A member named as one already written, by an earlier call or
		// earlier in this answer, is a conflict: the keys this answer
		// added are taken back and the call fails.
		scratch := v
		conflict := ""
		added := 0
		for j := 1; ; {
			m, next, ok := nextMember(scratch, j)
			if !ok {
				break
			}
			k := string(keyName(m.key))
			if seen[k] {
				conflict = k
				break
			}
			seen[k] = true
			added++
			j = next
		}
		if conflict != "" {
			for j := 1; added > 0; added-- {
				m, next, _ := nextMember(scratch, j)
				delete(seen, string(keyName(m.key)))
				j = next
			}
			res.err = fmt.Errorf("%w: %q", ErrConflict, conflict)
			continue
		}
		for j := 1; ; {
			m, next, ok := nextMember(scratch, j)
			if !ok {
				break
			}
			if !first {
				out = append(out, ',')
			}
			first = false
			out = append(out, scratch[j:m.end]...)
			j = next
		}
	}
	return append(out, '}')
}

// appendErrors adds the errors member to the object in out.
func (h *Handler) appendErrors(out []byte, results []result) []byte {
	out = out[:len(out)-1] // the closing '}'
	if len(out) > 1 {
		out = append(out, ',')
	}
	out = append(out, h.errorsQ...)
	out = append(out, ":{"...)
	first := true
	for i, c := range h.calls {
		if results[i].err == nil {
			continue
		}
		if !first {
			out = append(out, ',')
		}
		first = false
		out = append(out, c.keyQ...)
		out = append(out, ':', '"')
		out = append(out, Reason(results[i].err)...)
		out = append(out, '"')
	}
	return append(out, '}', '}')
}

// fail answers for the failed required call i.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, i int, res *result) {
	c := h.calls[i]
	err := res.err
	status, detail := http.StatusBadGateway, fmt.Sprintf("The upstream call %q failed.", c.key)
	switch {
	case errors.Is(err, ErrTimeout):
		status, detail = http.StatusGatewayTimeout, fmt.Sprintf("The upstream call %q did not answer in time.", c.key)
	case errors.Is(err, ErrNotFound) && (c.passNotFnd || len(h.calls) == 1):
		status, detail = http.StatusNotFound, "The requested resource was not found."
	case errors.Is(err, ErrRejected) && len(h.calls) == 1:
		status, detail = res.status, fmt.Sprintf("The upstream call %q was refused.", c.key)
		for k, vv := range res.refusal {
			w.Header()[k] = vv
		}
	}
	pylon.WriteProblem(w, r, pylon.Problem{Status: status, Detail: detail})
}

// setInfoError records, for logs, why each failed call failed:
// "payment: aggregate: timeout; reviews: ...".
func setInfoError(info *pylon.RequestInfo, calls []*compiled, results []result) {
	if info == nil {
		return
	}
	var b strings.Builder
	for i, c := range calls {
		if err := results[i].err; err != nil {
			if b.Len() > 0 {
				b.WriteString("; ")
			}
			b.WriteString(c.key)
			b.WriteString(": ")
			b.WriteString(err.Error())
		}
	}
	info.Error = b.String()
}
