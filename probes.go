package pylon

import (
	"encoding/json"
	"net/http"
	"slices"
)

// BackendStatus is one backend's line in a readiness answer.
type BackendStatus struct {
	Name     string `json:"name"`
	Healthy  int    `json:"healthy"`
	Targets  int    `json:"targets"`
	Critical bool   `json:"critical,omitempty"`
}

type readiness struct {
	Status   string          `json:"status"`
	Backends []BackendStatus `json:"backends"`
}

// Health returns the gateway's liveness and readiness handlers, to mount
// where the platform probes them:
//
//	live, ready := gw.Health(orders)
//	gw.Handle("GET /healthz", live)
//	gw.Handle("GET /readyz", ready)
//
// Liveness answers 200 while the process serves. Readiness answers 200 with
// each routed backend's healthy and total target counts, and 503 when the
// server is draining (see RunOptions.DrainDelay, [Gateway.SetDraining]) or
// when a critical backend has no healthy target. Both answer JSON and are
// never cached.
func (g *Gateway) Health(critical ...*Backend) (liveness, readiness http.Handler) {
	liveness = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "alive"})
	})
	readiness = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.serveReadiness(w, r, critical)
	})
	return liveness, readiness
}

func (g *Gateway) serveReadiness(w http.ResponseWriter, r *http.Request, critical []*Backend) {
	backends := slices.Clone(g.backends)
	for _, b := range critical {
		if !slices.Contains(backends, b) {
			backends = append(backends, b)
		}
	}
	res := readiness{Status: "ready", Backends: make([]BackendStatus, 0, len(backends))}
	for _, b := range backends {
		st := BackendStatus{Name: b.Name(), Critical: slices.Contains(critical, b)}
		for _, t := range b.Targets() {
			st.Targets++
			if t.Healthy() {
				st.Healthy++
			}
		}
		if st.Critical && st.Healthy == 0 {
			res.Status = "unavailable"
		}
		res.Backends = append(res.Backends, st)
	}
	if tr := trackerFrom(r.Context()); g.unready.Load() || tr != nil && tr.draining.Load() {
		res.Status = "draining"
	}
	code := http.StatusOK
	if res.Status != "ready" {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, res)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	body, _ := json.Marshal(v)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(append(body, '\n'))
}
