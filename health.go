package pylon

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// HealthCheck configures active health checks of a Backend's targets: every
// Interval, each target is sent GET base URL + Path, and a target that fails
// UnhealthyThreshold checks in a row stops receiving requests until it
// passes HealthyThreshold checks in a row. A check passes when the target
// answers 2xx or 3xx (redirects are not followed) within Timeout.
//
// The zero value disables active checks. Targets start healthy; the first
// round of checks runs when the Backend is built.
type HealthCheck struct {
	// Path is the path (and optional query) sent to each target, appended
	// to the target's base URL: "/healthz" on "http://10.0.0.5:8080/api"
	// checks "http://10.0.0.5:8080/api/healthz". It must start with "/".
	// Empty disables active checks.
	Path string
	// Interval is the time between rounds of checks. Zero means 10s.
	Interval time.Duration
	// Timeout bounds each check, response body included. Zero means 2s.
	Timeout time.Duration
	// HealthyThreshold is how many checks in a row a target that is down
	// must pass to receive requests again. Zero means 2.
	HealthyThreshold int
	// UnhealthyThreshold is how many checks in a row a target must fail to
	// stop receiving requests. Zero means 3.
	UnhealthyThreshold int

	// GRPC makes the checks gRPC calls of grpc.health.v1.Health/Check
	// (Path, when empty, is "/grpc.health.v1.Health/Check"): a check
	// passes when the target answers grpc-status OK and the status
	// SERVING. gRPC needs HTTP/2: use h2c:// or https:// targets. False
	// means the HTTP checks described above.
	GRPC bool
	// GRPCService is the service name sent in the HealthCheckRequest.
	// Empty means the server as a whole.
	GRPCService string
}

// OutlierDetection configures passive health checking of a Backend's
// targets, in the manner of Envoy's outlier detection: a target whose
// requests fail ConsecutiveFailures times in a row (connection refused or
// reset, upstream timeout, 502, 503 or 504; a client that goes away or a
// 4xx says nothing about the target and is not counted) is ejected and
// receives no requests for an ejection time. Ejections end lazily, when the
// next request finds the time over; no timer runs per target.
//
// The n-th ejection in a row lasts n × BaseEjectionTime, capped at
// MaxEjectionTime. The multiplier n decays by one for every
// BaseEjectionTime the target spends in service after an ejection ends, so
// a target that keeps failing as soon as it returns stays out longer and
// longer, and one that has served well for a while starts again from
// BaseEjectionTime.
//
// The zero value enables ejection with the defaults below.
type OutlierDetection struct {
	// ConsecutiveFailures is how many failures in a row eject a target;
	// any success resets the count. Zero means 5; negative disables
	// ejection.
	ConsecutiveFailures int
	// BaseEjectionTime is how long a first ejection lasts; the n-th in a
	// row lasts n times as long. Zero means 30s.
	BaseEjectionTime time.Duration
	// MaxEjectionTime caps the ejection time. Zero means 300s, or
	// BaseEjectionTime if that is longer.
	MaxEjectionTime time.Duration
	// PanicThreshold is a percentage: when fewer than this percent of the
	// targets are healthy (neither ejected nor failing active checks), the
	// Backend balances over all targets, healthy or not, rather than
	// overloading the few that are left (Envoy's panic mode). When no
	// target is healthy it always does. Zero means 50; negative means only
	// when no target is healthy. At most 100.
	PanicThreshold int
}

const (
	defaultConsecutiveFailures = 5
	defaultBaseEjection        = 30 * time.Second
	defaultMaxEjection         = 300 * time.Second
	defaultPanicThreshold      = 50

	defaultCheckInterval      = 10 * time.Second
	defaultCheckTimeout       = 2 * time.Second
	defaultHealthyThreshold   = 2
	defaultUnhealthyThreshold = 3

	// maxCheckBody is how much of a check response body is read (to reuse
	// the connection) before it is closed.
	maxCheckBody = 64 << 10
	// healthCheckUserAgent identifies active checks in targets' logs.
	healthCheckUserAgent = "pylon-health-check"
)

// setOutlier validates o and stores it, normalized, in p.
func (p *pool) setOutlier(o OutlierDetection) error {
	switch {
	case o.BaseEjectionTime < 0:
		return fmt.Errorf("OutlierDetection.BaseEjectionTime %v is negative", o.BaseEjectionTime)
	case o.MaxEjectionTime < 0:
		return fmt.Errorf("OutlierDetection.MaxEjectionTime %v is negative", o.MaxEjectionTime)
	case o.PanicThreshold > 100:
		return fmt.Errorf("OutlierDetection.PanicThreshold %d%% is over 100%%", o.PanicThreshold)
	case o.MaxEjectionTime > 0 && o.BaseEjectionTime > o.MaxEjectionTime:
		return fmt.Errorf("OutlierDetection.BaseEjectionTime %v is longer than MaxEjectionTime %v", o.BaseEjectionTime, o.MaxEjectionTime)
	case o.BaseEjectionTime == 0 && o.MaxEjectionTime > 0 && o.MaxEjectionTime < defaultBaseEjection:
		return fmt.Errorf("OutlierDetection.MaxEjectionTime %v is shorter than the default BaseEjectionTime %v", o.MaxEjectionTime, defaultBaseEjection)
	}
	p.maxFailures = int32(min(o.ConsecutiveFailures, 1<<30))
	if o.ConsecutiveFailures == 0 {
		p.maxFailures = defaultConsecutiveFailures
	}
	p.baseEjection = o.BaseEjectionTime
	if p.baseEjection == 0 {
		p.baseEjection = defaultBaseEjection
	}
	p.maxEjection = o.MaxEjectionTime
	if p.maxEjection == 0 {
		p.maxEjection = max(defaultMaxEjection, p.baseEjection)
	}
	p.maxMult = int((p.maxEjection + p.baseEjection - 1) / p.baseEjection)
	switch {
	case o.PanicThreshold == 0:
		p.panicPct = defaultPanicThreshold
	case o.PanicThreshold < 0:
		p.panicPct = 0
	default:
		p.panicPct = o.PanicThreshold
	}
	return nil
}

// observe does the passive health accounting of one finished attempt.
func (p *pool) observe(t *Target, o outcome) {
	if p.maxFailures <= 0 {
		return
	}
	switch o {
	case outcomeSuccess:
		if t.failures.Load() != 0 {
			t.failures.Store(0)
		}
	case outcomeFailure:
		var now lazyNow
		if t.ejected(&now) {
			return // already out; requests sent before the ejection don't extend it
		}
		if t.failures.Add(1) >= p.maxFailures {
			p.eject(t)
		}
	}
}

// eject takes t out of service for its next ejection time.
func (p *pool) eject(t *Target) {
	now := p.now()
	t.mu.Lock()
	if until := t.ejectedUntil.Load(); until != 0 && now.UnixNano() < until {
		t.mu.Unlock()
		return // a concurrent failure ejected it first
	}
	n := t.ejections
	if n > 0 && now.After(t.lastEnd) {
		// Decay: one step per BaseEjectionTime spent in service.
		n -= int(min(now.Sub(t.lastEnd)/p.baseEjection, time.Duration(n)))
	}
	n = min(n+1, p.maxMult)
	d := min(p.baseEjection*time.Duration(n), p.maxEjection)
	end := now.Add(d)
	t.ejections = n
	t.lastEnd = end
	t.failures.Store(0)
	until := end.UnixNano()
	if until == 0 {
		until = 1 // 0 means "not ejected"
	}
	t.ejectedUntil.Store(until)
	t.ejectedTotal.Add(1)
	t.mu.Unlock()
	p.logger.Warn("pylon: target ejected",
		"backend", p.name, "target", t.str,
		"consecutive_failures", p.maxFailures, "ejection", d, "ejections_in_row", n)
}

// logReturned logs that an ejection of t has ended.
func (t *Target) logReturned() {
	if t.pool == nil {
		return
	}
	t.pool.logger.Info("pylon: target returned from ejection",
		"backend", t.pool.name, "target", t.str)
}

// normalizeHealthCheck validates hc and fills in its defaults. A zero Path
// returns the zero HealthCheck (disabled).
func normalizeHealthCheck(hc HealthCheck) (HealthCheck, error) {
	if hc.GRPC && hc.Path == "" {
		hc.Path = grpcHealthPath
	}
	if hc.Path == "" {
		return HealthCheck{}, nil
	}
	switch {
	case !strings.HasPrefix(hc.Path, "/"):
		return hc, fmt.Errorf("HealthCheck.Path %q must start with \"/\"", hc.Path)
	case strings.Contains(hc.Path, "#"):
		return hc, fmt.Errorf("HealthCheck.Path %q has a fragment", hc.Path)
	case hc.Interval < 0:
		return hc, fmt.Errorf("HealthCheck.Interval %v is negative", hc.Interval)
	case hc.Timeout < 0:
		return hc, fmt.Errorf("HealthCheck.Timeout %v is negative", hc.Timeout)
	case hc.HealthyThreshold < 0:
		return hc, fmt.Errorf("HealthCheck.HealthyThreshold %d is negative", hc.HealthyThreshold)
	case hc.UnhealthyThreshold < 0:
		return hc, fmt.Errorf("HealthCheck.UnhealthyThreshold %d is negative", hc.UnhealthyThreshold)
	}
	if hc.Interval == 0 {
		hc.Interval = defaultCheckInterval
	}
	if hc.Timeout == 0 {
		hc.Timeout = defaultCheckTimeout
	}
	if hc.HealthyThreshold == 0 {
		hc.HealthyThreshold = defaultHealthyThreshold
	}
	if hc.UnhealthyThreshold == 0 {
		hc.UnhealthyThreshold = defaultUnhealthyThreshold
	}
	return hc, nil
}

// startChecks starts the active check goroutine.
func (p *pool) startChecks(tr http.RoundTripper) {
	if tr == nil {
		tr = http.DefaultTransport
	}
	p.client = &http.Client{
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse // a 3xx passes; don't follow it elsewhere
		},
	}
	p.done = make(chan struct{})
	p.checkReq = make(chan chan struct{})
	p.kick = make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	go p.checkLoop(ctx)
}

// checkLoop runs a round of checks at once, then one every Interval, until
// the pool is closed.
func (p *pool) checkLoop(ctx context.Context) {
	defer close(p.done)
	p.checkRound(ctx)
	tick := time.NewTicker(p.hc.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			p.checkRound(ctx)
		case reply := <-p.checkReq:
			p.checkRound(ctx)
			close(reply)
		case <-p.kick:
			p.checkTargets(ctx, true)
		}
	}
}

// kickChecks asks the check loop for a round now, for targets just added.
// It never blocks: a round already asked for will check them.
func (p *pool) kickChecks() {
	if p.kick == nil {
		return
	}
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// checkNow runs a round of active checks and returns when it is done (after
// the first round, which starts with the pool). It lets tests drive checks
// without waiting for Interval. It returns at once when checks are disabled
// or the pool is closed.
func (p *pool) checkNow() {
	if p.checkReq == nil {
		return
	}
	reply := make(chan struct{})
	select {
	case p.checkReq <- reply:
		<-reply
	case <-p.done:
	}
}

// checkRound checks every target concurrently and waits for all of them.
func (p *pool) checkRound(ctx context.Context) {
	p.checkTargets(ctx, false)
}

// checkTargets checks the targets concurrently (when newOnly is set, only
// those never checked or that have just rejoined the set) and waits for
// all of them.
func (p *pool) checkTargets(ctx context.Context, newOnly bool) {
	var wg sync.WaitGroup
	for _, t := range p.targets() {
		if newOnly && t.checked && !t.recheck.Load() {
			continue
		}
		t.recheck.Store(false)
		wg.Go(func() { p.checkTarget(ctx, t) })
	}
	wg.Wait()
}

// checkTarget sends one check to t and records its result.
func (p *pool) checkTarget(poolCtx context.Context, t *Target) {
	ctx, cancel := context.WithTimeout(poolCtx, p.hc.Timeout)
	defer cancel()
	reason := ""
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.checkURL, nil)
	if err == nil && p.hc.GRPC {
		req.Header.Set("User-Agent", healthCheckUserAgent)
		reason, err = p.grpcCheck(req) // health_grpc.go
	} else if err == nil {
		req.Header.Set("User-Agent", healthCheckUserAgent)
		var resp *http.Response
		resp, err = p.client.Do(req)
		if err == nil {
			_, err = io.Copy(io.Discard, io.LimitReader(resp.Body, maxCheckBody))
			resp.Body.Close()
			if err == nil && (resp.StatusCode < 200 || resp.StatusCode > 399) {
				reason = resp.Status
			}
		}
	}
	if err != nil {
		if poolCtx.Err() != nil {
			return // the pool is closing: the check says nothing
		}
		reason = err.Error()
	}
	p.recordCheck(t, reason)
}

// recordCheck applies one check result (reason is empty when it passed) to
// t's active health. Only the check round calls it, one goroutine per
// target, so okRun and failRun need no lock.
func (p *pool) recordCheck(t *Target, reason string) {
	t.checked = true
	if reason == "" {
		t.failRun = 0
		t.okRun++
		if t.activeDown.Load() && t.okRun >= p.hc.HealthyThreshold {
			t.activeDown.Store(false)
			t.startRamp(p.now().UnixNano())
			p.logger.Info("pylon: target passed health checks",
				"backend", p.name, "target", t.str, "checks", t.okRun)
		}
		return
	}
	t.okRun = 0
	t.failRun++
	if !t.activeDown.Load() && t.failRun >= p.hc.UnhealthyThreshold {
		t.activeDown.Store(true)
		p.logger.Warn("pylon: target failed health checks",
			"backend", p.name, "target", t.str, "checks", t.failRun, "reason", reason)
	}
}

// close stops the active checks and waits for their goroutine to end. It
// is idempotent and safe to call concurrently. It does not close idle
// connections of the Transport, which belongs to the caller.
func (p *pool) close() {
	p.closeOnce.Do(func() {
		if p.cancel == nil {
			return
		}
		p.cancel()
		<-p.done
	})
}
