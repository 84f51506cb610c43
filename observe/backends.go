package observe

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/pylon-gateway/pylon"
)

// WatchBackends adds backends to the targets reported at each scrape:
// pylon_target_healthy (1 when the target takes requests, 0 when passive or
// active health has taken it out), pylon_target_ejections_total and
// pylon_target_in_flight_requests, each by backend and target. Values are
// read from the targets when the registry is scraped, so nothing is
// recorded on the request path. A backend given twice is reported once.
//
// The series follow a watched backend's target set as Backend.SetTargets
// changes it: a removed target's series are no longer reported, and at each
// scrape its pylon_upstream_attempts_total series (see Transport) are
// deleted, so that targets churning through discovery do not grow the
// number of series without bound.
func (m *Metrics) WatchBackends(backends ...*pylon.Backend) {
	m.targets.add(backends)
}

type targetCollector struct {
	healthy, ejections, inflight *prometheus.Desc
	prune                        func(backend string, current map[string]bool)

	mu       sync.Mutex
	backends []*pylon.Backend
}

func newTargetCollector(cl prometheus.Labels) *targetCollector {
	labels := []string{"backend", "target"}
	return &targetCollector{
		healthy: prometheus.NewDesc("pylon_target_healthy",
			"1 when the upstream target is eligible for requests, 0 when health checks or outlier detection took it out.", labels, cl),
		ejections: prometheus.NewDesc("pylon_target_ejections_total",
			"Times outlier detection ejected the upstream target.", labels, cl),
		inflight: prometheus.NewDesc("pylon_target_in_flight_requests",
			"Requests outstanding on the upstream target.", labels, cl),
	}
}

func (c *targetCollector) add(bs []*pylon.Backend) {
	c.mu.Lock()
	defer c.mu.Unlock()
outer:
	for _, b := range bs {
		if b == nil {
			continue
		}
		for _, o := range c.backends {
			if o == b {
				continue outer
			}
		}
		c.backends = append(c.backends, b)
	}
}

// Describe implements prometheus.Collector.
func (c *targetCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.healthy
	ch <- c.ejections
	ch <- c.inflight
}

// Collect implements prometheus.Collector.
func (c *targetCollector) Collect(ch chan<- prometheus.Metric) {
	c.each(func(backend, target string, healthy bool, ejections uint64, inflight int) {
		h := 0.0
		if healthy {
			h = 1
		}
		ch <- prometheus.MustNewConstMetric(c.healthy, prometheus.GaugeValue, h, backend, target)
		ch <- prometheus.MustNewConstMetric(c.ejections, prometheus.CounterValue, float64(ejections), backend, target)
		ch <- prometheus.MustNewConstMetric(c.inflight, prometheus.GaugeValue, float64(inflight), backend, target)
	})
}

// each calls f for every target of the watched backends, after pruning the
// attempt series of targets that are gone.
func (c *targetCollector) each(f func(backend, target string, healthy bool, ejections uint64, inflight int)) {
	c.mu.Lock()
	bs := c.backends[:len(c.backends):len(c.backends)]
	c.mu.Unlock()
	for _, b := range bs {
		ts := b.Targets()
		if c.prune != nil {
			current := make(map[string]bool, len(ts))
			for _, t := range ts {
				current[t.String()] = true
			}
			c.prune(b.Name(), current)
		}
		for _, t := range ts {
			f(b.Name(), t.String(), t.Healthy(), t.Ejections(), t.InFlight())
		}
	}
}

// pruneAttempts deletes the attempt series of backend's targets that are
// not in current, and their cache entries.
func (m *Metrics) pruneAttempts(backend string, current map[string]bool) {
	c := &m.attemptC
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.m.Load()
	if old == nil {
		return
	}
	var gone []attemptKey
	for k := range *old {
		if k.backend == backend && !current[k.target] {
			gone = append(gone, k)
		}
	}
	if len(gone) == 0 {
		return
	}
	nm := make(map[attemptKey]counter, len(*old)-len(gone))
	for k, v := range *old {
		nm[k] = v
	}
	for _, k := range gone {
		delete(nm, k)
		m.attempts.delete(k.backend, k.target, k.result)
	}
	c.m.Store(&nm)
}
