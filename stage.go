package pylon

import (
	"fmt"
	"net/http"
)

// Role is what a middleware does with the request's identity. The Gateway
// reads the roles of every route's whole chain (global, group and route
// middlewares, in order) at configuration time and reports, through Err, an
// order that would be unsafe:
//
//   - a middleware that needs the subject (a rate limit keyed by subject)
//     or answers from stored responses (a cache) running before the
//     authentication that follows it in the same chain: the limit would
//     pool every client, the cache would answer requests that never passed
//     authentication;
//   - a middleware that decides the client's address again (RealIP with
//     trusted proxies of its own) inside a Gateway, which decides it once
//     from Options.Trust.
//
// Pylon's own middlewares declare their roles; a middleware of yours does so
// by returning a handler that implements [StageHandler].
type Role uint8

const (
	// RoleAuthenticate marks a middleware that authenticates the request
	// and records who the client is in RequestInfo (Subject, Auth).
	RoleAuthenticate Role = 1 << iota
	// RoleNeedsSubject marks a middleware that reads RequestInfo.Subject,
	// so it must run after authentication.
	RoleNeedsSubject
	// RoleStoredResponses marks a middleware that may answer a request
	// with a response stored for another, so authentication must run
	// before it.
	RoleStoredResponses
	// RoleClientIdentity marks a middleware that decides the client's
	// address itself, from a trust setting of its own.
	RoleClientIdentity
)

// Stage is how one middleware describes itself to the Gateway.
type Stage struct {
	// Name names the middleware in configuration errors
	// ("ratelimit.BySubject").
	Name string
	// Roles are the middleware's roles.
	Roles Role
}

// StageHandler is implemented by the handler a middleware returns to tell
// the Gateway its Stage.
type StageHandler interface {
	http.Handler
	Stage() Stage
}

// chainStages returns mws[0](mws[1](...(h))) and the stages of the
// handlers each middleware returned, outermost first; a handler that is no
// StageHandler has a zero Stage.
func chainStages(mws []Middleware, h http.Handler) (http.Handler, []Stage) {
	stages := make([]Stage, len(mws))
	for i := len(mws) - 1; i >= 0; i-- {
		h = mws[i](h)
		if s, ok := h.(StageHandler); ok {
			stages[i] = s.Stage()
		}
	}
	return h, stages
}

// checkStages reports the unsafe orders in one route's chain, outermost
// stage first.
func checkStages(route string, stages []Stage) []error {
	var errs []error
	first, last := -1, -1 // the first and last authenticating stages
	for i, s := range stages {
		if s.Roles&RoleAuthenticate != 0 {
			if first < 0 {
				first = i
			}
			last = i
		}
	}
	for i, s := range stages {
		if s.Roles&RoleClientIdentity != 0 {
			errs = append(errs, fmt.Errorf("pylon: route %q: %s decides the client's address a second time; the Gateway decides it once from Options.Trust: move the trusted proxies there", route, s.Name))
		}
		if i < first && s.Roles&RoleNeedsSubject != 0 {
			errs = append(errs, fmt.Errorf("pylon: route %q: %s runs before %s: no request has a subject yet; move it after the authentication", route, s.Name, stages[first].Name))
		}
		if i < last && s.Roles&RoleStoredResponses != 0 {
			errs = append(errs, fmt.Errorf("pylon: route %q: %s runs before %s: it would answer requests that never passed authentication; move it after the authentication", route, s.Name, stages[last].Name))
		}
	}
	return errs
}

// WithStage returns h described as s: a middleware of your own that
// authenticates, or reads the subject, returns its handler through WithStage
// to take part in the Gateway's order checks.
func WithStage(h http.Handler, s Stage) StageHandler {
	return &staged{Handler: h, stage: s}
}

type staged struct {
	http.Handler
	stage Stage
}

func (s *staged) Stage() Stage { return s.stage }
