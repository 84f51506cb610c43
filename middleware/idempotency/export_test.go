package idempotency

import "time"

// Timer is the timer that renews a claim.
type Timer = timer

// SetAfterFunc makes the middlewares that New returns from now on renew
// their claims with the timers af starts (as time.AfterFunc does), until
// restore is called.
func SetAfterFunc(af func(d time.Duration, f func()) Timer) (restore func()) {
	old := afterFunc
	afterFunc = af
	return func() { afterFunc = old }
}
