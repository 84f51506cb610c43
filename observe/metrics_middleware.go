package observe

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/middleware"
)

// Middleware is the middleware that records the request series (see
// [Metrics]). Put it in the Gateway's global chain (gw.Use), so that it
// sees every request, routed or not; it reads the route, backend, attempts,
// upstream time, rate-limit decision, auth failure, cache result and
// aggregation calls (RequestInfo.Calls, written by package aggregate) from
// pylon.RequestInfo once the rest of the chain has answered, so that none
// of these needs a hook of its own.
//
// A request whose client went away is recorded with status 499. A request
// whose handler panicked without writing a header is recorded with status
// 500 (the panic goes on up the chain).
func (m *Metrics) Middleware(next http.Handler) http.Handler {
	return &metricsHandler{m: m, next: next}
}

type metricsHandler struct {
	m    *Metrics
	next http.Handler
}

// reqState is the per-request state the writer hook fills. It is pooled, so
// that the hook closure is made once per state, not once per request.
type reqState struct {
	headerAt time.Time
	hook     func(int, http.Header)
}

var statePool = sync.Pool{New: func() any {
	s := new(reqState)
	s.hook = func(int, http.Header) { s.headerAt = time.Now() }
	return s
}}

func (h *metricsHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m := h.m
	info := pylon.Info(r.Context())
	if info == nil {
		info = &pylon.RequestInfo{Start: time.Now()}
		r = r.WithContext(pylon.NewContext(r.Context(), info))
	} else if info.Start.IsZero() {
		info.Start = time.Now()
	}
	st := statePool.Get().(*reqState)
	st.headerAt = time.Time{}
	ww := middleware.WrapWriterWithOptions(w, middleware.WriterOptions{BeforeWriteHeader: st.hook})
	m.inflight.Add(1)
	completed := false
	defer func() {
		m.inflight.Add(-1)
		m.record(r, info, ww, st.headerAt, completed)
		statePool.Put(st)
	}()
	h.next.ServeHTTP(ww, r)
	completed = true
}

// record observes one finished request.
func (m *Metrics) record(r *http.Request, info *pylon.RequestInfo, ww middleware.ResponseWriter, headerAt time.Time, completed bool) {
	now := time.Now()
	status := ww.Status()
	switch {
	case !completed:
		if !ww.WroteHeader() {
			status = http.StatusInternalServerError
		}
	case info.ClientCanceled || (!ww.WroteHeader() && !ww.Hijacked() && r.Context().Err() == context.Canceled):
		status = pylon.StatusClientClosedRequest
	case ww.Hijacked() && !ww.WroteHeader():
		status = http.StatusSwitchingProtocols
	case status == 0:
		status = http.StatusOK
	}
	route := info.Route
	if route == "" {
		route = RouteUnmatched
	}
	k := seriesKey{route: route, method: method(r.Method), status: status}
	if !m.opts.StatusCodes {
		k.status = status / 100 * 100
	}
	s := m.series.get(k)
	total := now.Sub(info.Start)
	s.duration.Observe(total.Seconds())
	if r.ContentLength >= 0 {
		s.reqSize.Observe(float64(r.ContentLength))
	}
	s.respSize.Observe(float64(ww.BytesWritten()))

	up := info.UpstreamDuration
	gw := total
	if !headerAt.IsZero() {
		gw = headerAt.Sub(info.Start)
	}
	gw -= up
	if gw < 0 {
		gw = 0
	}
	backend := ""
	if info.Attempts > 0 {
		backend = info.Backend
	}
	rs := m.routes.get(routeKey{route: route, other: backend})
	rs.gateway.Observe(gw.Seconds())
	if rs.upstream != nil {
		rs.upstream.Observe(up.Seconds())
		if info.Attempts > 1 {
			rs.retries.Add(float64(info.Attempts - 1))
		}
	}
	if info.GRPCService != "" {
		code := "UNKNOWN" // no status: the call was cut short
		if info.HasGRPCStatus() {
			code = pylon.GRPCCode(info.GRPCStatus).String()
		} else if status == pylon.StatusClientClosedRequest {
			code = "CANCELLED"
		}
		m.rpcC.get(routeKey{route: route, other: code}).Observe(total.Seconds())
	}
	if info.RateLimit.Decided {
		result := "limited"
		if info.RateLimit.Allowed {
			result = "allowed"
		}
		m.rlimitC.get(routeKey{route: route, other: result}).Inc()
	}
	if info.AuthFailure != "" {
		reason := info.AuthFailure
		if !slices.Contains(authReasons, reason) {
			reason = LabelOther
		}
		m.authC.get(routeKey{route: route, other: reason}).Inc()
	}
	if info.Cache != "" {
		result := info.Cache
		if !slices.Contains(cacheResults, result) {
			result = LabelOther
		}
		m.cacheC.get(routeKey{route: route, other: result}).Inc()
	}
	for i := range info.Calls {
		c := &info.Calls[i]
		outcome := c.Outcome
		if !slices.Contains(aggOutcomes, outcome) {
			outcome = LabelOther
		}
		m.aggC.get(attemptKey{backend: route, target: c.Key, result: outcome}).Inc()
	}
	if info.Split != "" {
		m.splitC.get(routeKey{route: route, other: info.Split}).Inc()
	}
}
