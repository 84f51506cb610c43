package pylon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Target is one upstream of a Backend: a base URL that requests are proxied
// to, with its weight, its count of outstanding requests and its health.
//
// Targets are created by the Backend from its configuration; user code only
// reads them (in a custom [Balancer], in logs, in tests). All methods are safe
// for concurrent use.
type Target struct {
	url  *url.URL
	str  string
	hash uint64 // mixed hash of str, for ConsistentHash
	pool *pool  // nil for a zero Target

	weight   atomic.Int64 // set by SetTargets; read by balancers
	priority atomic.Int32 // tier, lower first
	inflight atomic.Int64

	// Time to response headers, for HedgeOptions.Observed (hedge.go,
	// latency.go); nil until the first sample.
	lat atomic.Pointer[latencyHist]

	// Membership, see targets.go.
	removed     atomic.Bool // no longer in the pool's set: takes no new attempt
	drainClosed atomic.Bool // its idle connections were closed once drained

	// Passive health (outlier detection), see health.go.
	ejectedUntil atomic.Int64  // UnixNano at which the current ejection ends; 0 when not ejected
	failures     atomic.Int32  // consecutive failures since the last success or ejection
	mu           sync.Mutex    // guards ejections and lastEnd
	ejections    int           // ejection multiplier: ejections in a row, decayed
	ejectedTotal atomic.Uint64 // ejections since start, for metrics
	lastEnd      time.Time     // when the last ejection ended (or will end)

	// Set by an operator (SetDrained): no new requests.
	drained atomic.Bool

	// Slow start, see slowstart.go: UnixNano at which the target's ramp
	// began; 0 when it is not ramping.
	rampFrom atomic.Int64

	// Active health, see health.go.
	activeDown atomic.Bool
	checkURL   string
	okRun      int         // consecutive passed checks; touched only by the check round
	failRun    int         // consecutive failed checks; touched only by the check round
	checked    bool        // checked at least once; touched only by the check round
	recheck    atomic.Bool // (re)joined the set: the next round asked for checks it, checked or not
}

// Ejections returns how many times passive health has ejected the target
// since the backend was built (a counter, for metrics).
func (t *Target) Ejections() uint64 { return t.ejectedTotal.Load() }

// URL returns the target's parsed base URL: scheme http, https or h2c, host, and
// an optional base path. The URL is shared: callers must not modify it.
func (t *Target) URL() *url.URL { return t.url }

// String returns the target's URL as a string. It does not allocate.
func (t *Target) String() string { return t.str }

// Weight returns the target's weight, at least 1. Weighted balancers send
// a target a share of requests proportional to its weight.
func (t *Target) Weight() int {
	if w := t.weight.Load(); w > 1 {
		return int(w)
	}
	return 1
}

// InFlight returns the number of requests outstanding on the target.
func (t *Target) InFlight() int { return int(t.inflight.Load()) }

// Healthy reports whether the target is eligible for requests now: it is
// not passively ejected (see [OutlierDetection]) and its active health
// checks, if any, pass (see [HealthCheck]). When too few targets of a
// Backend are healthy, the Backend balances over all of them regardless
// (panic mode, see [OutlierDetection.PanicThreshold]).
func (t *Target) Healthy() bool {
	var now lazyNow
	return t.usable(&now)
}

// SetDrained takes the target out of rotation (true) or puts it back
// (false), by hand, for maintenance: a drained target receives no new
// requests, even in panic mode, while the requests already sent to it
// finish. Health checks go on, so Healthy still says whether it could
// serve. When every target of a Backend is drained, draining is ignored
// and the Backend balances over all of them, as it does when none is
// healthy: refusing all traffic is what readiness is for.
func (t *Target) SetDrained(drained bool) { t.drained.Store(drained) }

// Drained reports whether the target was drained with SetDrained.
func (t *Target) Drained() bool { return t.drained.Load() }

// lazyNow reads the pool's clock at most once per pick, and only when some
// target is ejected.
type lazyNow struct {
	ns int64
	ok bool
}

func (n *lazyNow) get(t *Target) int64 {
	if !n.ok {
		if t.pool != nil {
			n.ns = t.pool.now().UnixNano()
		} else {
			n.ns = time.Now().UnixNano()
		}
		n.ok = true
	}
	return n.ns
}

// usable reports whether t is active-healthy and not ejected at now. An
// ejection found to have expired ends here (lazily, without timers).
func (t *Target) usable(now *lazyNow) bool {
	return !t.activeDown.Load() && !t.ejected(now)
}

// ejected reports whether t is passively ejected at now, ending an
// ejection that has expired.
func (t *Target) ejected(now *lazyNow) bool {
	until := t.ejectedUntil.Load()
	if until == 0 {
		return false
	}
	if now.get(t) < until {
		return true
	}
	if t.ejectedUntil.CompareAndSwap(until, 0) {
		t.startRamp(now.get(t))
		t.logReturned()
	}
	return false
}

// Balancer chooses the target of a request among the eligible targets of a
// Backend. Pick is called concurrently from many goroutines; targets is
// never empty, and Pick must neither retain nor modify it. Pick must return
// one of targets.
type Balancer interface {
	Pick(r *http.Request, targets []*Target) *Target
}

// RoundRobin returns a Balancer that cycles through the targets in order,
// ignoring weights. It is the default. It does not allocate.
func RoundRobin() Balancer { return new(roundRobin) }

type roundRobin struct{ n atomic.Uint64 }

func (b *roundRobin) Pick(_ *http.Request, targets []*Target) *Target {
	return targets[(b.n.Add(1)-1)%uint64(len(targets))]
}

// WeightedRoundRobin returns a Balancer that sends each target a share of
// requests proportional to its [Target.EffectiveWeight] (its
// [Target.Weight] unless [SlowStart] ramps it), spread smoothly (nginx's
// smooth weighted round robin: weights 5, 1, 1 give a a b a c a a, not
// a a a a a b c).
func WeightedRoundRobin() Balancer {
	return &weightedRR{cur: make(map[*Target]*int)}
}

// maxWRRState bounds the per-target state a WeightedRoundRobin keeps; only
// a balancer shared by very many targets, or a Backend whose targets churn
// through SetTargets, ever reaches it (and then starts afresh).
const maxWRRState = 4096

type weightedRR struct {
	mu  sync.Mutex
	cur map[*Target]*int // current weight of each target seen
}

func (b *weightedRR) Pick(_ *http.Request, targets []*Target) *Target {
	if len(targets) == 1 {
		return targets[0]
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	total := 0
	var best *Target
	var bestCur *int
	for _, t := range targets {
		c := b.cur[t]
		if c == nil {
			if len(b.cur) >= maxWRRState {
				clear(b.cur)
			}
			c = new(int)
			b.cur[t] = c
		}
		w := int(t.effWeight())
		*c += w
		total += w
		if bestCur == nil || *c > *bestCur {
			best, bestCur = t, c
		}
	}
	*bestCur -= total
	return best
}

// LeastRequests returns a Balancer that sends each request to the target
// with the fewest outstanding requests ([Target.InFlight]) per unit of
// weight ([Target.EffectiveWeight], which is [Target.Weight] unless
// [SlowStart] ramps it). With equal weights the comparison is exact, and
// ties are broken round robin, so idle targets share the load. With
// unequal weights each target's load counts a random part of the request
// about to be sent (an exponential draw, see [weightedRace]), so that at
// low concurrency, with nothing in flight, targets get shares proportional
// to their weights as with [WeightedRoundRobin] (and a ramping target's
// share grows over its window), while under load the outstanding requests
// settle in proportion to the weights. It does not allocate.
func LeastRequests() Balancer { return new(leastRequests) }

type leastRequests struct{ n atomic.Uint64 }

func (b *leastRequests) Pick(_ *http.Request, targets []*Target) *Target {
	n := len(targets)
	start := int((b.n.Add(1) - 1) % uint64(n))
	best := targets[start]
	bestW, bestIn := best.effWeight(), best.inflight.Load()
	equal := true
	for i := 1; i < n; i++ {
		j := start + i
		if j >= n {
			j -= n
		}
		t := targets[j]
		w, in := t.effWeight(), t.inflight.Load()
		equal = equal && w == bestW
		if (in+1)*bestW < (bestIn+1)*w {
			best, bestW, bestIn = t, w, in
		}
	}
	if equal {
		return best
	}
	best, bestKey := targets[0], weightedRace(targets[0])
	for _, t := range targets[1:] {
		if k := weightedRace(t); k < bestKey {
			best, bestKey = t, k
		}
	}
	return best
}

// weightedRace is t's load per unit of weight, counting the request about
// to be sent as an exponential draw of mean 1 rather than as 1:
// (InFlight + Exp(1)) / EffectiveWeight. The least of these keys wins.
// With nothing in flight this is an exponential race, which target i wins
// with probability w_i / Σw exactly: shares follow the weights even when
// requests come one at a time. With many in flight the draw matters less
// and less, and the outstanding requests settle in proportion to the
// weights, as with an exact comparison.
func weightedRace(t *Target) float64 {
	return (float64(t.inflight.Load()) + rand.ExpFloat64()) / float64(t.effWeight())
}

// PowerOfTwoChoices returns a Balancer that draws two distinct targets at
// random and picks the one with fewer outstanding requests
// ([Target.InFlight]) per unit of weight ([Target.EffectiveWeight], which
// is [Target.Weight] unless [SlowStart] ramps it). It spreads load nearly
// as well as [LeastRequests] without scanning every target. With equal
// weights the comparison is exact, so it never sends to the most loaded
// of three or more; with unequal weights it compares as LeastRequests
// does, so that with nothing in flight the heavier of the two gets its
// weight's share of their requests, not all of them (with two targets,
// shares follow the weights exactly; with more, roughly), and a ramping
// target's share grows over its window. It does not allocate.
func PowerOfTwoChoices() Balancer { return p2c{} }

type p2c struct{}

func (p2c) Pick(_ *http.Request, targets []*Target) *Target {
	n := len(targets)
	if n == 1 {
		return targets[0]
	}
	i := rand.IntN(n)
	j := rand.IntN(n - 1)
	if j >= i {
		j++
	}
	a, b := targets[i], targets[j]
	if wa, wb := a.effWeight(), b.effWeight(); wa != wb {
		if weightedRace(b) < weightedRace(a) {
			return b
		}
		return a
	} else if b.inflight.Load() < a.inflight.Load() {
		return b
	}
	return a
}

// ConsistentHash returns a Balancer that sends requests with the same key
// to the same target while the set of eligible targets is unchanged, for
// session affinity or cache locality. It uses weighted rendezvous (highest
// random weight) hashing: when a target leaves the set (ejected, unhealthy
// or already tried), only the keys it served move, spread over the others,
// and they come back when it returns. A request whose key is empty is
// balanced round robin.
//
// key is typically [HashHeader], [HashCookie] or [HashClientIP]. Pick does
// not allocate beyond what key does.
func ConsistentHash(key func(*http.Request) string) Balancer {
	return &consistentHash{key: key}
}

type consistentHash struct {
	key func(*http.Request) string
	rr  roundRobin
}

func (b *consistentHash) Pick(r *http.Request, targets []*Target) *Target {
	k := ""
	if b.key != nil && r != nil {
		k = b.key(r)
	}
	if k == "" {
		return b.rr.Pick(r, targets)
	}
	if len(targets) == 1 {
		return targets[0]
	}
	kh := hashString(k)
	w := targets[0].Weight()
	for _, t := range targets[1:] {
		if t.Weight() != w {
			return weightedRendezvous(kh, targets)
		}
	}
	// Equal weights: the highest hash wins (the same order as the
	// weighted score, without a logarithm per target).
	best, bestHash := targets[0], mix64(kh^targets[0].hash)
	for _, t := range targets[1:] {
		if h := mix64(kh ^ t.hash); h > bestHash {
			best, bestHash = t, h
		}
	}
	return best
}

func weightedRendezvous(kh uint64, targets []*Target) *Target {
	best, bestScore := targets[0], -1.0
	for _, t := range targets {
		if s := rendezvousScore(kh, t); s > bestScore {
			best, bestScore = t, s
		}
	}
	return best
}

// rendezvousScore is the weighted rendezvous score of target t for a key
// hash: w / -ln(u) with u uniform in (0, 1) drawn from the key and the
// target (Schindelhauer and Schomaker's logarithmic method). With equal
// weights it orders targets as the hash itself does.
func rendezvousScore(kh uint64, t *Target) float64 {
	h := mix64(kh ^ t.hash)
	u := (float64(h>>11) + 0.5) / (1 << 53)
	return float64(t.Weight()) / -math.Log(u)
}

// hashString is 64-bit FNV-1a, inlined so that it does not allocate.
func hashString(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// mix64 is the MurmurHash3 finalizer: every input bit affects every output
// bit.
func mix64(h uint64) uint64 {
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

// HashHeader returns a [ConsistentHash] key function that reads the first
// value of the request header name. A request without the header has an
// empty key (and is balanced round robin).
func HashHeader(name string) func(*http.Request) string {
	canon := http.CanonicalHeaderKey(name)
	return func(r *http.Request) string {
		if v := r.Header[canon]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
}

// HashCookie returns a [ConsistentHash] key function that reads the value
// of the request cookie name. A request without the cookie has an empty key
// (and is balanced round robin). Unlike [http.Request.Cookie] it does not
// allocate.
func HashCookie(name string) func(*http.Request) string {
	return func(r *http.Request) string {
		if name == "" {
			return ""
		}
		for _, line := range r.Header["Cookie"] {
			for line != "" {
				var part string
				part, line, _ = strings.Cut(line, ";")
				k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
				if !ok || k != name {
					continue
				}
				if len(v) > 1 && v[0] == '"' && v[len(v)-1] == '"' {
					v = v[1 : len(v)-1]
				}
				return v
			}
		}
		return ""
	}
}

// HashClientIP returns a [ConsistentHash] key function that reads the
// client's IP address: the ClientIP of the request's [RequestInfo] when it
// is valid (the Gateway decides it from Options.Trust),
// else the host of the connection's RemoteAddr. Addresses are parsed with
// [net.SplitHostPort] and [netip], so every IPv6 client has a key of its
// own, and an IPv4-mapped IPv6 address has the key of its IPv4 address. A
// request with no parseable address has an empty key (and is balanced round
// robin). In the common case (no forwarding) it does not allocate.
func HashClientIP() func(*http.Request) string { return clientIPKey }

func clientIPKey(r *http.Request) string {
	var host string
	var peer netip.Addr
	if h, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		if a, err := netip.ParseAddr(h); err == nil {
			host, peer = h, a
		}
	}
	if info := Info(r.Context()); info != nil && info.ClientIP.IsValid() {
		ip := info.ClientIP.Unmap()
		if peer.IsValid() && !peer.Is4In6() && ip == peer {
			return host // same address: reuse the string, no allocation
		}
		return ip.String()
	}
	if !peer.IsValid() {
		return ""
	}
	if peer.Is4In6() {
		return peer.Unmap().String()
	}
	return host
}

// outcome is what one upstream attempt says about its target, for passive
// health accounting.
type outcome int

const (
	// outcomeSuccess: the target answered (any status but 502/503/504).
	outcomeSuccess outcome = iota
	// outcomeFailure: connect error, reset, 502/503/504, upstream timeout.
	outcomeFailure
	// outcomeNeutral: client canceled, 4xx, anything that says nothing
	// about the target.
	outcomeNeutral
)

// poolConfig configures a pool: the targets of one Backend and their health.
type poolConfig struct {
	Backend   string            // backend name, for error messages and logs
	Targets   []string          // target base URLs; empty = none until update
	Weights   []int             // nil = all 1; else same length as Targets, each >= 1
	Balancer  Balancer          // nil = RoundRobin()
	Outlier   OutlierDetection  // passive health
	Health    HealthCheck       // active health; empty Path disables
	Transport http.RoundTripper // used by active checks; nil = http.DefaultTransport
	Logger    *slog.Logger      // nil = discard; ejections and returns are logged once each
	Now       func() time.Time  // nil = time.Now; injected in tests
	OnDrained func(*Target)     // called once a removed target's last attempt ends; nil = nothing
	Forget    func(*Target)     // called when a removed target is forgotten; nil = nothing
}

// pool is the set of targets of one Backend: it picks a target for each
// attempt and keeps their health.
type pool struct {
	name   string
	set    atomic.Pointer[targetSet] // the current targets, replaced whole by update
	bal    Balancer
	now    func() time.Time
	logger *slog.Logger
	bufs   sync.Pool        // *[]*Target scratch slices for picks over a subset
	slow   *slowStartConfig // nil without SlowStart

	// Target set updates, see targets.go.
	mu        sync.Mutex         // serializes updates; guards retired
	retired   map[string]*Target // removed targets remembered by URL, bounded
	onDrained func(*Target)      // a removed target's last attempt ended; nil = nothing
	forget    func(*Target)      // a retired target is forgotten; nil = nothing

	// Passive health, normalized from OutlierDetection.
	maxFailures  int32 // <= 0 disables ejection
	baseEjection time.Duration
	maxEjection  time.Duration
	maxMult      int // ejection multiplier cap: ceil(maxEjection / baseEjection)
	panicPct     int // 0..100

	// Active health; nil channels when disabled.
	hc        HealthCheck // normalized
	client    *http.Client
	cancel    context.CancelFunc // ends the check goroutine
	done      chan struct{}      // closed when it has ended
	checkReq  chan chan struct{} // test hook: run a round now, close the reply when done
	kick      chan struct{}      // buffered 1: new targets want a round now
	closeOnce sync.Once
}

// newPool validates cfg and builds its pool. It starts the active health
// check goroutine when cfg.Health.Path is set; close stops it.
func newPool(cfg poolConfig) (*pool, error) {
	name := cfg.Backend
	if cfg.Weights != nil && len(cfg.Weights) != len(cfg.Targets) {
		return nil, fmt.Errorf("pylon: backend %q: %d weights for %d targets", name, len(cfg.Weights), len(cfg.Targets))
	}
	p := &pool{
		name:   name,
		bal:    cfg.Balancer,
		now:    cfg.Now,
		logger: cfg.Logger,
	}
	if p.bal == nil {
		p.bal = RoundRobin()
	}
	if ss, ok := p.bal.(*slowStart); ok {
		c, err := ss.opts.config()
		if err != nil {
			return nil, fmt.Errorf("pylon: backend %q: %w", name, err)
		}
		_, c.randomPick = ss.inner.(*roundRobin)
		p.slow = c
	}
	if p.now == nil {
		p.now = time.Now
	}
	if p.logger == nil {
		p.logger = slog.New(slog.DiscardHandler)
	}
	if err := p.setOutlier(cfg.Outlier); err != nil {
		return nil, fmt.Errorf("pylon: backend %q: %w", name, err)
	}
	hc, err := normalizeHealthCheck(cfg.Health)
	if err != nil {
		return nil, fmt.Errorf("pylon: backend %q: %w", name, err)
	}
	p.hc = hc

	p.onDrained, p.forget = cfg.OnDrained, cfg.Forget
	for i, w := range cfg.Weights {
		if w < 1 {
			return nil, fmt.Errorf("pylon: backend %q: target %q: weight %d, want at least 1", name, cfg.Targets[i], w)
		}
	}
	if err := p.update(endpoints(cfg.Targets, cfg.Weights)); err != nil {
		return nil, err
	}
	p.bufs.New = func() any {
		s := make([]*Target, 0, len(p.set.Load().all))
		return &s
	}
	if hc.Path != "" {
		p.startChecks(cfg.Transport)
	}
	return p, nil
}

// parseTargetURL parses and checks a target base URL.
func parseTargetURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("invalid URL: %w", err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https" && u.Scheme != SchemeH2C:
		return nil, errors.New("scheme must be http, https or h2c")
	case u.Opaque != "":
		return nil, errors.New("not an absolute http(s) URL")
	case u.User != nil:
		return nil, errors.New("user info is not allowed")
	case u.Hostname() == "":
		return nil, errors.New("missing host")
	case u.RawQuery != "" || u.ForceQuery:
		return nil, errors.New("query is not allowed")
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return nil, errors.New("fragment is not allowed")
	}
	return u, nil
}

// targets returns the pool's current targets, in the order last set.
// Callers must not modify the slice.
func (p *pool) targets() []*Target { return p.set.Load().all }

// pick chooses the target of the next attempt. It prefers healthy targets
// not in tried; if every healthy target was tried, it picks among the
// healthy ones again. When fewer than PanicThreshold percent of the targets
// are healthy (or none is), it balances over all targets (panic mode),
// still preferring untried ones. With several priority tiers it picks in
// the first tier that has a healthy untried target and is not in panic,
// else over all targets as above. Drained targets are never candidates
// unless every target is drained. It returns nil only when the set is
// empty, and it does not allocate when every target is healthy and tried
// is empty.
func (p *pool) pick(r *http.Request, tried []*Target) *Target {
	var now lazyNow
	s := p.set.Load()
	if len(s.all) == 0 {
		return nil
	}
	for _, tier := range s.tiers {
		if p.tierServes(tier, tried, &now) {
			return p.pickIn(r, tier, tried, &now)
		}
	}
	return p.pickIn(r, s.all, tried, &now)
}

// tierServes reports whether a priority tier takes the attempt: it has a
// healthy target not yet tried, and is not in panic. Drained targets count
// neither as healthy nor in the tier's size, as in pickIn: draining part
// of a tier does not push its traffic to the next one.
func (p *pool) tierServes(tier, tried []*Target, now *lazyNow) bool {
	healthy, live, fresh := 0, 0, false
	for _, t := range tier {
		if t.drained.Load() {
			continue
		}
		live++
		if t.usable(now) {
			healthy++
			fresh = fresh || !containsTarget(tried, t)
		}
	}
	return fresh && healthy*100 >= p.panicPct*live
}

// pickIn is pick over the targets all (a tier, or the whole set).
func (p *pool) pickIn(r *http.Request, all, tried []*Target, now *lazyNow) *Target {
	healthy, live := 0, 0 // live: not drained
	for _, t := range all {
		if !t.drained.Load() {
			live++
			if t.usable(now) {
				healthy++
			}
		}
	}
	if healthy == len(all) && len(tried) == 0 {
		return p.choose(r, all)
	}
	panicMode := healthy == 0 || healthy*100 < p.panicPct*live
	bufp := p.bufs.Get().(*[]*Target)
	cands := (*bufp)[:0]
	for _, t := range all {
		if (panicMode || t.usable(now)) && !t.drained.Load() && !containsTarget(tried, t) {
			cands = append(cands, t)
		}
	}
	if len(cands) == 0 { // every eligible target was tried: try them again
		for _, t := range all {
			if (panicMode || t.usable(now)) && !t.drained.Load() {
				cands = append(cands, t)
			}
		}
	}
	if len(cands) == 0 { // every target drained, or health changed under us since the count
		cands = append(cands, all...)
	}
	t := p.choose(r, cands)
	clear(cands)
	*bufp = cands[:0]
	p.bufs.Put(bufp)
	return t
}

func (p *pool) choose(r *http.Request, cands []*Target) *Target {
	if len(cands) == 1 {
		return cands[0]
	}
	if t := p.bal.Pick(r, cands); t != nil {
		return t
	}
	return cands[0] // a custom Balancer that broke its contract
}

func containsTarget(ts []*Target, t *Target) bool {
	for _, x := range ts {
		if x == t {
			return true
		}
	}
	return false
}

// finish records that the request sent to t (counted by acquire) is done,
// with what its outcome says about t (passive health accounting, see
// health.go).
func (p *pool) finish(t *Target, o outcome) {
	p.observe(t, o)
	p.release(t)
}
