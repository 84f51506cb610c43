package overload

import (
	"container/list"
	"context"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pylon-gateway/pylon"
)

// ErrShed is the error every refusal of this package wraps: the limit was
// full (and its queue, if any, too, or the wait was over).
var ErrShed = errors.New("overload: request shed")

// ShedError is the refusal of one limit. A Backend answers 503 with the
// Retry-After it gives when every target is refused.
type ShedError struct {
	// Limit names the limit that refused.
	Limit string
	// Retry is the Retry-After the client is sent.
	Retry time.Duration
	// Reason is "full", "queue full" or "queue timeout".
	Reason string
}

// Error describes the refusal.
func (e *ShedError) Error() string {
	return "overload: " + e.Limit + ": " + e.Reason
}

// Unwrap returns ErrShed.
func (e *ShedError) Unwrap() error { return ErrShed }

// RetryAfter returns how long the client is asked to wait, read by a
// Backend for its Retry-After header.
func (e *ShedError) RetryAfter() time.Duration { return e.Retry }

// Limits configures a static concurrency limit. Every field's zero value is
// a safe default, written in its comment.
type Limits struct {
	// Name names the limit in errors, logs and RequestInfo.Shed. Empty
	// means "overload".
	Name string
	// MaxInFlight is the most requests admitted at once. It is required
	// (at least 1).
	MaxInFlight int
	// MaxQueued is the most requests that wait for a place when the limit
	// is full. Zero means none wait: the excess is refused at once.
	MaxQueued int
	// MaxWait bounds a queued request's wait (and the request's context
	// bounds it too). Zero means 50ms.
	MaxWait time.Duration
	// RetryAfter is the delay sent in Retry-After with a refusal. Zero
	// means 1s.
	RetryAfter time.Duration
	// CriticalShare is the share of MaxInFlight (rounded up, at least 1)
	// kept for critical requests (see Critical) while any was seen in the
	// last minute. Zero means 0.1; negative means none is kept.
	CriticalShare float64
	// Now returns the current time. Zero means time.Now.
	Now func() time.Time
}

// Stats counts a limit's decisions since it was made.
type Stats struct {
	// InFlight is the number of requests admitted and not yet done.
	InFlight int
	// Queued is the number of requests waiting now.
	Queued int
	// Limit is the current limit (MaxInFlight, or the adaptive estimate).
	Limit int
	// Admitted counts the requests admitted, Waited those of them that
	// queued first.
	Admitted, Waited uint64
	// Shed counts the requests refused, CriticalShed those of them that
	// were critical.
	Shed, CriticalShed uint64
}

// criticalMemory is how long a limit keeps places for critical requests
// after it last saw one.
const criticalMemory = time.Minute

func (l *Limits) fill() error {
	if l.Name == "" {
		l.Name = "overload"
	}
	if l.MaxInFlight < 1 {
		return errors.New("overload: " + l.Name + ": MaxInFlight must be at least 1")
	}
	if l.MaxQueued < 0 || l.MaxWait < 0 || l.RetryAfter < 0 || l.CriticalShare >= 1 {
		return errors.New("overload: " + l.Name + ": negative MaxQueued, MaxWait or RetryAfter, or CriticalShare >= 1")
	}
	if l.MaxWait == 0 {
		l.MaxWait = 50 * time.Millisecond
	}
	if l.RetryAfter == 0 {
		l.RetryAfter = time.Second
	}
	if l.CriticalShare == 0 {
		l.CriticalShare = 0.1
	}
	if l.Now == nil {
		l.Now = time.Now
	}
	return nil
}

// reserve returns the places of limit kept for critical requests.
func reserve(limit int, share float64) int {
	if share <= 0 || limit <= 1 {
		return 0
	}
	n := int(share*float64(limit) + 0.999999)
	return max(1, min(n, limit-1))
}

// critical tracks whether critical requests were seen recently.
type critical struct {
	last atomic.Int64 // unix nanoseconds of the last critical request
}

func (c *critical) seen(now time.Time) { c.last.Store(now.UnixNano()) }

func (c *critical) recent(now time.Time) bool {
	l := c.last.Load()
	return l != 0 && now.UnixNano()-l < int64(criticalMemory)
}

// isCritical reports whether r's route is marked critical.
func isCritical(r *http.Request) bool {
	info := pylon.Info(r.Context())
	return info != nil && info.Critical
}

// sem is a static limit: a count of admitted requests and two FIFO queues,
// critical waiters served first.
type sem struct {
	cfg      Limits
	crit     critical
	mu       sync.Mutex
	inflight int
	queues   [2]list.List // of *waiter; [1] is critical
	queued   int

	admitted, waited, shed, critShed atomic.Uint64
}

type waiter struct {
	ch      chan struct{}
	granted bool
	elem    *list.Element
	crit    int
}

func newSem(cfg Limits) (*sem, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	return &sem{cfg: cfg}, nil
}

// capFor returns the in-flight count under which a request is admitted.
func (s *sem) capFor(crit bool, now time.Time) int {
	if crit || !s.crit.recent(now) {
		return s.cfg.MaxInFlight
	}
	return s.cfg.MaxInFlight - reserve(s.cfg.MaxInFlight, s.cfg.CriticalShare)
}

// acquire admits a request or refuses it with a *ShedError, waiting in the
// queue at most MaxWait.
func (s *sem) acquire(ctx context.Context, crit, wait bool) error {
	now := s.cfg.Now()
	ci := 0
	if crit {
		ci = 1
		s.crit.seen(now)
	}
	s.mu.Lock()
	// A request does not overtake the waiters of its own class or above.
	ahead := s.queues[1].Len()
	if !crit {
		ahead += s.queues[0].Len()
	}
	if ahead == 0 && s.inflight < s.capFor(crit, now) {
		s.inflight++
		s.mu.Unlock()
		s.admitted.Add(1)
		return nil
	}
	if !wait || s.queued >= s.cfg.MaxQueued {
		s.mu.Unlock()
		return s.refuse(crit, "full")
	}
	w := &waiter{ch: make(chan struct{}), crit: ci}
	w.elem = s.queues[ci].PushBack(w)
	s.queued++
	s.mu.Unlock()

	t := time.NewTimer(s.cfg.MaxWait)
	defer t.Stop()
	reason := "queue timeout"
	select {
	case <-w.ch:
		s.admitted.Add(1)
		s.waited.Add(1)
		return nil
	case <-t.C:
	case <-ctx.Done():
		reason = "request ended in the queue"
	}
	s.mu.Lock()
	if w.granted { // granted as the wait ended: keep the place
		s.mu.Unlock()
		s.admitted.Add(1)
		s.waited.Add(1)
		return nil
	}
	s.queues[ci].Remove(w.elem)
	s.queued--
	s.mu.Unlock()
	return s.refuse(crit, reason)
}

func (s *sem) refuse(crit bool, reason string) error {
	s.shed.Add(1)
	if crit {
		s.critShed.Add(1)
	}
	return &ShedError{Limit: s.cfg.Name, Retry: s.cfg.RetryAfter, Reason: reason}
}

// release gives the place back, or hands it to the first waiter that may
// take it.
func (s *sem) release() {
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inflight--
	for ci := 1; ci >= 0; ci-- {
		q := &s.queues[ci]
		if q.Len() == 0 || s.inflight >= s.capFor(ci == 1, now) {
			continue
		}
		w := q.Remove(q.Front()).(*waiter)
		s.queued--
		w.granted = true
		s.inflight++
		close(w.ch)
		return
	}
}

func (s *sem) stats() Stats {
	s.mu.Lock()
	st := Stats{InFlight: s.inflight, Queued: s.queued, Limit: s.cfg.MaxInFlight}
	s.mu.Unlock()
	st.Admitted, st.Waited = s.admitted.Load(), s.waited.Load()
	st.Shed, st.CriticalShed = s.shed.Load(), s.critShed.Load()
	return st
}

// retryAfterSeconds formats d as Retry-After's whole seconds, at least 1.
func retryAfterSeconds(d time.Duration) string {
	return strconv.FormatInt(max(1, int64((d+time.Second-1)/time.Second)), 10)
}

// recordShed records the refusing limit in r's RequestInfo.
func recordShed(r *http.Request, name string) {
	if info := pylon.Info(r.Context()); info != nil {
		info.Shed = name
	}
}
