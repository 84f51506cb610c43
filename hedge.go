package pylon

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// HedgeOptions configures request hedging (BackendOptions.Hedge): when the
// first attempt of a safe request (GET, HEAD, OPTIONS, TRACE) has not
// answered within the hedge delay, a second attempt is sent to another
// target, and the first response wins.
//
// The hedge delay is Delay, fixed; or, with Observed, the first attempt's
// target's observed Quantile (0.95 unless set) of the time to response
// headers, never less than Delay, and Delay while the target has too few
// samples. The estimate is per target, over its last 10 to 20 seconds
// (two rotating 10-second windows), from at least 50 samples: the time
// from sending each hedged request's attempt to its response headers, for
// every attempt answered below 500, in log-spaced buckets within 6.25 %
// of the value; a first attempt cancelled because the hedge won counts as
// the time it had waited (a lower bound of its latency), so hedging does
// not hide the tail it reacts to. Only hedgeable requests (below) are
// timed; its memory is fixed (under 2 KiB per target) and timing
// allocates nothing. Without Observed nothing is timed.
//
// A request is hedged when its method is safe (RFC 9110 §9.2.1: GET, HEAD,
// OPTIONS or TRACE) and it has no body or its body was buffered
// (RetryBufferBytes, with Retries > 0). A hedge runs the request twice at
// once, which only a safe method allows: an idempotent one (PUT, DELETE)
// or one with an Idempotency-Key (or X-Idempotency-Key) header may be sent
// again after its first attempt failed (see Retries), but two copies in
// flight together may both take effect, or the upstream may answer one of
// them 409 as a concurrent duplicate, so such requests are never hedged.
// Upgrades and gRPC calls are never hedged either.
//
// The hedge is charged to the retry budget (RetryBudget,
// MinRetryConcurrency), as a retry is, and is not sent when the budget is
// spent, when no other target may be tried, or when the request's remaining
// deadline cannot fit it (see Retries). The first attempt to answer with
// headers wins and is streamed to the client; the other's context is
// cancelled and its body closed, and it counts neither for nor against its
// target (passive health, Guard). No attempt writes to the client before it
// wins, so 1xx responses are not relayed on this path. An attempt that fails
// (a connection error, or with RetryOnStatus a 502, 503 or 504) while the
// other is in flight is dropped for it; one that fails before the hedge is
// sent sends it at once. Retries does not apply beyond that.
type HedgeOptions struct {
	// Delay is how long the first attempt may go unanswered before the
	// hedge is sent; with Observed, the least hedge delay, and the delay
	// while the target's latency is unknown. Zero disables hedging;
	// negative is an error.
	Delay time.Duration
	// Observed makes the hedge delay the first attempt's target's observed
	// Quantile of the time to response headers, at least Delay (which must
	// then be set). False means the delay is Delay, fixed.
	Observed bool
	// Quantile is the quantile of the observed latency that the hedge is
	// sent after, in (0, 1), with Observed only. Zero means 0.95.
	Quantile float64
}

// fill checks h and sets its defaults; name is the backend's.
func (h *HedgeOptions) fill(name string) error {
	switch {
	case h.Delay < 0:
		return fmt.Errorf("pylon: backend %q: negative Hedge.Delay", name)
	case !h.Observed && h.Quantile != 0:
		return fmt.Errorf("pylon: backend %q: Hedge.Quantile is set without Hedge.Observed", name)
	case !h.Observed:
		return nil
	case h.Delay == 0:
		return fmt.Errorf("pylon: backend %q: Hedge.Observed needs a Hedge.Delay (the least hedge delay, and the one used until the target has samples)", name)
	case h.Quantile == 0:
		h.Quantile = 0.95
	case !(h.Quantile > 0 && h.Quantile < 1):
		return fmt.Errorf("pylon: backend %q: Hedge.Quantile %v is not in (0, 1)", name, h.Quantile)
	}
	return nil
}

// hedgeDelay returns how long an attempt to t may go unanswered at now
// before the hedge is sent.
func (b *Backend) hedgeDelay(t *Target, now time.Time) time.Duration {
	d := b.opts.Hedge.Delay
	if !b.opts.Hedge.Observed {
		return d
	}
	if h := t.lat.Load(); h != nil {
		d = max(d, h.quantile(now))
	}
	return d
}

// recordLatency counts d, observed at now, in t's latency estimate (made
// here the first time).
func (b *Backend) recordLatency(t *Target, d time.Duration, now time.Time) {
	h := t.lat.Load()
	if h == nil {
		h = newLatencyHist(b.opts.Hedge.Quantile)
		if !t.lat.CompareAndSwap(nil, h) {
			h = t.lat.Load()
		}
	}
	h.record(d, now)
}

// errHedgeLost is what a Guard is told about the attempt that lost the race:
// it wraps context.Canceled, saying nothing about the target.
var errHedgeLost = fmt.Errorf("pylon: hedged attempt lost: %w", context.Canceled)

// hedgeable reports whether r may be hedged: safe by method (GET, HEAD,
// OPTIONS, TRACE), with no body or a buffered one. An idempotent method or
// an Idempotency-Key is not enough: it allows a retry after a failure, one
// attempt after the other, not two attempts at once.
func hedgeable(r *http.Request, body *reqBody) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return body == nil || body.buf != nil
	}
	return false
}

// hedgeAttempt is one attempt of a hedged request. res and err are written
// by the attempt's goroutine before it sends its index on the results
// channel, and read only after that receive.
type hedgeAttempt struct {
	cur   openAttempt
	req   *http.Request
	began time.Time
	res   *http.Response
	err   error
}

// serveHedged proxies a hedgeable request (ServeHTTP's hedge path): at most
// two attempts, the second sent after Hedge.Delay, the first response wins.
// Every attempt is ended exactly once, on every exit path: the loser (and,
// after a panic, the winner) neutrally, in the deferred cleanup, after its
// goroutine returned.
func (b *Backend) serveHedged(w http.ResponseWriter, r *http.Request, info *RequestInfo, out *http.Request, body *reqBody) {
	ctx := r.Context()
	var as [2]hedgeAttempt
	var tried [2]*Target
	n, pending, won := 0, 0, -1
	results := make(chan int, len(as))
	retryHeld := false
	defer func() {
		for i := range n {
			if as[i].cur.cancel != nil {
				as[i].cur.cancel()
			}
		}
		for ; pending > 0; pending-- {
			<-results
		}
		for i := range n {
			a := &as[i]
			if a.cur.t == nil {
				continue // ended
			}
			if a.res != nil {
				a.res.Body.Close()
			}
			err := errHedgeLost
			if i == won {
				err = errAttemptPanicked
			}
			b.end(&a.cur, outcomeNeutral, a.cur.status, err)
		}
		if retryHeld {
			b.retriesInUse.Add(-1)
		}
	}()

	var gerr error
	start := func() bool {
		t, done, err := b.choose(r, tried[:n])
		if err != nil {
			gerr = err
			return false
		}
		tried[n] = t
		b.launchHedged(&as[n], n, results, r, out, body, t, done)
		n++
		pending++
		if info != nil {
			info.Attempts = n
			info.Target = t.String()
		}
		return true
	}
	// hedge sends the second attempt if it may be: another target, room
	// in the retry budget and in the deadline.
	hedge := func() bool {
		return n < len(as) && ctx.Err() == nil && b.fits(ctx, 0) && b.takeRetry(&retryHeld) && start()
	}
	if !start() {
		b.noTarget(w, r, info, 0, nil, gerr)
		return
	}
	timer := time.NewTimer(b.hedgeDelay(tried[0], time.Now()))
	defer timer.Stop()

	var lastErr error
	var lastT *Target
	var received [len(as)]bool
	for {
		var i int
		select {
		case <-timer.C:
			hedge()
			continue
		case i = <-results:
			pending--
			received[i] = true
		}
		a := &as[i]
		if a.err != nil {
			if ctx.Err() == context.Canceled {
				b.end(&a.cur, outcomeNeutral, 0, context.Canceled)
				if pending == 0 {
					b.clientGone(info)
					return
				}
				continue
			}
			lastErr, lastT = a.err, a.cur.t
			b.end(&a.cur, outcomeFailure, 0, a.err)
			if pending > 0 || (!isTimeout(a.err) && hedge()) {
				continue
			}
			b.upstreamError(w, r, info, lastT, lastErr)
			return
		}
		res := a.res
		a.cur.status = res.StatusCode
		if isRetryableStatus(res.StatusCode) && b.opts.RetryOnStatus && (pending > 0 || hedge()) {
			a.res = nil
			drainClose(res.Body)
			b.end(&a.cur, outcomeFailure, res.StatusCode, nil)
			continue
		}

		// The winner: the other attempt is cancelled, and ended once its
		// goroutine returned (deferred above).
		won = i
		if i != 0 && !received[0] && b.opts.Hedge.Observed {
			// The first attempt waited this long at least: a sample
			// from the tail the hedge cut off.
			now := time.Now()
			b.recordLatency(as[0].cur.t, now.Sub(as[0].began), now)
		}
		for j := range n {
			if j != i && as[j].cur.cancel != nil {
				as[j].cur.cancel()
			}
		}
		t := a.cur.t
		if info != nil {
			info.Target = t.String()
			info.UpstreamDuration += time.Since(a.began)
		}
		a.res = nil // respond closes it
		o, abort, err := b.respond(w, r, a.req, t, res, info, "", false)
		b.end(&a.cur, o, res.StatusCode, err)
		if abort {
			panic(http.ErrAbortHandler) // as in ServeHTTP
		}
		return
	}
}

// launchHedged starts attempt i of a hedged request to t on its own
// goroutine, with its own context (bounded by TryTimeout when set), URL,
// headers and body reader.
func (b *Backend) launchHedged(a *hedgeAttempt, i int, results chan<- int, r, out *http.Request, body *reqBody, t *Target, done func(int, error)) {
	var ctx context.Context
	var cancel context.CancelFunc
	if b.opts.TryTimeout > 0 {
		ctx, cancel = context.WithTimeout(r.Context(), b.opts.TryTimeout)
	} else {
		ctx, cancel = context.WithCancel(r.Context())
	}
	a.cur = openAttempt{t: t, done: done, cancel: cancel}
	req := out.WithContext(ctx)
	req.URL = new(url.URL)
	req.Header = out.Header.Clone()
	if body != nil {
		req.Body = &reqBody{buf: body.buf}
	}
	setTargetURL(req, r, t.URL(), b.opts.PreserveHost, b.opts.PassRawQuery)
	if b.dlHeader != "" {
		setDeadlineHeader(req.Header, b.dlHeader, ctx)
	}
	a.req, a.began = req, time.Now()
	go func() {
		a.res, a.err = b.transport.RoundTrip(req)
		if b.opts.Hedge.Observed && a.err == nil && a.res.StatusCode < 500 {
			now := time.Now()
			b.recordLatency(t, now.Sub(a.began), now)
		}
		results <- i
	}()
}
