package aggregate

import "errors"

// Sentinel errors. A call that fails has one of them (possibly wrapped, with
// log-only detail) in [CallResult.Err]; errors.Is tells them apart. The
// short reason sent to clients in the partial-answer errors member is fixed
// per sentinel (see [Reason]) and never carries upstream detail.
var (
	// ErrTimeout means the call did not finish within its timeout or the
	// route's deadline, or the upstream answered 504.
	ErrTimeout = errors.New("aggregate: timeout")
	// ErrUnavailable means the call could not be made or the upstream
	// answered with a 5xx status other than 504.
	ErrUnavailable = errors.New("aggregate: upstream unavailable")
	// ErrNotFound means the upstream answered 404.
	ErrNotFound = errors.New("aggregate: upstream answered 404")
	// ErrRejected means the upstream answered with a 4xx status other than
	// 404.
	ErrRejected = errors.New("aggregate: upstream rejected the call")
	// ErrRedirect means the upstream answered with a 3xx status. Redirects
	// are never followed.
	ErrRedirect = errors.New("aggregate: upstream answered a redirect")
	// ErrInvalidJSON means the upstream's body is not a single JSON value,
	// is not valid UTF-8 (RFC 8259 §8.1), nests objects and arrays more
	// than 512 levels deep, or a Target field is missing from it.
	ErrInvalidJSON = errors.New("aggregate: invalid JSON response")
	// ErrTooLarge means the upstream's body is larger than the call's cap.
	ErrTooLarge = errors.New("aggregate: response body too large")
	// ErrDependency means the call was not made because a call it depends
	// on failed, or the field it needs from that call is missing, null, not
	// a scalar, or not a safe path segment.
	ErrDependency = errors.New("aggregate: dependency failed")
	// ErrConflict means a merged call's member has the name of a member
	// already written by an earlier call (in the order the calls are
	// written), or of another member of the same answer; the call fails
	// rather than overwrite or write the name twice.
	ErrConflict = errors.New("aggregate: key conflict")
	// ErrCanceled means the call was stopped because a required call
	// failed, or the client went away.
	ErrCanceled = errors.New("aggregate: canceled")
)

// Reason returns the short, client-safe reason for a call's error, as
// listed in the errors member of a partial answer: "timeout",
// "unavailable", "not found", "rejected", "redirect", "invalid response",
// "too large", "dependency failed", "conflict", "canceled". Any other error
// gives "unavailable".
func Reason(err error) string {
	switch {
	case errors.Is(err, ErrTimeout):
		return "timeout"
	case errors.Is(err, ErrNotFound):
		return "not found"
	case errors.Is(err, ErrRejected):
		return "rejected"
	case errors.Is(err, ErrRedirect):
		return "redirect"
	case errors.Is(err, ErrInvalidJSON):
		return "invalid response"
	case errors.Is(err, ErrTooLarge):
		return "too large"
	case errors.Is(err, ErrDependency):
		return "dependency failed"
	case errors.Is(err, ErrConflict):
		return "conflict"
	case errors.Is(err, ErrCanceled):
		return "canceled"
	}
	return "unavailable"
}

// outcome is pylon.CallInfo.Outcome for a call's error.
func outcome(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, ErrTimeout):
		return "timeout"
	case errors.Is(err, ErrCanceled), errors.Is(err, ErrDependency):
		return "skipped"
	}
	return "error"
}
