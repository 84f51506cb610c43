// Package traffic shifts, copies and breaks traffic on purpose: a weighted
// split between backends on one route (a 95/5 canary), optionally sticky
// per client; mirroring of sampled requests to a shadow backend whose
// answers are discarded; and fault injection (delays and aborts) for
// resilience tests.
//
// Each is a plain net/http piece: Split is an http.Handler (a route's
// target), Mirror and Fault are middlewares.
package traffic

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"

	"github.com/pylon-gateway/pylon"
)

// Side is one side of a [Split]: a handler (usually a *pylon.Backend) and
// its weight.
type Side struct {
	// Name names the side in errors and in RequestInfo.Split, which logs
	// and metrics read. Empty means "side N" (N counting from 0).
	Name string
	// Handler serves the side's requests. A *pylon.Backend records its
	// name in RequestInfo.Backend, so logs and metrics show the side.
	Handler http.Handler
	// Weight is the side's share: Weight / sum of the weights. Zero sends
	// the side nothing (a canary switched off).
	Weight int
}

// SplitOptions configures [Split]. The zero value splits each request at
// random.
type SplitOptions struct {
	// Key, when set, makes the split sticky: requests with the same
	// non-empty key go to the same side while the weights are unchanged
	// (pylon.HashHeader and pylon.HashCookie make keys). Requests with an
	// empty key are split at random. Nil means every request is split at
	// random.
	Key func(*http.Request) string
}

// Split returns a handler that sends each request to one of sides, in
// proportion to their weights, and records the side's name in the
// request's pylon.RequestInfo (the Split field). It fails when no side has a weight, a weight
// is negative, or a handler is nil, naming the side.
func Split(opts SplitOptions, sides ...Side) (http.Handler, error) {
	s := &split{key: opts.Key}
	for i, sd := range sides {
		name := sd.Name
		if name == "" {
			name = fmt.Sprintf("side %d", i)
		}
		switch {
		case sd.Handler == nil:
			return nil, fmt.Errorf("traffic: split %s: nil handler", name)
		case sd.Weight < 0:
			return nil, fmt.Errorf("traffic: split %s: negative weight %d", name, sd.Weight)
		}
		s.total += uint64(sd.Weight)
		s.cum = append(s.cum, s.total)
		s.handlers = append(s.handlers, sd.Handler)
		s.names = append(s.names, name)
	}
	if s.total == 0 {
		return nil, errors.New("traffic: split: no side has a weight")
	}
	return s, nil
}

// MustSplit is like Split but panics on error.
func MustSplit(opts SplitOptions, sides ...Side) http.Handler {
	h, err := Split(opts, sides...)
	if err != nil {
		panic(err)
	}
	return h
}

type split struct {
	key      func(*http.Request) string
	cum      []uint64 // cumulative weights
	total    uint64
	handlers []http.Handler
	names    []string
}

func (s *split) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var n uint64
	if k := ""; s.key != nil {
		if k = s.key(r); k != "" {
			n = mix(fnv(k)) % s.total
		} else {
			n = rand.Uint64N(s.total)
		}
	} else {
		n = rand.Uint64N(s.total)
	}
	i := s.pick(n)
	if info := pylon.Info(r.Context()); info != nil {
		info.Split = s.names[i]
	}
	s.handlers[i].ServeHTTP(w, r)
}

// pick returns the side whose cumulative range holds n.
func (s *split) pick(n uint64) int {
	for i, c := range s.cum {
		if n < c {
			return i
		}
	}
	return len(s.cum) - 1
}

func fnv(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

func mix(h uint64) uint64 {
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}
