package admin

import (
	"net/http"
	"regexp"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/middleware"
)

// StatsOptions configures a [Stats]. Every field's zero value is a safe
// default.
type StatsOptions struct {
	// Window is how much recent traffic is kept, in one-second buckets per
	// route and per target. Zero means 5 minutes; at most 1 hour.
	Window time.Duration
	// MaxRoutes bounds the routes tracked; requests of routes past it are
	// counted under the route "(other)". Zero means 256.
	MaxRoutes int
	// MaxTargets bounds the upstream targets tracked. When it is reached,
	// a new target takes the place of one that had no attempt in the whole
	// Window (a target long gone after a deploy or a discovery change);
	// attempts to targets past it are not counted per target while every
	// tracked one is still in use. Zero means 1024.
	MaxTargets int
	// MaxErrors is how many recent errors are kept. Zero means 50.
	MaxErrors int
	// Now returns the current time, for the buckets. Nil means time.Now.
	Now func() time.Time
}

// Route names under which Stats counts requests that have no route of
// their own.
const (
	// RouteUnmatched counts requests no route matched (404, 405, refused
	// paths).
	RouteUnmatched = "(unmatched)"
	// RouteOther counts requests of routes past StatsOptions.MaxRoutes.
	RouteOther = "(other)"
)

// Stats collects per-route request and error rates, per-target latency and
// error rates, and the recent errors, for the status page. Its Middleware
// reads the RequestInfo of each finished request; put it first in the
// Gateway's global chain (gw.Use(stats.Middleware)) so that it sees every
// request, refused ones included. All methods are safe for concurrent use.
//
// Memory is bounded: a ring of one-second buckets per route and per target
// (StatsOptions.Window), at most MaxRoutes routes and MaxTargets targets, and
// MaxErrors recent errors.
type Stats struct {
	now       func() time.Time
	realClock bool // now is time.Now, the clock of RequestInfo.Start
	window    int  // buckets per ring
	maxR      int
	maxT      int
	mu        sync.RWMutex
	routes    map[string]*ring
	order     []string // route names, in order first seen
	targets   map[targetKey]*ring
	swept     int64 // the second targetRing last looked for idle rings
	errMu     sync.Mutex
	errs      []ErrorRecord // ring of MaxErrors
	errNext   int
	errCount  int
}

type targetKey struct{ backend, target string }

// ring holds one-second buckets; bucket i holds second sec with sec%len == i.
type ring struct {
	mu      sync.Mutex
	buckets []bucket
}

type bucket struct {
	sec       int64
	requests  uint32
	errors    uint32 // status >= 500
	latencyNs int64  // summed
	maxNs     int64
	hits      uint32 // RequestInfo.Cache "hit" or "stale"
	misses    uint32 // any other cache status
	allowed   uint32 // rate limit decisions
	limited   uint32
}

// NewStats returns an empty Stats.
func NewStats(opts StatsOptions) *Stats {
	w := opts.Window
	if w <= 0 {
		w = 5 * time.Minute
	}
	w = min(w, time.Hour)
	s := &Stats{
		now:     opts.Now,
		window:  max(int(w/time.Second), 1),
		maxR:    opts.MaxRoutes,
		maxT:    opts.MaxTargets,
		routes:  make(map[string]*ring),
		targets: make(map[targetKey]*ring),
		errs:    make([]ErrorRecord, max(opts.MaxErrors, 0)),
	}
	if s.now == nil {
		s.now, s.realClock = time.Now, true
	}
	if s.maxR <= 0 {
		s.maxR = 256
	}
	if s.maxT <= 0 {
		s.maxT = 1024
	}
	if opts.MaxErrors == 0 {
		s.errs = make([]ErrorRecord, 50)
	}
	return s
}

// Middleware counts each request once it is finished. Its type is
// pylon.Middleware.
func (s *Stats) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info := pylon.Info(r.Context())
		if info == nil {
			info = &pylon.RequestInfo{}
			r = r.WithContext(pylon.NewContext(r.Context(), info))
		}
		// The Gateway sets Start; reading the clock costs this machine
		// more than anything else here, so it is read once when it can be.
		start := info.Start
		if start.IsZero() || !s.realClock {
			start = s.now()
		}
		ww := middleware.WrapWriter(w)
		completed := false
		defer func() {
			status := ww.Status()
			switch {
			case !completed && !ww.WroteHeader():
				status = http.StatusInternalServerError
			case info.ClientCanceled:
				status = 499
			case status == 0 && ww.Hijacked():
				status = http.StatusSwitchingProtocols
			case status == 0:
				status = http.StatusOK
			}
			s.Record(r.Method, info, status, start, s.now())
		}()
		next.ServeHTTP(ww, r)
		completed = true
	})
}

// Record counts one finished request answered with status, which began at
// start and ended at end. Middleware calls it; call it yourself to count
// requests served outside a Gateway.
func (s *Stats) Record(method string, info *pylon.RequestInfo, status int, start, end time.Time) {
	sec := end.Unix()
	d := end.Sub(start)
	isErr := status >= 500
	route := info.Route
	if route == "" {
		route = RouteUnmatched
	}
	rg := s.routeRing(route)
	rg.mu.Lock()
	b := rg.at(sec)
	b.requests++
	if isErr {
		b.errors++
	}
	b.latencyNs += int64(d)
	b.maxNs = max(b.maxNs, int64(d))
	switch info.Cache {
	case "":
	case "hit", "stale":
		b.hits++
	default:
		b.misses++
	}
	if info.RateLimit.Decided {
		if info.RateLimit.Allowed {
			b.allowed++
		} else {
			b.limited++
		}
	}
	rg.mu.Unlock()

	if info.Backend != "" && info.Target != "" {
		if tr := s.targetRing(targetKey{info.Backend, info.Target}, sec); tr != nil {
			up := info.UpstreamDuration
			tr.mu.Lock()
			b := tr.at(sec)
			b.requests++
			if isErr && !info.ClientCanceled {
				b.errors++
			}
			b.latencyNs += int64(up)
			b.maxNs = max(b.maxNs, int64(up))
			tr.mu.Unlock()
		}
	}
	if isErr && len(s.errs) > 0 {
		s.addError(ErrorRecord{
			Time:      end,
			Route:     route,
			Method:    method,
			Status:    status,
			Reason:    Redact(info.Error),
			RequestID: info.RequestID,
			Backend:   info.Backend,
		})
	}
}

// at returns the bucket of second sec, emptied if it held an older second.
// The ring's lock must be held.
func (rg *ring) at(sec int64) *bucket {
	b := &rg.buckets[int(uint64(sec)%uint64(len(rg.buckets)))]
	if b.sec != sec {
		*b = bucket{sec: sec}
	}
	return b
}

func (s *Stats) routeRing(name string) *ring {
	s.mu.RLock()
	rg := s.routes[name]
	s.mu.RUnlock()
	if rg != nil {
		return rg
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if rg = s.routes[name]; rg != nil {
		return rg
	}
	if len(s.routes) >= s.maxR {
		name = RouteOther
		if rg = s.routes[name]; rg != nil {
			return rg
		}
	}
	rg = &ring{buckets: make([]bucket, s.window)}
	s.routes[name] = rg
	s.order = append(s.order, name)
	return rg
}

// targetRing returns the ring of target k, making one if there is room, or
// room can be made by dropping the rings of targets without an attempt in
// the window that ends at second sec.
func (s *Stats) targetRing(k targetKey, sec int64) *ring {
	s.mu.RLock()
	rg := s.targets[k]
	s.mu.RUnlock()
	if rg != nil {
		return rg
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if rg = s.targets[k]; rg != nil {
		return rg
	}
	if len(s.targets) >= s.maxT {
		if s.swept == sec {
			return nil // looked this second already: every ring was in use
		}
		s.swept = sec
		for tk, old := range s.targets {
			if old.idle(sec) {
				delete(s.targets, tk)
			}
		}
		if len(s.targets) >= s.maxT {
			return nil
		}
	}
	rg = &ring{buckets: make([]bucket, s.window)}
	s.targets[k] = rg
	return rg
}

// idle reports whether the ring holds nothing of the window that ends at
// second sec.
func (rg *ring) idle(sec int64) bool {
	rg.mu.Lock()
	defer rg.mu.Unlock()
	for _, b := range rg.buckets {
		if b.sec > sec-int64(len(rg.buckets)) {
			return false
		}
	}
	return true
}

func (s *Stats) addError(e ErrorRecord) {
	s.errMu.Lock()
	s.errs[s.errNext] = e
	s.errNext = (s.errNext + 1) % len(s.errs)
	s.errCount = min(s.errCount+1, len(s.errs))
	s.errMu.Unlock()
}

// ErrorRecord is one recent request answered with a 5xx status.
type ErrorRecord struct {
	// Time is when the request ended.
	Time time.Time `json:"time"`
	// Route is the route's name, RouteUnmatched or RouteOther.
	Route string `json:"route"`
	// Method is the request method.
	Method string `json:"method"`
	// Status is the status code answered.
	Status int `json:"status"`
	// Reason is RequestInfo.Error with addresses, URLs and credentials
	// replaced (see [Redact]).
	Reason string `json:"reason,omitempty"`
	// RequestID is the request's ID, when the RequestID middleware ran.
	RequestID string `json:"request_id,omitempty"`
	// Backend is the backend's name, when the request reached one.
	Backend string `json:"backend,omitempty"`
}

// Errors returns the recent errors, newest first.
func (s *Stats) Errors() []ErrorRecord {
	s.errMu.Lock()
	defer s.errMu.Unlock()
	out := make([]ErrorRecord, 0, s.errCount)
	for i := 1; i <= s.errCount; i++ {
		out = append(out, s.errs[(s.errNext-i+len(s.errs))%len(s.errs)])
	}
	return out
}

// Traffic is a summary of recent requests: over the last minute, and as a
// series over the whole window.
type Traffic struct {
	// Requests is the number of requests in the last minute.
	Requests int `json:"requests"`
	// Errors is the number of those answered 5xx.
	Errors int `json:"errors"`
	// Rate is Requests per second.
	Rate float64 `json:"rate_per_sec"`
	// ErrorRate is Errors / Requests, 0 without requests.
	ErrorRate float64 `json:"error_rate"`
	// LatencyMs is the mean latency in milliseconds (for a target: the
	// time to upstream response headers).
	LatencyMs float64 `json:"latency_ms"`
	// MaxLatencyMs is the highest latency seen, in milliseconds.
	MaxLatencyMs float64 `json:"max_latency_ms"`
	// CacheHits and CacheMisses count the requests a cache answered from
	// store ("hit", "stale") and all others it saw.
	CacheHits   int `json:"cache_hits,omitempty"`
	CacheMisses int `json:"cache_misses,omitempty"`
	// RateAllowed and RateLimited count rate-limit decisions.
	RateAllowed int `json:"rate_allowed,omitempty"`
	RateLimited int `json:"rate_limited,omitempty"`
	// Series holds requests and errors per step over the whole window,
	// oldest first.
	Series Series `json:"series"`
}

// Series is requests and errors per step, oldest first.
type Series struct {
	// StepSeconds is the width of each point.
	StepSeconds int `json:"step_seconds"`
	// Requests per step.
	Requests []int `json:"requests"`
	// Errors per step.
	Errors []int `json:"errors"`
}

// Points is how many points a Series holds at most.
const Points = 60

// empty returns the Traffic of a route without requests.
func (s *Stats) empty() Traffic {
	step := max((s.window+Points-1)/Points, 1)
	n := s.window / step
	return Traffic{Series: Series{StepSeconds: step, Requests: make([]int, n), Errors: make([]int, n)}}
}

// summary reads rg at now. The ring's lock is taken.
func (s *Stats) summary(rg *ring, now time.Time) Traffic {
	sec := now.Unix()
	t := s.empty()
	step, n := t.Series.StepSeconds, len(t.Series.Requests)
	var lat, maxNs int64
	rg.mu.Lock()
	for i := range s.window {
		b := &rg.buckets[i]
		age := sec - b.sec
		// Points are aligned on multiples of step seconds, so that a
		// request stays in its point as time passes.
		back := sec/int64(step) - b.sec/int64(step)
		if b.requests == 0 || age < 0 || back >= int64(n) {
			continue
		}
		p := n - 1 - int(back)
		t.Series.Requests[p] += int(b.requests)
		t.Series.Errors[p] += int(b.errors)
		if age < 60 {
			t.Requests += int(b.requests)
			t.Errors += int(b.errors)
			lat += b.latencyNs
			maxNs = max(maxNs, b.maxNs)
			t.CacheHits += int(b.hits)
			t.CacheMisses += int(b.misses)
			t.RateAllowed += int(b.allowed)
			t.RateLimited += int(b.limited)
		}
	}
	rg.mu.Unlock()
	span := min(60, s.window)
	t.Rate = float64(t.Requests) / float64(span)
	if t.Requests > 0 {
		t.ErrorRate = float64(t.Errors) / float64(t.Requests)
		t.LatencyMs = float64(lat) / float64(t.Requests) / 1e6
	}
	t.MaxLatencyMs = float64(maxNs) / 1e6
	return t
}

// Route returns the traffic of the named route, and false when it has
// seen none.
func (s *Stats) Route(name string) (Traffic, bool) {
	s.mu.RLock()
	rg := s.routes[name]
	s.mu.RUnlock()
	if rg == nil {
		return Traffic{}, false
	}
	return s.summary(rg, s.now()), true
}

// Target returns the traffic of one target of a backend (t.String()), and
// false when it has seen none.
func (s *Stats) Target(backend, target string) (Traffic, bool) {
	s.mu.RLock()
	rg := s.targets[targetKey{backend, target}]
	s.mu.RUnlock()
	if rg == nil {
		return Traffic{}, false
	}
	return s.summary(rg, s.now()), true
}

// routeNames returns the routes seen, in the order first seen.
func (s *Stats) routeNames() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return append([]string(nil), s.order...)
}

// credentialWords are the words that make a name a credential's (inside
// identifiers too: access_token, client_secret, X-Internal-Key, passwd):
// Redact hides the values after them, and the page the values of route
// conditions that name them.
const credentialWords = `token|key|passw|pwd|secret|session|cookie|auth|signature`

var redactions = []struct {
	re   *regexp.Regexp
	with string
}{
	// A JSON Web Token anywhere (three base64url parts, the first two
	// starting with "eyJ", the encoding of `{"`).
	{regexp.MustCompile(`eyJ[A-Za-z0-9_-]*\.eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*`), "[token]"},
	// userinfo before a host: "admin:s3cret@db.internal".
	{regexp.MustCompile(`[^\s/@:]+:[^\s/@]*@`), "[user]@"},
	// The credentials after an authentication scheme.
	{regexp.MustCompile(`(?i)\b(bearer|basic|dpop)\s+[^\s",;]+`), "$1 [redacted]"},
	// A value after a credential-like name, inside identifiers too
	// (access_token, client_secret, api_key, passwd) and JSON-quoted.
	{regexp.MustCompile(`(?i)([a-z0-9_-]*(?:` + credentialWords + `)[a-z0-9_-]*"?)(\s*[=:]\s*"?|\s+)[^\s",;&}]+`), "$1$2[redacted]"},
	{regexp.MustCompile(`(?i)\b[a-z][a-z0-9+.-]*://\S+`), "[url]"},
	{regexp.MustCompile(`\[[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*(%[0-9A-Za-z]+)?\](:\d+)?`), "[addr]"},
	{regexp.MustCompile(`\b\d{1,3}(\.\d{1,3}){3}(:\d+)?\b`), "[addr]"},
	{regexp.MustCompile(`(?i)\b[a-z0-9-]+(\.[a-z0-9-]+)*:\d{1,5}\b`), "[addr]"},
}

// maxReason bounds the length of a redacted reason.
const maxReason = 160

// Redact returns reason with what must not be shown replaced: JSON Web
// Tokens by "[token]", userinfo ("user:pass@") by "[user]@", URLs by
// "[url]", IP addresses and host:port pairs by "[addr]", and the value after
// a credential-like name ("Bearer", "Basic", or a name holding "token",
// "key", "passw", "pwd", "secret", "session", "cookie", "auth" or
// "signature", as in access_token=, client_secret:, "password":) by
// "[redacted]".
// It is cut to 160 bytes. The recent errors hold only redacted reasons.
func Redact(reason string) string {
	if reason == "" {
		return ""
	}
	for _, r := range redactions {
		reason = r.re.ReplaceAllString(reason, r.with)
	}
	if len(reason) > maxReason {
		cut := maxReason
		for cut > 0 && !utf8.RuneStart(reason[cut]) {
			cut--
		}
		reason = reason[:cut] + "…"
	}
	return reason
}
