package aggregate

import (
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/pylon-gateway/pylon"
)

// Call describes one upstream call of an aggregate: its key, its target, its
// method and path template, how its answer is shaped and placed in the
// merged document, and what its failure means. Build it with [Get] or
// [Request]; its methods set options and return the call, so they chain.
// Mistakes are reported when the aggregate is built ([New] returns them,
// [MustNew] panics with them), naming the call's key.
//
// A Call is a description: the aggregate copies what it needs when it is
// built, so one Call may be shared by several aggregates (a web and a
// mobile one) and must not be changed afterwards.
type Call struct {
	key         string
	target      http.Handler
	method      string
	path        string
	optional    bool
	timeout     time.Duration
	headers     []string
	headersSet  bool
	group       string
	merge       bool
	targetPath  string
	allow       []string
	deny        []string
	renames     [][2]string
	wrap        string
	passNotFnd  bool
	maxBytes    int64
	forwardBody bool
	errs        []error
}

// Get returns a GET call named key to target along path.
//
// target is a *pylon.Backend or any other http.Handler (called in process,
// with a request of its own), or an upstream reached through an
// http.RoundTripper with [Remote] (then path must be an absolute URL,
// "http://payments.internal/payments?order={id}"). A nil target is
// reported when the aggregate is built.
//
// path is a template. Its placeholders are filled, escaped, for each request:
//
//	{id}                 the route's wildcard id (r.PathValue("id"))
//	{rest...}            a "{rest...}" wildcard, segment by segment
//	{?page}              the incoming query parameter page (its first value;
//	                     empty when absent)
//	{order.customer_id}  the field customer_id of call order's response: the
//	                     call then waits for call order (dotted paths reach
//	                     into nested objects, and numbers index arrays:
//	                     {order.items.0.sku})
//
// A value is escaped for where it stands: in the path it stays one segment
// (and "", ".", "..", or a value holding '/', '\' or NUL is refused), in the
// query it stays one value, so no value can add segments or parameters.
func Get(key string, target http.Handler, path string) *Call {
	return Request(http.MethodGet, key, target, path)
}

// Request returns a call with another method. Calls other than GET and HEAD
// change state upstream: the aggregate makes them only because they are
// written here, once per incoming request, with no retry of its own, and a
// failing required call cancels the others, which may leave such a call
// half done. Use ForwardBody to send the incoming request's body.
func Request(method, key string, target http.Handler, path string) *Call {
	c := &Call{key: key, target: target, method: method, path: path}
	if method == "" {
		c.errs = append(c.errs, fmt.Errorf("empty method"))
	}
	return c
}

// Remote returns a call target that sends each call through rt, to the
// absolute URL its path template names, instead of calling a handler in
// process. Served as an http.Handler outside an aggregate, it round-trips
// the request as it is (its URL must then be absolute) and copies the
// answer.
func Remote(rt http.RoundTripper) http.Handler {
	return remote{rt: rt}
}

type remote struct{ rt http.RoundTripper }

func (t remote) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if t.rt == nil {
		pylon.Error(w, r, http.StatusInternalServerError, "aggregate: Remote with a nil RoundTripper")
		return
	}
	resp, err := t.rt.RoundTrip(r)
	if err != nil {
		pylon.Error(w, r, http.StatusBadGateway, "upstream unreachable")
		return
	}
	defer resp.Body.Close()
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}

// Optional marks the call optional: its failure leaves its data out of a
// 200 answer that is marked partial. By default a call is required: its
// failure fails the whole request (502, or 504 for a timeout).
func (c *Call) Optional() *Call {
	c.optional = true
	return c
}

// Timeout bounds the call, under the route's deadline. Zero means
// Options.CallTimeout. It bounds an in-process handler too, even one that
// ignores its context: the call ends at the timeout (ErrTimeout), and
// whatever the handler writes later is dropped.
func (c *Call) Timeout(d time.Duration) *Call {
	if d < 0 {
		c.errs = append(c.errs, fmt.Errorf("negative timeout"))
	}
	c.timeout = d
	return c
}

// Headers sets the incoming request headers forwarded to the call,
// replacing the default list (Authorization, X-Request-Id, Traceparent,
// Tracestate). No arguments forwards none. The forwarding headers are not
// in the list: a call to a handler in process carries the client decision
// (and, behind a trusted proxy, the chain it vouched for), and a
// *pylon.Backend sends its upstream what it sends for a direct request.
func (c *Call) Headers(names ...string) *Call {
	c.headers = make([]string, len(names))
	for i, n := range names {
		c.headers[i] = http.CanonicalHeaderKey(n)
	}
	c.headersSet = true
	return c
}

// Group places the call's answer under key in the merged document. Zero
// (the default) means the call's own key.
func (c *Call) Group(key string) *Call {
	if key == "" {
		c.errs = append(c.errs, fmt.Errorf("empty Group key"))
	}
	c.group = key
	c.merge = false
	return c
}

// Merge places the members of the call's answer (an object) at the top
// level of the merged document instead of under a key. A member whose name
// an earlier call already wrote, or that the answer itself repeats, makes
// this call fail with ErrConflict; it never overwrites, and the merged
// document never has two members of one name. An answer that is not an object is wrapped under the
// Wrap key, or the call's key.
func (c *Call) Merge() *Call {
	c.merge = true
	c.group = ""
	return c
}

// Target keeps only the value at the dotted field path of the answer
// ("data", "data.order", or "results.0" where a number indexes an array),
// before any other shaping. A missing field fails
// the call with ErrInvalidJSON.
func (c *Call) Target(path string) *Call {
	c.targetPath = path
	return c
}

// Allow keeps only the listed dotted field paths of the answer, dropping
// every other field. A path goes through arrays: "items.sku" keeps the sku
// of each element of items. Listing "items" keeps items whole.
func (c *Call) Allow(paths ...string) *Call {
	c.allow = append(c.allow, paths...)
	return c
}

// Deny drops the listed dotted field paths from the answer (through arrays,
// as Allow). With Allow too, Deny removes from what Allow kept.
func (c *Call) Deny(paths ...string) *Call {
	c.deny = append(c.deny, paths...)
	return c
}

// Rename renames the field at the dotted path from (named as the upstream
// names it, through arrays) to the plain name to, in place. When the object
// also has a field already named to, the renamed field replaces it: this is
// the one documented overwrite, and it is written in the call.
func (c *Call) Rename(from, to string) *Call {
	c.renames = append(c.renames, [2]string{from, to})
	return c
}

// Wrap puts an answer that is not an object (an array, a string...) under
// key, as {"key": answer}. Zero means arrays are kept as they are under
// Group, and wrapped under the call's key when merged.
func (c *Call) Wrap(key string) *Call {
	if key == "" {
		c.errs = append(c.errs, fmt.Errorf("empty Wrap key"))
	}
	c.wrap = key
	return c
}

// PassNotFound makes a 404 from this required call answer the client 404
// (a resource that does not exist) instead of 502.
func (c *Call) PassNotFound() *Call {
	c.passNotFnd = true
	return c
}

// MaxBytes caps the call's response body. Zero means Options.MaxBodyBytes.
func (c *Call) MaxBytes(n int64) *Call {
	if n < 0 {
		c.errs = append(c.errs, fmt.Errorf("negative MaxBytes"))
	}
	c.maxBytes = n
	return c
}

// ForwardBody sends the incoming request's body (read once, up to
// Options.MaxRequestBytes) and its Content-Type with the call.
func (c *Call) ForwardBody() *Call {
	c.forwardBody = true
	return c
}
