package pylon

// TEMPORARY stub of the balance branch's contract; deleted at merge.

import (
	"log/slog"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"
)

type Target struct {
	u        *url.URL
	s        string
	inflight atomic.Int64
}

func (t *Target) URL() *url.URL  { return t.u }
func (t *Target) String() string { return t.s }
func (t *Target) Weight() int    { return 1 }
func (t *Target) InFlight() int  { return int(t.inflight.Load()) }
func (t *Target) Healthy() bool  { return true }

type Balancer interface {
	Pick(r *http.Request, targets []*Target) *Target
}
type HealthCheck struct{ Path string }
type OutlierDetection struct{ ConsecutiveFailures int }
type outcome int

const (
	outcomeSuccess outcome = iota
	outcomeFailure
	outcomeNeutral
)

type poolConfig struct {
	Backend   string
	Targets   []string
	Weights   []int
	Balancer  Balancer
	Outlier   OutlierDetection
	Health    HealthCheck
	Transport http.RoundTripper
	Logger    *slog.Logger
	Now       func() time.Time
}
type pool struct {
	bal Balancer
	ts []*Target
	n  atomic.Uint64
}

func newPool(cfg poolConfig) (*pool, error) {
	p := &pool{bal: cfg.Balancer}
	for _, s := range cfg.Targets {
		u, err := url.Parse(s)
		if err != nil {
			return nil, err
		}
		p.ts = append(p.ts, &Target{u: u, s: s})
	}
	return p, nil
}
func (p *pool) pick(r *http.Request, tried []*Target) *Target {
	if p.bal != nil {
		var c []*Target
		for _, t := range p.ts {
			ok := true
			for _, x := range tried {
				if x == t {
					ok = false
				}
			}
			if ok {
				c = append(c, t)
			}
		}
		if len(c) == 0 {
			c = p.ts
		}
		return p.bal.Pick(r, c)
	}
	for i := 0; i < len(p.ts); i++ {
		t := p.ts[int(p.n.Add(1))%len(p.ts)]
		ok := true
		for _, x := range tried {
			if x == t {
				ok = false
			}
		}
		if ok {
			return t
		}
	}
	return p.ts[int(p.n.Add(1))%len(p.ts)]
}
func (p *pool) start(t *Target)             { t.inflight.Add(1) }
func (p *pool) finish(t *Target, o outcome) { t.inflight.Add(-1) }
func (p *pool) targets() []*Target          { return p.ts }
func (p *pool) close()                      {}
