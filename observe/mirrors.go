package observe

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/pylon-gateway/pylon/traffic"
)

// WatchMirror adds mirror to the mirrors reported at each scrape, as
// pylon_mirror_requests_total by mirror name and result: "mirrored"
// (shadow requests sent), "dropped" (not sent: MaxConcurrent shadow
// requests were in flight), "too_large" (not sent: the body was over
// MaxBodyBytes) and "incomplete" (not sent: the primary did not read the
// body whole), read from [traffic.Mirror.Stats] when the registry is
// scraped, so nothing is recorded on the request path. name must come from
// configuration; watching a second mirror under a name replaces the first.
func (m *Metrics) WatchMirror(name string, mirror *traffic.Mirror) {
	if mirror == nil {
		return
	}
	m.mirrors.mu.Lock()
	defer m.mirrors.mu.Unlock()
	for i, w := range m.mirrors.watched {
		if w.name == name {
			m.mirrors.watched[i].mirror = mirror
			return
		}
	}
	m.mirrors.watched = append(m.mirrors.watched, watchedMirror{name, mirror})
}

type watchedMirror struct {
	name   string
	mirror *traffic.Mirror
}

type mirrorCollector struct {
	requests *prometheus.Desc

	mu      sync.Mutex
	watched []watchedMirror
}

func newMirrorCollector(cl prometheus.Labels) *mirrorCollector {
	return &mirrorCollector{requests: prometheus.NewDesc("pylon_mirror_requests_total",
		"Sampled requests of each traffic mirror by result: mirrored, dropped (shadow saturated), too_large (body over the limit) or incomplete (body not read whole by the primary).",
		[]string{"mirror", "result"}, cl)}
}

// Describe implements prometheus.Collector.
func (c *mirrorCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.requests }

// Collect implements prometheus.Collector.
func (c *mirrorCollector) Collect(ch chan<- prometheus.Metric) {
	c.each(func(name, result string, n uint64) {
		ch <- prometheus.MustNewConstMetric(c.requests, prometheus.CounterValue, float64(n), name, result)
	})
}

// each calls f with each watched mirror's count of each result.
func (c *mirrorCollector) each(f func(name, result string, n uint64)) {
	c.mu.Lock()
	ws := c.watched[:len(c.watched):len(c.watched)]
	c.mu.Unlock()
	for _, w := range ws {
		s := w.mirror.Stats()
		f(w.name, "mirrored", s.Mirrored)
		f(w.name, "dropped", s.Dropped)
		f(w.name, "too_large", s.TooLarge)
		f(w.name, "incomplete", s.Incomplete)
	}
}
