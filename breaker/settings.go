package breaker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/pylon-gateway/pylon"
)

// Settings configures a [Breaker] (and each breaker of a [TargetGuard]).
// Every field's zero value is a safe default, written in its comment.
//
// A breaker trips (opens) when either trip policy says so: ConsecutiveFailures
// failures in a row, or a FailureRatio of failures among at least MinRequests
// outcomes counted over the rolling Window. It stays open for OpenDuration,
// refusing every request without calling the backend, then lets MaxRequests
// probes through (half-open): it closes when that many succeed in a row and
// opens again on the first probe that fails.
type Settings struct {
	// Name names the breaker in logs and events. Empty means "breaker".
	// Breakers that share state through a Store must have the same Name, and
	// breakers that must not, different ones.
	Name string

	// ConsecutiveFailures trips the breaker after this many failures in a
	// row (within Window). Zero means 5 when FailureRatio is zero, and off
	// when it is set; negative means off.
	ConsecutiveFailures int
	// FailureRatio trips the breaker when failures make up at least this
	// fraction of the outcomes counted over Window, once MinRequests
	// outcomes are counted. Zero means off. At most 1.
	FailureRatio float64
	// MinRequests is how many outcomes Window must hold before FailureRatio
	// is applied. Zero means 10.
	MinRequests int
	// Window is the rolling window over which outcomes are counted in the
	// closed state. Zero means 10s.
	Window time.Duration
	// Buckets is how many buckets Window is divided into: outcomes leave
	// the window one bucket at a time. Zero means 10; 1 means a window that
	// is cleared all at once every Window.
	Buckets int

	// OpenDuration is how long the breaker stays open before letting
	// probes through. Zero means 30s.
	OpenDuration time.Duration
	// MaxRequests is the number of probe requests let through while
	// half-open; the others are refused at once. The breaker closes when
	// MaxRequests probes succeed in a row. Zero means 1.
	MaxRequests int

	// FailureStatus lists the response status codes that count as
	// failures. Nil means 500, 502, 503 and 504. Codes outside 100-599 are
	// an error.
	FailureStatus []int
	// IsFailure, when set, decides whether an outcome counts as a failure
	// instead of FailureStatus and the error rules: status is the response
	// status (0 when there was none) and err the error (nil when there was a
	// response). A client's own cancellation is never counted, whatever
	// IsFailure says. Nil means: a status in FailureStatus, a timeout or a
	// connection error is a failure; anything else (4xx included) a success.
	IsFailure func(r *http.Request, status int, err error) bool

	// Fallback, when set, answers the requests the open breaker refuses
	// (the middleware only). Nil means a 503 problem response with a
	// Retry-After header giving the time left open.
	Fallback http.Handler

	// OnStateChange is called once for each state change, with the
	// breaker's name, for metrics. It is called while the breaker is
	// locked: it must be quick and must not use the breaker. Nil means none.
	OnStateChange func(name string, from, to State)
	// Logger logs each state change once (at Warn when opening, Info
	// otherwise) and, for shared state, store errors. Nil means
	// slog.Default().
	Logger *slog.Logger

	// Store, when set, shares the breaker's state with every breaker of the
	// same Name through it (for example Redis, see the pylon redis module).
	// A closed-state request then makes no call to the store: the breaker
	// decides from a local copy of the shared state, counts outcomes in
	// memory and sends them in batches every SyncInterval (at once after a
	// failure), taking the shared state back in the same round trip. A trip
	// by one replica thus reaches the others within about SyncInterval.
	// Each change of state is one atomic call of the store; half-open probe
	// places are taken from the store, so that MaxRequests holds across
	// replicas. While the store fails, or a Sync has been under way for
	// longer than SyncInterval + SyncTimeout, the breaker decides with a local breaker
	// of the same settings, and logs the error at most once a second. Nil
	// means state is kept in memory.
	Store SharedStore
	// SyncInterval is how often a breaker with a Store syncs with it while
	// requests flow (the sync goroutine stops after a second without
	// requests). Zero means 50ms.
	SyncInterval time.Duration
	// SyncTimeout bounds each call to the Store, from the breaker's side
	// (the store may have a shorter timeout of its own). It is the most a
	// half-open probe waits for its place. Zero means 100ms.
	SyncTimeout time.Duration
}

// State is a breaker's state: closed (requests flow), open (requests are
// refused) or half-open (a few probes test the backend). Its String method
// gives "closed", "open" and "half-open", the values recorded in
// RequestInfo.Breaker.
type State = gobreaker.State

// The states of a breaker.
const (
	StateClosed   = gobreaker.StateClosed
	StateHalfOpen = gobreaker.StateHalfOpen
	StateOpen     = gobreaker.StateOpen
)

// config is Settings validated, with defaults applied. It is shared by every
// breaker a TargetGuard creates.
type config struct {
	name         string
	consecutive  uint32 // 0: off
	ratio        float64
	minRequests  uint32
	window       time.Duration
	buckets      int
	open         time.Duration
	maxRequests  uint32
	failStatus   [10]uint64 // bit set over 0..639
	isFailure    func(*http.Request, int, error) bool
	fallback     http.Handler
	onChange     func(string, State, State)
	watch        watchers // see WatchState
	logger       *slog.Logger
	store        SharedStore
	syncInterval time.Duration
	syncTimeout  time.Duration
	now          func() time.Time
}

// defaultFailureStatus is the FailureStatus used when none is given.
var defaultFailureStatus = []int{500, 502, 503, 504}

func newConfig(s Settings) (*config, error) {
	c := &config{
		name:      s.Name,
		isFailure: s.IsFailure,
		fallback:  s.Fallback,
		onChange:  s.OnStateChange,
		logger:    s.Logger,
		store:     s.Store,
		now:       time.Now,
		ratio:     s.FailureRatio,
	}
	if c.name == "" {
		c.name = "breaker"
	}
	fail := func(format string, a ...any) (*config, error) {
		return nil, fmt.Errorf("breaker %q: "+format, append([]any{c.name}, a...)...)
	}
	if s.FailureRatio < 0 || s.FailureRatio > 1 {
		return fail("FailureRatio %v is not in [0, 1]", s.FailureRatio)
	}
	if s.MinRequests < 0 || s.Window < 0 || s.Buckets < 0 || s.OpenDuration < 0 || s.MaxRequests < 0 || s.SyncInterval < 0 || s.SyncTimeout < 0 {
		return fail("negative MinRequests, Window, Buckets, OpenDuration, MaxRequests, SyncInterval or SyncTimeout")
	}
	c.syncInterval = or(s.SyncInterval, defaultSyncInterval)
	c.syncTimeout = or(s.SyncTimeout, defaultSyncTimeout)
	switch {
	case s.ConsecutiveFailures > 0:
		c.consecutive = uint32(s.ConsecutiveFailures)
	case s.ConsecutiveFailures == 0 && s.FailureRatio == 0:
		c.consecutive = 5
	}
	c.minRequests = uint32(or(s.MinRequests, 10))
	c.window = or(s.Window, 10*time.Second)
	c.buckets = or(s.Buckets, 10)
	if c.window/time.Duration(c.buckets) <= 0 {
		return fail("Window %v is too short for %d buckets", c.window, c.buckets)
	}
	c.open = or(s.OpenDuration, 30*time.Second)
	c.maxRequests = uint32(or(s.MaxRequests, 1))
	codes := s.FailureStatus
	if codes == nil {
		codes = defaultFailureStatus
	}
	for _, code := range codes {
		if code < 100 || code > 599 {
			return fail("FailureStatus %d is not a status code", code)
		}
		c.failStatus[code/64] |= 1 << (code % 64)
	}
	if c.logger == nil {
		c.logger = slog.Default()
	}
	return c, nil
}

func or[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// gobreakerSettings translates c for the breaker called name; onChange is
// the breaker's own state-change hook.
func (c *config) gobreakerSettings(name string, onChange func(string, State, State)) gobreaker.Settings {
	return gobreaker.Settings{
		Name:          name,
		MaxRequests:   c.maxRequests,
		Interval:      c.window,
		BucketPeriod:  c.window / time.Duration(c.buckets),
		Timeout:       c.open,
		ReadyToTrip:   c.readyToTrip,
		OnStateChange: onChange,
		IsSuccessful:  isSuccessful,
		IsExcluded:    isExcluded,
	}
}

// readyToTrip applies the trip policies. The ratio is taken over counted
// outcomes (successes and failures), not over requests, so that excluded
// requests (client cancellations) weigh nothing.
func (c *config) readyToTrip(n gobreaker.Counts) bool {
	if c.consecutive > 0 && n.ConsecutiveFailures >= c.consecutive {
		return true
	}
	if c.ratio > 0 {
		total := n.TotalSuccesses + n.TotalFailures
		return total >= c.minRequests && float64(n.TotalFailures) >= c.ratio*float64(total)
	}
	return false
}

// Outcomes as gobreaker sees them: nil is a success, errFailure a failure,
// errExcluded (and errAdmit) neither.
var (
	errFailure  = errors.New("breaker: failure")
	errExcluded = errors.New("breaker: not counted")
	errAdmit    = errors.New("breaker: admitted") // the admission step of a shared breaker
)

func isSuccessful(err error) bool { return err == nil }

func isExcluded(err error) bool { return err == errExcluded || err == errAdmit }

// outcome classifies one request's result: status is the response status
// (0 when none) and err the transport error (nil when there was a response).
func (c *config) outcome(r *http.Request, status int, err error) error {
	if clientGone(r, err) {
		return errExcluded
	}
	if c.isFailure != nil {
		if c.isFailure(r, status, err) {
			return errFailure
		}
		return nil
	}
	if err != nil || c.failureStatus(status) {
		return errFailure
	}
	return nil
}

func (c *config) failureStatus(code int) bool {
	return code >= 0 && code < 640 && c.failStatus[code/64]&(1<<(code%64)) != 0
}

// clientGone reports that the client itself went away: its request's
// context was canceled (not timed out), which says nothing about the
// backend.
func clientGone(r *http.Request, err error) bool {
	if errors.Is(err, context.Canceled) {
		return true
	}
	if r == nil {
		return false
	}
	if r.Context().Err() == context.Canceled {
		return true
	}
	info := pylon.Info(r.Context())
	return info != nil && info.ClientCanceled
}
