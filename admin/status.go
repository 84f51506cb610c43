package admin

import (
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/pylon-gateway/pylon/breaker"
)

// Version is the version of the JSON shape of [Status]. Fields are only
// ever added within a version; a field's meaning never changes.
const Version = 1

// Status is what GET /api/v1/status answers, and what the page shows. Its
// JSON shape is stable (see Version): field names are snake_case, times are
// RFC 3339, durations milliseconds, rates per second, ratios in [0, 1];
// lists are never null.
type Status struct {
	// Version is [Version].
	Version int `json:"version"`
	// Time is when the status was taken.
	Time time.Time `json:"time"`
	// Title is Options.Title.
	Title string `json:"title"`
	// Draining reports that readiness is failed by hand
	// (Gateway.SetDraining, the readiness action).
	Draining bool `json:"draining"`
	// ActionsEnabled reports that an Authorizer is set.
	ActionsEnabled bool `json:"actions_enabled"`
	// WindowSeconds is how much traffic the series cover (0 without Stats).
	WindowSeconds int `json:"window_seconds"`
	// Routes is the route table, in the order declared, then the pseudo
	// routes RouteUnmatched and RouteOther when they saw traffic.
	Routes []RouteStatus `json:"routes"`
	// Backends lists every backend and its targets.
	Backends []BackendStatus `json:"backends"`
	// Breakers lists the breakers of Options.Breakers.
	Breakers []BreakerStatus `json:"breakers"`
	// Caches lists the caches of Options.Caches, by name.
	Caches []CacheStatus `json:"caches"`
	// RateLimits lists the stores of Options.RateLimitStores, by name.
	RateLimits []RateLimitStatus `json:"rate_limits"`
	// Errors are the recent 5xx answers, newest first.
	Errors []ErrorRecord `json:"errors"`
	// Actions are the recent actions, newest first.
	Actions []ActionRecord `json:"actions"`
}

// RouteStatus is one route of the table with its traffic.
type RouteStatus struct {
	// Name is the route's name.
	Name string `json:"name"`
	// Pattern is the full http.ServeMux pattern.
	Pattern string `json:"pattern"`
	// Matchers are its header and query conditions.
	Matchers []string `json:"matchers"`
	// Middleware is the number of group and route middlewares.
	Middleware int `json:"middleware"`
	// Target is "backend NAME" or "handler TYPE".
	Target string `json:"target"`
	// TimeoutMs is the route's deadline, 0 when none.
	TimeoutMs int64 `json:"timeout_ms"`
	// Traffic is its recent traffic; nil without Stats.
	Traffic *Traffic `json:"traffic"`
}

// BackendStatus is one backend.
type BackendStatus struct {
	// Name is the backend's name.
	Name string `json:"name"`
	// Healthy is how many targets are healthy and not drained.
	Healthy int `json:"healthy"`
	// Breaker is the state of a per-backend breaker guard ("closed",
	// "open", "half-open"), empty without one.
	Breaker string `json:"breaker,omitempty"`
	// Targets are its targets, in the order configured.
	Targets []TargetStatus `json:"targets"`
}

// TargetStatus is one upstream target.
type TargetStatus struct {
	// URL is the target's base URL.
	URL string `json:"url"`
	// Healthy reports that health checks pass and it is not ejected.
	Healthy bool `json:"healthy"`
	// Drained reports that it was taken out of rotation by hand.
	Drained bool `json:"drained"`
	// Ejections counts passive-health ejections since start.
	Ejections uint64 `json:"ejections"`
	// InFlight is the number of requests outstanding on it.
	InFlight int `json:"in_flight"`
	// Weight is its balancing weight.
	Weight int `json:"weight"`
	// Breaker is the state of its per-target breaker, empty without one.
	Breaker string `json:"breaker,omitempty"`
	// Traffic is its recent attempts (latency: to response headers); nil
	// without Stats or before its first request.
	Traffic *Traffic `json:"traffic"`
}

// BreakerStatus is one breaker.
type BreakerStatus struct {
	// Name is the breaker's name.
	Name string `json:"name"`
	// State is "closed", "open" or "half-open".
	State string `json:"state"`
}

// CacheStatus is one cache.
type CacheStatus struct {
	// Name is its name in Options.Caches.
	Name string `json:"name"`
	// Entries is the number of stored entries, -1 when the store does not
	// say.
	Entries int `json:"entries"`
	// Bytes is the bytes held, -1 when the store does not say.
	Bytes int64 `json:"bytes"`
	// Hits and Misses count, over the last minute and every route, the
	// requests a cache answered from store and the others it saw.
	Hits   int `json:"hits"`
	Misses int `json:"misses"`
	// HitRatio is Hits / (Hits + Misses), 0 without requests.
	HitRatio float64 `json:"hit_ratio"`
}

// RateLimitStatus is one rate-limit store.
type RateLimitStatus struct {
	// Name is its name in Options.RateLimitStores.
	Name string `json:"name"`
	// Keys is the number of client keys it holds.
	Keys int `json:"keys"`
	// Allowed and Limited count, over the last minute and every route,
	// the requests rate limits admitted and refused.
	Allowed int `json:"allowed"`
	Limited int `json:"limited"`
}

// ActionRecord is one action run through the admin API.
type ActionRecord struct {
	// Time is when it ran.
	Time time.Time `json:"time"`
	// Who is what the Authorizer said.
	Who string `json:"who"`
	// Action is the action's name ("drain", "purge", ...).
	Action string `json:"action"`
	// Subject is what it acted on ("orders http://10.0.0.5:8080").
	Subject string `json:"subject"`
	// Result is "ok" or the reason it failed.
	Result string `json:"result"`
}

// Status returns the current status.
func (h *Handler) Status() Status {
	now := h.now()
	st := Status{
		Version:        Version,
		Time:           now,
		Title:          h.opts.Title,
		Draining:       h.opts.Gateway.Draining(),
		ActionsEnabled: h.opts.Authorizer != nil,
		Routes:         []RouteStatus{},
		Backends:       []BackendStatus{},
		Breakers:       []BreakerStatus{},
		Caches:         []CacheStatus{},
		RateLimits:     []RateLimitStatus{},
		Errors:         []ErrorRecord{},
		Actions:        h.recentActions(),
	}
	stats := h.opts.Stats
	var all Traffic // every route's last minute, for caches and limits
	seen := map[string]bool{}
	for _, e := range h.opts.Gateway.Routes() {
		rs := RouteStatus{Name: e.Name, Pattern: e.Pattern, Matchers: maskMatchers(e.Matchers), Middleware: e.Middleware,
			Target: e.Target, TimeoutMs: e.Timeout.Milliseconds()}
		if rs.Matchers == nil {
			rs.Matchers = []string{}
		}
		if stats != nil {
			tr, ok := stats.Route(e.Name)
			if !ok {
				tr = stats.empty()
			}
			rs.Traffic = &tr
			addTraffic(&all, tr)
		}
		seen[e.Name] = true
		st.Routes = append(st.Routes, rs)
	}
	if stats != nil {
		st.WindowSeconds = stats.window
		for _, name := range stats.routeNames() {
			if seen[name] {
				continue
			}
			if tr, ok := stats.Route(name); ok {
				st.Routes = append(st.Routes, RouteStatus{Name: name, Matchers: []string{}, Traffic: &tr})
				addTraffic(&all, tr)
			}
		}
		st.Errors = stats.Errors()
	}
	for _, b := range h.backends() {
		bs := BackendStatus{Name: b.Name(), Targets: []TargetStatus{}}
		guard := h.opts.Guards[b.Name()]
		if g, ok := guard.(*breaker.BackendGuard); ok {
			bs.Breaker = g.State().String()
		}
		for _, t := range b.Targets() {
			ts := TargetStatus{URL: t.String(), Healthy: t.Healthy(), Drained: t.Drained(),
				Ejections: t.Ejections(), InFlight: t.InFlight(), Weight: t.Weight()}
			if g, ok := guard.(*breaker.TargetGuard); ok {
				ts.Breaker = g.State(t).String()
			}
			if stats != nil {
				if tr, ok := stats.Target(b.Name(), t.String()); ok {
					ts.Traffic = &tr
				}
			}
			if ts.Healthy && !ts.Drained {
				bs.Healthy++
			}
			bs.Targets = append(bs.Targets, ts)
		}
		st.Backends = append(st.Backends, bs)
	}
	for _, b := range h.opts.Breakers {
		st.Breakers = append(st.Breakers, BreakerStatus{Name: b.Name(), State: b.State().String()})
	}
	for _, name := range sortedKeys(h.opts.Caches) {
		cs := CacheStatus{Name: name, Entries: -1, Bytes: -1, Hits: all.CacheHits, Misses: all.CacheMisses}
		if s, ok := h.opts.Caches[name].Store().(interface{ Len() int }); ok {
			cs.Entries = s.Len()
		}
		if s, ok := h.opts.Caches[name].Store().(interface{ Bytes() int64 }); ok {
			cs.Bytes = s.Bytes()
		}
		if n := cs.Hits + cs.Misses; n > 0 {
			cs.HitRatio = float64(cs.Hits) / float64(n)
		}
		st.Caches = append(st.Caches, cs)
	}
	for _, name := range sortedKeys(h.opts.RateLimitStores) {
		st.RateLimits = append(st.RateLimits, RateLimitStatus{Name: name, Keys: h.opts.RateLimitStores[name].Len(),
			Allowed: all.RateAllowed, Limited: all.RateLimited})
	}
	return st
}

func addTraffic(all *Traffic, t Traffic) {
	all.CacheHits += t.CacheHits
	all.CacheMisses += t.CacheMisses
	all.RateAllowed += t.RateAllowed
	all.RateLimited += t.RateLimited
}

func (h *Handler) serveStatus(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, h.Status())
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	body, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		code, body = http.StatusInternalServerError, []byte(`{"error":"encoding"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(body, '\n'))
}

// pageData is what the template renders.
type pageData struct {
	Status
	Refresh time.Duration
}

func (h *Handler) servePage(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := page.Execute(w, pageData{Status: h.Status(), Refresh: h.opts.Refresh}); err != nil {
		h.logger.Error("admin: rendering the page", "error", err.Error())
	}
}

// secretName matches the names of header and query conditions whose value
// is a credential (an internal key a route requires, say).
var secretName = regexp.MustCompile(`(?i)(?:` + credentialWords + `)`)

// maskMatchers returns a route's conditions ("header X-Version=2") with the
// value of those that name a credential replaced by "[redacted]": the page
// shows which conditions a route has, never a secret one requires.
func maskMatchers(ms []string) []string {
	if len(ms) == 0 {
		return ms
	}
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m
		if name, _, ok := strings.Cut(m, "="); ok && secretName.MatchString(name) {
			out[i] = name + "=[redacted]"
		}
	}
	return out
}
