package observe

import "github.com/prometheus/client_golang/prometheus"

// The decisions of what to record (Middleware, Transport, the Watch
// methods, BreakerStateChange, AggregateCall) are made once, in terms of
// the vectors below; NewMetrics backs them with Prometheus vectors and
// NewOTelMetrics with OpenTelemetry instruments (metrics_otel.go). Label
// values are given in the order of the labels listed on [Metrics].

// observer records a value in one series of a histogram.
// prometheus.Observer satisfies it.
type observer interface{ Observe(float64) }

// counter adds to one series of a counter. prometheus.Counter satisfies it.
type counter interface {
	Inc()
	Add(float64)
}

type histVec interface {
	with(values ...string) observer
}

type counterVec interface {
	with(values ...string) counter
	// delete removes a series where the backend can (Prometheus); an
	// OpenTelemetry counter keeps it.
	delete(values ...string)
}

type gaugeVec interface {
	set(v float64, values ...string)
	delete(values ...string)
}

type promHist struct{ v *prometheus.HistogramVec }

func (p promHist) with(values ...string) observer { return p.v.WithLabelValues(values...) }

type promCounter struct{ v *prometheus.CounterVec }

func (p promCounter) with(values ...string) counter { return p.v.WithLabelValues(values...) }
func (p promCounter) delete(values ...string)       { p.v.DeleteLabelValues(values...) }

type promGauge struct{ v *prometheus.GaugeVec }

func (p promGauge) set(v float64, values ...string) { p.v.WithLabelValues(values...).Set(v) }
func (p promGauge) delete(values ...string)         { p.v.DeleteLabelValues(values...) }
