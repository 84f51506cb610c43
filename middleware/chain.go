package middleware

import "net/http"

// Chain is an immutable, ordered list of middlewares. New(m1, m2).Then(h) is
// m1(m2(h)): the first middleware listed sees the request first.
//
// A Chain is a value: Append and Extend return new chains and never change
// the one they are called on, so a base chain can be shared and extended
// per route.
type Chain struct {
	mws []func(http.Handler) http.Handler
}

// New returns a chain of the given middlewares, in order. A nil middleware
// panics, so a wiring mistake fails at start-up.
func New(mws ...func(http.Handler) http.Handler) Chain {
	for _, m := range mws {
		if m == nil {
			panic("middleware: New: nil middleware")
		}
	}
	return Chain{mws: append([]func(http.Handler) http.Handler(nil), mws...)}
}

// Append returns a new chain: c's middlewares followed by mws.
func (c Chain) Append(mws ...func(http.Handler) http.Handler) Chain {
	all := make([]func(http.Handler) http.Handler, 0, len(c.mws)+len(mws))
	all = append(all, c.mws...)
	return New(append(all, mws...)...)
}

// Extend returns a new chain: c's middlewares followed by other's.
func (c Chain) Extend(other Chain) Chain {
	return c.Append(other.mws...)
}

// Len returns the number of middlewares in c.
func (c Chain) Len() int { return len(c.mws) }

// Then returns h wrapped by every middleware of c, the first outermost. A
// nil h panics.
func (c Chain) Then(h http.Handler) http.Handler {
	if h == nil {
		panic("middleware: Chain.Then: nil handler")
	}
	for i := len(c.mws) - 1; i >= 0; i-- {
		h = c.mws[i](h)
	}
	return h
}

// ThenFunc is Then(f) for a handler function.
func (c Chain) ThenFunc(f http.HandlerFunc) http.Handler {
	if f == nil {
		panic("middleware: Chain.ThenFunc: nil handler")
	}
	return c.Then(f)
}
