package pylon

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// HedgeOptions configures request hedging (BackendOptions.Hedge): when the
// first attempt of an idempotent request has not answered after Delay, a
// second attempt is sent to another target, and the first response wins.
//
// A request is hedged when its method is GET, HEAD or OPTIONS or it carries
// an Idempotency-Key header, and it has no body or its body was buffered
// (RetryBufferBytes, with Retries > 0). Upgrades and gRPC calls are never
// hedged. The delay is fixed: Pylon keeps no per-target latency
// distribution to take a percentile from.
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
	// hedge is sent. Zero disables hedging.
	Delay time.Duration
}

// errHedgeLost is what a Guard is told about the attempt that lost the race:
// it wraps context.Canceled, saying nothing about the target.
var errHedgeLost = fmt.Errorf("pylon: hedged attempt lost: %w", context.Canceled)

// hedgeable reports whether r may be hedged: idempotent by method (GET,
// HEAD, OPTIONS) or key, with no body or a buffered one.
func hedgeable(r *http.Request, body *reqBody) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
	default:
		if r.Header["Idempotency-Key"] == nil {
			return false
		}
	}
	return body == nil || body.buf != nil
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
	timer := time.NewTimer(b.opts.Hedge.Delay)
	defer timer.Stop()

	var lastErr error
	var lastT *Target
	for {
		var i int
		select {
		case <-timer.C:
			hedge()
			continue
		case i = <-results:
			pending--
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
		results <- i
	}()
}
