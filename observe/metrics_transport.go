package observe

import (
	"context"
	"errors"
	"net/http"
	"net/url"

	"github.com/pylon-gateway/pylon"
)

// Transport returns a RoundTripper that counts each upstream attempt made
// through rt in pylon_upstream_attempts_total, by backend, target and
// result: the response's status class ("2xx" ... "5xx"), "error" for a
// transport error, or "canceled" when the request's context was canceled.
//
// Only a Backend's own attempts are counted: the backend and target labels
// are read from the request's pylon.RequestInfo, so they come from
// configuration. Round trips without one (a Backend's active health
// checks, other clients) pass through uncounted. Wire it as the Backend's
// transport:
//
//	opts.Transport = m.Transport(pylon.NewTransport(opts))
//
// Retries are counted without it too, in pylon_upstream_retries_total, from
// RequestInfo.Attempts.
func (m *Metrics) Transport(rt http.RoundTripper) http.RoundTripper {
	if rt == nil {
		rt = http.DefaultTransport
	}
	return &metricsTransport{m: m, rt: rt}
}

type metricsTransport struct {
	m  *Metrics
	rt http.RoundTripper
}

func (t *metricsTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	info := pylon.Info(req.Context())
	if info == nil || info.Backend == "" || info.Target == "" {
		return t.rt.RoundTrip(req)
	}
	backend, target := info.Backend, info.Target
	res, err := t.rt.RoundTrip(req)
	result := "error"
	switch {
	case err == nil:
		result = statusClass(res.StatusCode)
	case errors.Is(err, context.Canceled) || req.Context().Err() == context.Canceled:
		result = "canceled"
	}
	t.m.attemptC.get(attemptKey{backend: backend, target: target, result: result}).Inc()
	return res, err
}

// CloseIdleConnections closes the idle connections of the wrapped
// transport, when it has a CloseIdleConnections method, so that
// Backend.Close reaches them through the wrapper.
func (t *metricsTransport) CloseIdleConnections() {
	if c, ok := t.rt.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// CloseIdleConnectionsTo closes the wrapped transport's idle connections to
// u: only u's when it has a CloseIdleConnectionsTo method, else all of them
// when it has CloseIdleConnections (a Backend calls it for a drained
// target).
func (t *metricsTransport) CloseIdleConnectionsTo(u *url.URL) {
	switch c := t.rt.(type) {
	case interface{ CloseIdleConnectionsTo(*url.URL) }:
		c.CloseIdleConnectionsTo(u)
	case interface{ CloseIdleConnections() }:
		c.CloseIdleConnections()
	}
}
