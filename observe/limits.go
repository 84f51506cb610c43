package observe

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/pylon-gateway/pylon/overload"
)

// LimitSource is a concurrency limit whose counters can be read: an
// *overload.BackendLimit, *overload.AdaptiveLimit or *overload.ClientLimit.
// An *overload.TargetLimit counts per target; watch one target's limit with
// a [LimitFunc] calling its Stats(t).
type LimitSource interface {
	Stats() overload.Stats
}

// LimitFunc adapts a function to a [LimitSource].
type LimitFunc func() overload.Stats

// Stats returns f().
func (f LimitFunc) Stats() overload.Stats { return f() }

// WatchLimit adds l to the limits reported at each scrape, by limit name,
// read from l's Stats when the registry is scraped (or the OpenTelemetry
// reader collects), so nothing is recorded on the request path:
//
//	pylon_limit_in_flight             gauge    requests admitted and not done (for a ClientLimit: keys with requests in flight)
//	pylon_limit_queued                gauge    requests waiting now
//	pylon_limit_limit                 gauge    the current limit (MaxInFlight, or the adaptive estimate)
//	pylon_limit_admitted_total        counter  requests admitted
//	pylon_limit_waited_total          counter  admitted requests that queued first
//	pylon_limit_shed_total            counter  requests refused
//	pylon_limit_critical_shed_total   counter  refused requests that were critical
//
// name must come from configuration; watching a second limit under a name
// replaces the first. A nil l is ignored.
func (m *Metrics) WatchLimit(name string, l LimitSource) {
	if l == nil {
		return
	}
	m.limits.mu.Lock()
	defer m.limits.mu.Unlock()
	for i, w := range m.limits.watched {
		if w.name == name {
			m.limits.watched[i].l = l
			return
		}
	}
	m.limits.watched = append(m.limits.watched, watchedLimit{name, l})
}

type watchedLimit struct {
	name string
	l    LimitSource
}

// limitSeries is one series of a watched limit, read from its Stats.
type limitSeries struct {
	name, otel, help string
	counter          bool
	value            func(overload.Stats) float64
}

// limitSeriesList are the series of every watched limit, in the order
// limitCollector.each reports them, with their Prometheus and
// OpenTelemetry names.
var limitSeriesList = []limitSeries{
	{"pylon_limit_in_flight", "pylon.limit.in_flight", "Requests admitted by the concurrency limit and not yet done (for a per-client limit: keys with requests in flight).", false,
		func(s overload.Stats) float64 { return float64(s.InFlight) }},
	{"pylon_limit_queued", "pylon.limit.queued", "Requests waiting in the concurrency limit's queue.", false,
		func(s overload.Stats) float64 { return float64(s.Queued) }},
	{"pylon_limit_limit", "pylon.limit.limit", "Current concurrency limit (MaxInFlight, or the adaptive estimate).", false,
		func(s overload.Stats) float64 { return float64(s.Limit) }},
	{"pylon_limit_admitted_total", "pylon.limit.admitted", "Requests admitted by the concurrency limit.", true,
		func(s overload.Stats) float64 { return float64(s.Admitted) }},
	{"pylon_limit_waited_total", "pylon.limit.waited", "Requests admitted by the concurrency limit after waiting in its queue.", true,
		func(s overload.Stats) float64 { return float64(s.Waited) }},
	{"pylon_limit_shed_total", "pylon.limit.shed", "Requests refused by the concurrency limit.", true,
		func(s overload.Stats) float64 { return float64(s.Shed) }},
	{"pylon_limit_critical_shed_total", "pylon.limit.critical_shed", "Critical requests refused by the concurrency limit.", true,
		func(s overload.Stats) float64 { return float64(s.CriticalShed) }},
}

type limitCollector struct {
	descs []*prometheus.Desc // by limitSeriesList index

	mu      sync.Mutex
	watched []watchedLimit
}

func newLimitCollector(cl prometheus.Labels) *limitCollector {
	c := &limitCollector{}
	for _, s := range limitSeriesList {
		c.descs = append(c.descs, prometheus.NewDesc(s.name, s.help, []string{"limit"}, cl))
	}
	return c
}

// Describe implements prometheus.Collector.
func (c *limitCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *limitCollector) Collect(ch chan<- prometheus.Metric) {
	c.each(func(name string, i int, v float64) {
		t := prometheus.GaugeValue
		if limitSeriesList[i].counter {
			t = prometheus.CounterValue
		}
		ch <- prometheus.MustNewConstMetric(c.descs[i], t, v, name)
	})
}

// each calls f with each watched limit's value of each series of
// limitSeriesList (by index), reading each limit's Stats once.
func (c *limitCollector) each(f func(name string, series int, v float64)) {
	c.mu.Lock()
	ws := c.watched[:len(c.watched):len(c.watched)]
	c.mu.Unlock()
	for _, w := range ws {
		st := w.l.Stats()
		for i, s := range limitSeriesList {
			f(w.name, i, s.value(st))
		}
	}
}
