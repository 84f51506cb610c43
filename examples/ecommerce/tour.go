package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"
)

// A step is one feature to try: the curl line printed for a person at a
// shell, and the same request (or loop of requests) made by -once and the
// tests, with what its answers must be.
type step struct {
	// about says what the step shows; it is printed as a comment above the
	// curl line.
	about string
	// path is the gateway path requested.
	path string
	// token is the shell variable holding the bearer token sent: "TOKEN",
	// "TOKEN_NOSCOPE", or empty for none.
	token string
	// headers prints the response headers too (curl -i).
	headers bool
	// loop, when above 1, sends the request that many times and prints the
	// status of each, followed by the response header named by show.
	loop int
	show string
	// grep, when set, prints only the body lines matching it (a regular
	// expression, as grep -E takes it).
	grep string
	// check tells whether the answers are the ones the step promises.
	check func(as []answer) error
}

// policy is the rate limit's name in the RateLimit header fields.
var policy = fmt.Sprintf(`"%d-per-1s"`, ratePerSecond)

// answer is one response, read whole.
type answer struct {
	status int
	header http.Header
	body   string
}

// steps are the tour, in the order it makes sense to try them: each
// request uses up some of alice's budget on its route, and the breaker
// steps must run within breakerOpen of each other.
func steps() []step {
	return []step{
		{
			about:   "No token: 401, a problem+json body and WWW-Authenticate: Bearer.",
			path:    "/api/products/p1",
			headers: true,
			check:   one(status(401), header("WWW-Authenticate", "Bearer"), header("Content-Type", "application/problem+json")),
		},
		{
			about:   "alice's token: 200 from the products service, with her RateLimit budget.",
			path:    "/api/products/p1",
			token:   "TOKEN",
			headers: true,
			check:   one(status(200), header("RateLimit", policy+";r="), body(`"name":"Brass desk lamp"`)),
		},
		{
			about:   `bob's token is valid but lacks the "shop" scope: 403.`,
			path:    "/api/products/p1",
			token:   "TOKEN_NOSCOPE",
			headers: true,
			check:   one(status(403), header("WWW-Authenticate", `error="insufficient_scope"`)),
		},
		{
			about: "The order summary: the order, its products and its payment, three calls merged into one answer.",
			path:  "/api/orders/o1/summary",
			token: "TOKEN",
			check: one(status(200), noHeader("Pylon-Partial"),
				body(`"order":{"id":"o1"`), body(`"products":[{"id":"p1"`), body(`"payment":{"order":"o1","status":"captured"`)),
		},
		{
			about: fmt.Sprintf("Trip the payments breaker: order %q makes the payments service fail; after %d failures in a row the breaker opens and the gateway answers 503 with Retry-After itself.", brokenOrder, breakerFailures),
			path:  "/api/payments/" + brokenOrder,
			token: "TOKEN",
			loop:  breakerFailures + 1,
			show:  "Retry-After",
			check: statuses(append(slices.Repeat([]int{500}, breakerFailures), 503)...),
		},
		{
			about:   fmt.Sprintf("While it is open (%s) every payment is refused at once, without calling the service.", breakerOpen),
			path:    "/api/payments/o1",
			token:   "TOKEN",
			headers: true,
			check:   one(status(503), header("Retry-After", ""), header("Content-Type", "application/problem+json")),
		},
		{
			about: "The summary still answers 200 without the payment (an optional call), marked partial.",
			path:  "/api/orders/o1/summary",
			token: "TOKEN",
			check: one(status(200), header("Pylon-Partial", "payment"),
				body(`"order":{"id":"o1"`), body(`"_errors":{"payment":"unavailable"}`)),
		},
		{
			about: fmt.Sprintf("Hit the rate limit: %d requests/s per subject and route, bursts of %d; then 429 with Retry-After.", ratePerSecond, rateBurst),
			path:  "/api/products/p2",
			token: "TOKEN",
			loop:  2 * rateBurst,
			show:  "RateLimit",
			check: limited,
		},
		{
			about: "Prometheus metrics: the breaker's transitions, rate-limit decisions, aggregation calls, and more.",
			path:  "/metrics",
			grep:  `^pylon_(breaker_transitions|ratelimit_decisions|aggregate_calls)_total`,
			check: one(status(200),
				body(`pylon_breaker_transitions_total{breaker="payments http://`), body(`",from="closed",to="open"} 1`),
				body(`pylon_ratelimit_decisions_total{http_route="product",result="limited"}`),
				body(`pylon_aggregate_calls_total{call="payment",http_route="order-summary",outcome="error"} 1`)),
		},
		{
			about: "Readiness: 200 while products and orders (the critical backends) have a healthy target.",
			path:  "/readyz",
			check: one(status(200), body(`"status":"ready"`), body(`{"name":"payments","healthy":1,"targets":1}`)),
		},
	}
}

// curl returns the step's shell command.
func (s step) curl() string {
	auth := ""
	if s.token != "" {
		auth = ` -H "Authorization: Bearer $` + s.token + `"`
	}
	switch {
	case s.loop > 1:
		return fmt.Sprintf(`for i in $(seq %d); do curl -s -o /dev/null -w '%%{http_code} %%header{%s}\n'%s $GW%s; done`,
			s.loop, strings.ToLower(s.show), auth, s.path)
	case s.grep != "":
		return fmt.Sprintf(`curl -s%s $GW%s | grep -E '%s'`, auth, s.path, s.grep)
	case s.headers:
		return fmt.Sprintf(`curl -si%s $GW%s`, auth, s.path)
	default:
		return fmt.Sprintf(`curl -s%s $GW%s`, auth, s.path)
	}
}

// tour makes every step's requests against the gateway and prints what a
// person would see, step by step. It returns an error naming the steps whose
// answers were not the ones promised.
func (a *app) tour(w io.Writer) error {
	transport := &http.Transport{}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: transport, Timeout: 5 * time.Second}
	tokens := map[string]string{"TOKEN": a.Token, "TOKEN_NOSCOPE": a.NoScopeToken}

	fmt.Fprintf(w, "GW=%s\n", a.URL)
	var failed []string
	for i, s := range steps() {
		fmt.Fprintf(w, "\n# %d. %s\n$ %s\n", i+1, s.about, s.curl())
		as, err := s.do(client, a.URL, tokens[s.token])
		if err == nil {
			s.print(w, as)
			err = s.check(as)
		}
		if err != nil {
			fmt.Fprintf(w, "  !! %v\n", err)
			failed = append(failed, fmt.Sprintf("step %d", i+1))
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("unexpected answers in %s", strings.Join(failed, ", "))
	}
	return nil
}

// maxBody bounds the body read from any answer.
const maxBody = 1 << 20

// do sends the step's request, or its loop of requests.
func (s step) do(client *http.Client, base, token string) ([]answer, error) {
	as := make([]answer, 0, max(s.loop, 1))
	for range max(s.loop, 1) {
		req, err := http.NewRequest(http.MethodGet, base+s.path, nil)
		if err != nil {
			return nil, err
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		res, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		b, err := io.ReadAll(io.LimitReader(res.Body, maxBody))
		res.Body.Close()
		if err != nil {
			return nil, err
		}
		as = append(as, answer{res.StatusCode, res.Header, string(b)})
	}
	return as, nil
}

// shownHeaders are the response headers printed for a step with headers,
// when present.
var shownHeaders = []string{"Content-Type", "WWW-Authenticate", "Retry-After", "RateLimit-Policy", "RateLimit", "Pylon-Partial"}

// maxShown bounds the body printed for one answer.
const maxShown = 600

// print writes the answers as the step's curl line would show them.
func (s step) print(w io.Writer, as []answer) {
	switch {
	case s.loop > 1:
		for _, a := range as {
			fmt.Fprintf(w, "  %d %s\n", a.status, a.header.Get(s.show))
		}
	case s.grep != "":
		re := regexp.MustCompile(s.grep)
		for line := range strings.SplitSeq(as[0].body, "\n") {
			if re.MatchString(line) {
				fmt.Fprintf(w, "  %s\n", line)
			}
		}
	default:
		a := as[0]
		if s.headers {
			fmt.Fprintf(w, "  %d %s\n", a.status, http.StatusText(a.status))
			for _, h := range shownHeaders {
				if v := a.header.Get(h); v != "" {
					fmt.Fprintf(w, "  %s: %s\n", h, v)
				}
			}
		}
		b := strings.TrimSpace(a.body)
		if len(b) > maxShown {
			b = b[:maxShown] + "..."
		}
		fmt.Fprintf(w, "  %s\n", b)
	}
}

// Checks on answers.

type expect func(answer) error

// one checks a single answer against every expectation.
func one(es ...expect) func([]answer) error {
	return func(as []answer) error {
		if len(as) != 1 {
			return fmt.Errorf("got %d answers, want 1", len(as))
		}
		var errs []error
		for _, e := range es {
			errs = append(errs, e(as[0]))
		}
		return errors.Join(errs...)
	}
}

func status(code int) expect {
	return func(a answer) error {
		if a.status != code {
			return fmt.Errorf("status %d, want %d", a.status, code)
		}
		return nil
	}
}

// header expects header name to contain part (empty: to be present).
func header(name, part string) expect {
	return func(a answer) error {
		if v := a.header.Get(name); v == "" || !strings.Contains(v, part) {
			return fmt.Errorf("header %s is %q, want it to contain %q", name, v, part)
		}
		return nil
	}
}

func noHeader(name string) expect {
	return func(a answer) error {
		if v := a.header.Get(name); v != "" {
			return fmt.Errorf("header %s is %q, want none", name, v)
		}
		return nil
	}
}

func body(part string) expect {
	return func(a answer) error {
		if !strings.Contains(a.body, part) {
			return fmt.Errorf("body does not contain %s", part)
		}
		return nil
	}
}

// statuses expects the answers of a loop to have exactly these statuses,
// and a refusal (503) to say when to retry.
func statuses(codes ...int) func([]answer) error {
	return func(as []answer) error {
		got := make([]int, len(as))
		for i, a := range as {
			got[i] = a.status
			if a.status == http.StatusServiceUnavailable && a.header.Get("Retry-After") == "" {
				return fmt.Errorf("answer %d: 503 without Retry-After", i+1)
			}
		}
		if !slices.Equal(got, codes) {
			return fmt.Errorf("statuses %v, want %v", got, codes)
		}
		return nil
	}
}

// limited expects a loop to be admitted for a while and then refused with
// 429 to the end, each refusal a problem with Retry-After and the RateLimit
// fields.
func limited(as []answer) error {
	n := 0
	for n < len(as) && as[n].status == http.StatusOK {
		n++
	}
	if n == 0 || n == len(as) {
		return fmt.Errorf("%d of %d requests admitted, want some but not all", n, len(as))
	}
	for i, a := range as[n:] {
		if a.status != http.StatusTooManyRequests {
			return fmt.Errorf("answer %d: status %d after a 429, want 429", n+i+1, a.status)
		}
		for _, e := range []expect{header("Retry-After", ""), header("RateLimit", policy+";r=0"),
			header("RateLimit-Policy", fmt.Sprintf("%s;q=%d;w=1", policy, ratePerSecond)), header("Content-Type", "application/problem+json")} {
			if err := e(a); err != nil {
				return fmt.Errorf("answer %d: %w", n+i+1, err)
			}
		}
	}
	return nil
}
