package observe

import (
	"strings"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/breaker"
)

// BreakerSource is a circuit breaker whose state can be watched: a
// *breaker.Breaker, *breaker.BackendGuard or *breaker.TargetGuard.
type BreakerSource interface {
	WatchState(breaker.StateFunc)
}

// WatchBreaker records the state of b's breakers, with no
// Settings.OnStateChange to write: pylon_breaker_state is set at once (1
// for "closed" on a breaker that never tripped, 0 for the other states),
// and pylon_breaker_transitions_total created at zero for every pair of
// states, then both follow each change of state. A TargetGuard's breakers
// are per target and made on a target's first attempt, so their series
// appear then, closed, and are deleted when the guard forgets the target
// (ForgetTarget: the Backend calls it once a removed target falls out of
// its set of recently removed ones). Call it once per breaker or guard; do not also call
// BreakerStateChange from Settings.OnStateChange for it.
func (m *Metrics) WatchBreaker(b BreakerSource) {
	if f, ok := b.(interface{ WatchForget(func(string)) }); ok {
		f.WatchForget(m.breakerGone) // a TargetGuard: its targets come and go
	}
	b.WatchState(func(name string, from, to breaker.State) {
		if from == to {
			m.breakerSeen(name, to.String())
			return
		}
		m.BreakerStateChange(name, from.String(), to.String())
	})
}

// breakerGone deletes the series of a breaker whose target left its
// Backend, so that a gone target's "open" does not report for ever and
// target churn does not grow the series without bound.
func (m *Metrics) breakerGone(name string) {
	m.brMu.Lock()
	defer m.brMu.Unlock()
	states := append(breakerStates[:], LabelOther)
	for _, s := range states {
		m.brState.delete(name, s)
		for _, to := range states {
			if s != to {
				m.brTrans.delete(name, s, to)
			}
		}
	}
}

// breakerSeen sets the state series of a breaker first seen in state, and
// creates its transition series at zero.
func (m *Metrics) breakerSeen(name, state string) {
	state = breakerState(state)
	m.brMu.Lock()
	defer m.brMu.Unlock()
	for _, from := range breakerStates {
		for _, to := range breakerStates {
			if from != to {
				m.brTrans.with(name, from, to).Add(0)
			}
		}
	}
	m.setBreakerState(name, state)
}

// WatchGateway creates at zero the series of gw's routes that can be known
// before any request, so that queries and alerts on them have data from
// start: pylon_gateway_duration_seconds of each route, and for a route to a
// backend pylon_upstream_duration_seconds and pylon_upstream_retries_total;
// it also watches the backends routes send requests to (WatchBackends).
// Call it once the routes are declared. Series of status codes, rate-limit
// decisions, cache results and aggregation calls appear with their first
// request.
func (m *Metrics) WatchGateway(gw *pylon.Gateway) {
	for _, rt := range gw.Routes() {
		backend, _ := strings.CutPrefix(rt.Target, "backend ")
		if backend == rt.Target {
			backend = ""
		}
		m.routes.get(routeKey{route: rt.Name})
		if backend != "" {
			m.routes.get(routeKey{route: rt.Name, other: backend})
		}
	}
	m.WatchBackends(gw.Backends()...)
}
