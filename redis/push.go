package pylonredis

import (
	"context"
	"strconv"
	"strings"
	"sync"

	goredis "github.com/redis/go-redis/v9"

	"github.com/pylon-gateway/pylon/breaker"
)

// push is a BreakerStore's one subscription to the changes of state its
// script publishes, shared by every breaker watching through the store. It
// runs while at least one breaker watches.
type push struct {
	mu    sync.Mutex
	fns   map[string][]*watchFn // by breaker name
	n     int                   // watchers
	ps    *goredis.PubSub
	done  chan struct{} // closed when the receiving goroutine ends
	subs  int           // (re)subscriptions confirmed by Redis, for tests
	subMu sync.Mutex
}

type watchFn struct{ fn func(breaker.SharedState) }

// Watch implements [breaker.SharedWatcher]: fn is called with each change of
// state of the breaker called name, as the store's script publishes it on
// Redis pub/sub. The store subscribes once (PSUBSCRIBE on Prefix*) when the
// first breaker watches, and unsubscribes when the last one stops. A
// subscription lost with its connection is re-established by go-redis; the
// changes published meanwhile are missed, and the breakers learn them from
// their next Sync. With BreakerStoreOptions.NoPush, Watch does nothing.
func (s *BreakerStore) Watch(name string, fn func(breaker.SharedState)) (stop func()) {
	if s.opts.NoPush {
		return func() {}
	}
	p := &s.push
	w := &watchFn{fn: fn}
	p.mu.Lock()
	if p.fns == nil {
		p.fns = make(map[string][]*watchFn)
	}
	p.fns[name] = append(p.fns[name], w)
	p.n++
	if p.n == 1 {
		s.subscribe()
	}
	p.mu.Unlock()
	var once sync.Once
	return func() { once.Do(func() { s.unwatch(name, w) }) }
}

func (s *BreakerStore) unwatch(name string, w *watchFn) {
	p := &s.push
	p.mu.Lock()
	list := p.fns[name]
	for i, v := range list {
		if v == w {
			list = append(list[:i:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(p.fns, name)
	} else {
		p.fns[name] = list
	}
	p.n--
	var ps *goredis.PubSub
	var done chan struct{}
	if p.n == 0 {
		ps, done = p.ps, p.done
		p.ps, p.done = nil, nil
	}
	p.mu.Unlock()
	if ps != nil {
		_ = ps.Close()
		<-done
	}
}

// subscribe starts the subscription; p.mu is held. It does not wait for
// Redis: go-redis sends PSUBSCRIBE when it has a connection, and again after
// each reconnection.
func (s *BreakerStore) subscribe() {
	p := &s.push
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.Timeout)
	ps := s.c.PSubscribe(ctx, globEscape(s.opts.Prefix)+"*")
	cancel()
	p.ps, p.done = ps, make(chan struct{})
	go s.receive(ps.ChannelWithSubscriptions(goredis.WithChannelSize(256)), p.done)
}

func (s *BreakerStore) receive(ch <-chan any, done chan struct{}) {
	defer close(done)
	p := &s.push
	for m := range ch {
		switch m := m.(type) {
		case *goredis.Subscription:
			p.subMu.Lock()
			p.subs++
			p.subMu.Unlock()
		case *goredis.Message:
			name, ok := strings.CutPrefix(m.Channel, s.opts.Prefix)
			if !ok {
				continue
			}
			st, ok := parsePush(m.Payload)
			if !ok {
				continue
			}
			p.mu.Lock()
			list := p.fns[name] // never modified in place: safe to use unlocked
			p.mu.Unlock()
			for _, w := range list {
				w.fn(st)
			}
		}
	}
}

// subscriptions returns how many times Redis confirmed the subscription.
func (s *BreakerStore) subscriptions() int {
	s.push.subMu.Lock()
	defer s.push.subMu.Unlock()
	return s.push.subs
}

// parsePush reads "state gen ms-left-open", as breaker.lua publishes it.
func parsePush(v string) (breaker.SharedState, bool) {
	f := strings.Fields(v)
	if len(f) != 3 {
		return breaker.SharedState{}, false
	}
	st, err1 := strconv.Atoi(f[0])
	gen, err2 := strconv.ParseUint(f[1], 10, 64)
	left, err3 := strconv.ParseInt(f[2], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || st < 0 || st > 2 {
		return breaker.SharedState{}, false
	}
	return breaker.SharedState{State: breaker.State(st), Gen: gen, Wait: msDuration(left)}, true
}
