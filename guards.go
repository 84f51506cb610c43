package pylon

import (
	"context"
	"fmt"
	"net/http"
)

// Guards returns a Guard that asks each of gs in order. A target is allowed
// when all of them allow it; when one refuses, the guards that had already
// allowed the attempt are told it ended with an error that wraps
// context.Canceled (which says nothing about the target), and the refusal
// is returned. The returned done calls every guard's done, the last guard's
// first, each exactly once even when one of them panics. ForgetTarget is
// passed on to the guards that have one.
//
// It is how a Backend takes a circuit breaker and a concurrency limit
// together: Guard: pylon.Guards(limit, breakers). Nil guards are skipped;
// with none left Guards returns nil.
func Guards(gs ...Guard) Guard {
	var list guardList
	for _, g := range gs {
		if g != nil {
			list = append(list, g)
		}
	}
	switch len(list) {
	case 0:
		return nil
	case 1:
		return list[0]
	}
	return list
}

// errGuardUndone is what an earlier guard is told when a later one refused
// the attempt it had allowed.
var errGuardUndone = fmt.Errorf("pylon: attempt refused by a later guard: %w", context.Canceled)

type guardList []Guard

func (l guardList) Allow(r *http.Request, t *Target) (func(int, error), error) {
	dones := make([]func(int, error), 0, len(l))
	for _, g := range l {
		done, err := g.Allow(r, t)
		if err != nil {
			callAll(dones, 0, errGuardUndone)
			return nil, err
		}
		dones = append(dones, done)
	}
	return func(status int, err error) { callAll(dones, status, err) }, nil
}

// callAll calls every non-nil done, the last first, even when one panics.
func callAll(dones []func(int, error), status int, err error) {
	for i := range dones {
		if d := dones[i]; d != nil {
			defer d(status, err)
		}
	}
}

func (l guardList) ForgetTarget(t *Target) {
	for _, g := range l {
		forgetTarget(g, t)
	}
}
