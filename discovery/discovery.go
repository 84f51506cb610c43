// Package discovery keeps a pylon Backend's targets in step with a service
// registry: DNS A/AAAA records (each address a target), DNS SRV records
// (targets with weights and priorities), or a source of your own.
//
// A [Source] pushes endpoint sets as they change (a watch); a [Resolver]
// answers when asked, and [Poll] turns it into a Source that asks again
// when its records' TTL runs out, within bounds and with jitter. [Keep]
// feeds a Source's sets to [pylon.Backend.SetTargets]: the Backend keeps
// each target's state by URL, drains removed targets, and keeps serving the
// last good set when the source fails or answers with nothing.
//
// A Backend fed by discovery is built with no Targets: until the source's
// first good answer it answers 503 problem+json with Retry-After
// ([pylon.ErrNoTargets]), and a first answer that fails or is empty leaves
// it so (there is no good set yet to keep), until one has endpoints.
//
//	orders := pylon.MustNewBackend("orders", pylon.BackendOptions{}) // targets from discovery
//	src := discovery.Poll(discovery.DNS("orders.internal", discovery.DNSOptions{Port: 8080}), discovery.PollOptions{})
//	k := discovery.Keep(orders, src, discovery.Options{Logger: logger})
//	defer k.Stop()
package discovery

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pylon-gateway/pylon"
)

// Source reports the endpoints of a service as they change. Implement it
// for a registry that can push changes (a watch API); for one that is
// asked, implement [Resolver] and use [Poll].
type Source interface {
	// Watch calls update with the whole endpoint set each time it may
	// have changed, starting with the current one, until ctx ends; then it
	// returns. It reports errors it recovers from (a failed refresh, after
	// which the last set stands) through report, at most once per attempt,
	// never once per request. update and report are called from one
	// goroutine at a time.
	Watch(ctx context.Context, update func([]pylon.Endpoint), report func(error))
}

// Resolver answers with a service's endpoints when asked. The DNS and SRV
// resolvers of this package are Resolvers; [Poll] turns one into a Source.
type Resolver interface {
	// Resolve returns the current endpoints and how long they may be
	// trusted (the records' TTL; zero when unknown). A name that does not
	// exist is an empty set, not an error.
	Resolve(ctx context.Context) (Result, error)
}

// Result is what a Resolver answers.
type Result struct {
	// Endpoints are the service's endpoints, in the order found.
	Endpoints []pylon.Endpoint
	// TTL is how long Endpoints may be trusted. Zero means unknown.
	TTL time.Duration
}

// Options configures [Keep]. The zero value is ready to use.
type Options struct {
	// AllowEmpty lets an empty endpoint set from the source empty the
	// Backend (which then answers 503). False means an empty set is
	// ignored and the last good set keeps serving, as a registry that
	// briefly answers with nothing is more often broken than right.
	AllowEmpty bool
	// Logger receives updates, refresh errors (once per failed refresh)
	// and ignored empty sets. Nil means slog.Default(), as everywhere in
	// Pylon; to silence it, pass slog.New(slog.DiscardHandler).
	Logger *slog.Logger
	// OnUpdate, when set, is called after each set applied to the Backend
	// (tests and metrics use it). Nil means nothing is called.
	OnUpdate func([]pylon.Endpoint)
}

// Keeper keeps a Backend's targets in step with a Source; see [Keep].
type Keeper struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	last    []pylon.Endpoint
	lastErr error
}

// Keep starts keeping b's targets in step with src, in a goroutine of its
// own, until Stop. Each set src reports that differs from the one applied
// last is given to b.SetTargets; a set SetTargets refuses (an invalid
// endpoint) is logged and the Backend keeps its targets. An empty set is
// ignored unless opts.AllowEmpty is set. b may have no targets yet (built
// with none): it answers 503 until the first set with endpoints.
func Keep(b *pylon.Backend, src Source, opts Options) *Keeper {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	k := &Keeper{cancel: cancel, done: make(chan struct{})}
	update := func(eps []pylon.Endpoint) {
		if len(eps) == 0 && !opts.AllowEmpty {
			k.setErr(ErrEmpty)
			log.Warn("discovery: source found no endpoints; "+kept(b), "backend", b.Name())
			return
		}
		eps = normalize(eps)
		k.mu.Lock()
		same := k.last != nil && slices.Equal(k.last, eps)
		k.mu.Unlock()
		if same {
			k.setErr(nil)
			return
		}
		if err := b.SetTargets(eps); err != nil {
			k.setErr(err)
			log.Error("discovery: endpoints refused; "+kept(b), "backend", b.Name(), "error", err.Error())
			return
		}
		k.mu.Lock()
		k.last, k.lastErr = eps, nil
		k.mu.Unlock()
		log.Info("discovery: targets updated", "backend", b.Name(), "targets", len(eps))
		if opts.OnUpdate != nil {
			opts.OnUpdate(slices.Clone(eps))
		}
	}
	report := func(err error) {
		k.setErr(err)
		log.Warn("discovery: refresh failed; "+kept(b), "backend", b.Name(), "error", err.Error())
	}
	go func() {
		defer close(k.done)
		src.Watch(ctx, update, report)
	}()
	return k
}

// kept says, for the logs, what b serves while a set is not applied: the
// last good set, or nothing when there is none (no set yet).
func kept(b *pylon.Backend) string {
	if len(b.Targets()) == 0 {
		return "the backend has no targets and answers 503 until the source finds some"
	}
	return "keeping the last good set"
}

// ErrEmpty is the error [Keeper.Err] returns after the source reported an
// empty set that was ignored (see Options.AllowEmpty).
var ErrEmpty = errors.New("discovery: source found no endpoints")

func (k *Keeper) setErr(err error) {
	k.mu.Lock()
	k.lastErr = err
	k.mu.Unlock()
}

// Err returns the error of the source's last report: nil when its last
// set was applied (or unchanged), else the refresh error, [ErrEmpty], or
// the error SetTargets refused the set with.
func (k *Keeper) Err() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.lastErr
}

// Endpoints returns the set applied last, nil before the first.
func (k *Keeper) Endpoints() []pylon.Endpoint {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.last)
}

// Stop stops keeping the Backend's targets and waits for the source's
// goroutine to end. The Backend keeps the targets it has. Stop is
// idempotent.
func (k *Keeper) Stop() {
	k.cancel()
	<-k.done
}

// normalize sorts eps (by priority, then URL) so that the same set found in
// another order is not applied again, and merges endpoints found twice
// (two SRV records for one address): the first priority, the weights added.
func normalize(eps []pylon.Endpoint) []pylon.Endpoint {
	eps = slices.Clone(eps)
	slices.SortStableFunc(eps, func(a, b pylon.Endpoint) int {
		if c := strings.Compare(a.URL, b.URL); c != 0 {
			return c
		}
		return a.Priority - b.Priority
	})
	out := eps[:0]
	for _, e := range eps {
		if n := len(out); n > 0 && out[n-1].URL == e.URL {
			out[n-1].Weight += e.Weight
			continue
		}
		out = append(out, e)
	}
	eps = out
	slices.SortFunc(eps, func(a, b pylon.Endpoint) int {
		if a.Priority != b.Priority {
			return a.Priority - b.Priority
		}
		return strings.Compare(a.URL, b.URL)
	})
	return eps
}
