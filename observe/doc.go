// Package observe is Pylon's monitoring: Prometheus metrics and
// OpenTelemetry tracing.
package observe
