package observe

// breakerStates is the fixed set of circuit breaker states (gobreaker's
// State.String values).
var breakerStates = [...]string{"closed", "half-open", "open"}

func breakerState(s string) string {
	for _, k := range breakerStates {
		if s == k {
			return k
		}
	}
	return LabelOther
}

// BreakerStateChange records a circuit breaker's change of state: it counts
// the transition in pylon_breaker_transitions_total and sets
// pylon_breaker_state to 1 for the new state and 0 for the others. States
// are "closed", "half-open" and "open" (any other is recorded as "other").
// A breaker of package breaker needs no BreakerStateChange: see
// [Metrics.WatchBreaker]. BreakerStateChange is for breakers of other
// kinds.
//
// name must come from configuration (a breaker's name, which for a
// per-target breaker includes the target URL).
func (m *Metrics) BreakerStateChange(name, from, to string) {
	from, to = breakerState(from), breakerState(to)
	m.brMu.Lock()
	defer m.brMu.Unlock()
	m.brTrans.with(name, from, to).Inc()
	m.setBreakerState(name, to)
}

// setBreakerState sets pylon_breaker_state to 1 for state and 0 for the
// others. brMu must be held.
func (m *Metrics) setBreakerState(name, to string) {
	for _, s := range breakerStates {
		v := 0.0
		if s == to {
			v = 1
		}
		m.brState.set(v, name, s)
	}
	if to == LabelOther {
		m.brState.set(1, name, LabelOther)
	} else {
		m.brState.delete(name, LabelOther)
	}
}

// AggregateCall counts one call of an aggregation in
// pylon_aggregate_calls_total by route, call key and outcome. All three
// must come from configuration or a fixed set: the route's name, the call's
// key ("order", "payment"), and an outcome such as "ok", "error",
// "timeout" or "skipped". Package aggregate's calls need no AggregateCall:
// Middleware counts them from RequestInfo.Calls; AggregateCall is for
// aggregations of other kinds.
func (m *Metrics) AggregateCall(route, call, outcome string) {
	if route == "" {
		route = RouteUnmatched
	}
	m.aggCalls.with(route, call, outcome).Inc()
}
