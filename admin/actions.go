package admin

import (
	"errors"
	"net/http"
	"slices"
	"strings"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/breaker"
)

// actionResult is what an action answers in JSON.
type actionResult struct {
	Action  string `json:"action"`
	Subject string `json:"subject"`
	Result  string `json:"result"`
	Purged  *int   `json:"purged,omitempty"`
}

// errBadRequest marks a failure that is the request's fault (400).
type errBadRequest string

func (e errBadRequest) Error() string { return string(e) }

// errNotFound marks an unknown backend, target, cache or breaker (404).
type errNotFound string

func (e errNotFound) Error() string { return string(e) }

const maxFormBytes = 8 << 10

func (h *Handler) serveAction(w http.ResponseWriter, r *http.Request) {
	if h.opts.Authorizer == nil {
		pylon.Error(w, r, http.StatusForbidden, "Actions are disabled: the status page was built without an Authorizer.")
		return
	}
	if err := h.csrf.Check(r); err != nil {
		pylon.Error(w, r, http.StatusForbidden, "Cross-origin requests may not run actions.")
		return
	}
	who, err := h.opts.Authorizer(w, r)
	if err != nil {
		h.logger.Warn("admin: action refused", "action", r.PathValue("action"), "remote", r.RemoteAddr, "reason", err.Error())
		refuse(w, r, err)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		pylon.Error(w, r, http.StatusBadRequest, "The form could not be read.")
		return
	}
	action := r.PathValue("action")
	res := actionResult{Action: action, Result: "ok"}
	err = h.run(r, &res)
	if err != nil {
		res.Result = err.Error()
	}
	h.record(who, res)
	h.logger.Info("admin: action", "action", action, "subject", res.Subject, "who", who,
		"remote", r.RemoteAddr, "result", res.Result)
	var bad errBadRequest
	var nf errNotFound
	switch {
	case errors.As(err, &bad):
		pylon.Error(w, r, http.StatusBadRequest, err.Error())
	case errors.As(err, &nf):
		pylon.Error(w, r, http.StatusNotFound, err.Error())
	case err != nil:
		pylon.Error(w, r, http.StatusConflict, err.Error())
	case r.PostForm.Get("return") == "page":
		// Back to the page, from .../api/v1/actions/NAME.
		// Relative, so that it holds wherever the handler is mounted
		// (http.Redirect would resolve it against a stripped path).
		w.Header().Set("Location", "../../../")
		w.WriteHeader(http.StatusSeeOther)
	default:
		writeJSON(w, http.StatusOK, res)
	}
}

// run does the action named in res and fills in its subject.
func (h *Handler) run(r *http.Request, res *actionResult) error {
	f := r.Form
	switch res.Action {
	case "drain", "undrain":
		b, t, err := h.target(f.Get("backend"), f.Get("target"))
		res.Subject = f.Get("backend") + " " + f.Get("target")
		if err != nil {
			return err
		}
		t.SetDrained(res.Action == "drain")
		res.Subject = b.Name() + " " + t.String()
		return nil
	case "readiness":
		fail := f.Get("fail")
		if fail != "true" && fail != "false" {
			return errBadRequest("fail must be true or false")
		}
		h.opts.Gateway.SetDraining(fail == "true")
		res.Subject = "readiness fail=" + fail
		return nil
	case "purge":
		name := f.Get("cache")
		c := h.opts.Caches[name]
		key, prefix := f.Get("key"), f.Get("prefix")
		res.Subject = strings.TrimSpace(name + " " + key + prefix)
		if c == nil {
			return errNotFound("no cache named " + quote(name))
		}
		switch {
		case key != "" && prefix == "":
			if err := c.Purge(r.Context(), key); err != nil {
				return errors.New("purge failed")
			}
			n := 1
			res.Purged = &n
		case prefix != "" && key == "":
			n, err := c.PurgePrefix(r.Context(), prefix)
			if err != nil {
				return errors.New("purge failed")
			}
			res.Purged = &n
		default:
			return errBadRequest("give either key or prefix")
		}
		return nil
	case "reset":
		if name := f.Get("breaker"); name != "" {
			res.Subject = name
			i := slices.IndexFunc(h.opts.Breakers, func(b *breaker.Breaker) bool { return b.Name() == name })
			if i < 0 {
				return errNotFound("no breaker named " + quote(name))
			}
			return resetErr(h.opts.Breakers[i].Reset())
		}
		bname, tname := f.Get("backend"), f.Get("target")
		res.Subject = strings.TrimSpace(bname + " " + tname)
		switch g := h.opts.Guards[bname].(type) {
		case *breaker.BackendGuard:
			return resetErr(g.Reset())
		case *breaker.TargetGuard:
			_, t, err := h.target(bname, tname)
			if err != nil {
				return err
			}
			return resetErr(g.Reset(t))
		}
		return errNotFound("no breaker for backend " + quote(bname))
	}
	return errNotFound("no action named " + quote(res.Action))
}

func resetErr(err error) error {
	if errors.Is(err, breaker.ErrShared) {
		return errors.New("the breaker's state is shared by replicas and is not reset from one")
	}
	return err
}

func (h *Handler) target(backend, target string) (*pylon.Backend, *pylon.Target, error) {
	if backend == "" || target == "" {
		return nil, nil, errBadRequest("give backend and target")
	}
	b := h.backend(backend)
	if b == nil {
		return nil, nil, errNotFound("no backend named " + quote(backend))
	}
	for _, t := range b.Targets() {
		if t.String() == target {
			return b, t, nil
		}
	}
	return nil, nil, errNotFound("backend " + quote(backend) + " has no target " + quote(target))
}

// quote quotes s for a message, cut short.
func quote(s string) string {
	if len(s) > 100 {
		s = s[:100]
	}
	return "\"" + strings.ToValidUTF8(s, "?") + "\""
}

func (h *Handler) record(who string, res actionResult) {
	h.actMu.Lock()
	defer h.actMu.Unlock()
	if len(h.actions) == maxActions {
		h.actions = slices.Delete(h.actions, 0, 1)
	}
	h.actions = append(h.actions, ActionRecord{Time: h.now(), Who: who, Action: res.Action, Subject: res.Subject, Result: res.Result})
}

func (h *Handler) recentActions() []ActionRecord {
	h.actMu.Lock()
	defer h.actMu.Unlock()
	out := slices.Clone(h.actions)
	slices.Reverse(out)
	if out == nil {
		out = []ActionRecord{}
	}
	return out
}
