package pylon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pylon-gateway/pylon/internal/h1"
)

// BackendOptions configures a [Backend]. Every field's zero value is a safe
// default, written in its comment.
type BackendOptions struct {
	// Targets are the upstream base URLs ("http://10.0.0.5:8080", optionally
	// with a base path that every forwarded path is appended to). The
	// scheme is http, https, or h2c for plaintext HTTP/2 with prior
	// knowledge ("h2c://10.0.0.5:50051", the usual gRPC service in a
	// cluster). Empty means none yet: the Backend answers 503 (ErrNoTargets)
	// until SetTargets gives it some, as one fed by package discovery does.
	Targets []string
	// Weights gives Targets[i] the weight Weights[i] (>= 1), read by
	// weighted balancers. Nil means every target weighs 1.
	Weights []int
	// Balancer chooses a target for each attempt. Nil means RoundRobin().
	Balancer Balancer
	// HealthCheck configures active health checks. The zero value disables
	// them.
	HealthCheck HealthCheck
	// Outlier configures passive health (ejection of failing targets). The
	// zero value enables it with Envoy's defaults; see OutlierDetection.
	Outlier OutlierDetection

	// Retries is the maximum number of further attempts after the first, each
	// to a different target when one is available. Zero means no retries.
	// A request is retried only when it is safe: its method is idempotent
	// (GET, HEAD, OPTIONS, TRACE, PUT, DELETE) or it carries an
	// Idempotency-Key header, or its body was buffered (RetryBufferBytes) and
	// RetryNonIdempotent is set; and the failure was a connection error (or,
	// with RetryOnStatus, a 502, 503 or 504). A request whose body was
	// already partly sent and not buffered is never retried. A gRPC call
	// answered trailers-only UNAVAILABLE (no byte of a response sent) is
	// retried whatever its method when its body was recorded whole while
	// it was sent: at most RetryBufferBytes, which must then be set.
	// A retry that the request's remaining deadline (its context's, set by
	// a route's Timeout) cannot fit is not sent: when less than its backoff
	// plus TryTimeout (or, without TryTimeout, 10ms) is left, the client
	// gets the last failure's answer at once.
	Retries int
	// RetryOnStatus also retries idempotent requests answered 502, 503 or
	// 504. False means only connection errors are retried.
	RetryOnStatus bool
	// RetryNonIdempotent allows retrying requests with other methods (POST,
	// PATCH) when their body was buffered. False means never.
	RetryNonIdempotent bool
	// RetryBufferBytes buffers request bodies of at most this many bytes (by
	// Content-Length) so that they can be sent again. Zero means bodies are
	// not buffered, and a request with a body is retried only when none of
	// it was read (a failed dial).
	RetryBufferBytes int64
	// RetryBackoff is the base of the jittered exponential backoff between
	// attempts. Zero means 25ms; negative means no wait.
	RetryBackoff time.Duration
	// RetryMaxBackoff caps the backoff. Zero means 10 × RetryBackoff.
	RetryMaxBackoff time.Duration
	// RetryBudget is the fraction of active requests that may be retries at
	// any moment, so that retries cannot multiply an outage (Envoy's retry
	// budget). Zero means 0.2; at least MinRetryConcurrency retries are
	// always allowed.
	RetryBudget float64
	// MinRetryConcurrency is the number of concurrent retries always
	// allowed, whatever the budget. Zero means 3.
	MinRetryConcurrency int

	// DialTimeout bounds connecting to a target, and the wait for an
	// HTTP/1.1 connection when MaxConnsPerTarget are all busy. Zero means
	// 5s.
	DialTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for a target's response headers
	// after the request is written, and a target that exceeds it is
	// charged with a failure. It does not apply to gRPC calls over HTTP/2:
	// a unary call's server sends its headers only when the call is done,
	// however long the call rightly takes, so a gRPC call is bounded by its
	// own deadline alone (its grpc-timeout, the route's Timeout, TryTimeout
	// or the client going away), and a call without one waits as long as
	// grpc-go itself would. Zero means 30s.
	ResponseHeaderTimeout time.Duration
	// TryTimeout bounds each attempt, headers and body, under the route's
	// deadline. Zero means attempts are bounded only by the route's Timeout
	// and ResponseHeaderTimeout (so streams may last), and gRPC calls by
	// their deadline.
	TryTimeout time.Duration

	// PreserveHost sends the client's Host header upstream. False means the
	// target's host is sent, as most upstreams expect.
	PreserveHost bool
	// PassRawQuery forwards the client's raw query string even when it does
	// not parse (for example when it uses ';' as a separator). False means
	// an unparseable query is cleaned the way httputil.ProxyRequest.SetURL
	// does: parameters that do not parse are dropped, which keeps a
	// semicolon from being read one way by the gateway and another way by
	// the upstream.
	PassRawQuery bool
	// Upgrades lists the protocols that may be upgraded to (compared case
	// insensitively). Nil means only "websocket". "h2c" is never forwarded.
	Upgrades []string

	// Hedge configures hedging of safe requests (GET, HEAD, OPTIONS,
	// TRACE): a second attempt to another target when the first is slow to
	// answer; see HedgeOptions. The zero value disables it.
	Hedge HedgeOptions

	// DeadlineHeader, when set, names a request header that carries each
	// attempt's remaining deadline upstream: whole milliseconds until the
	// attempt's context ends (the route's Timeout, TryTimeout or a gRPC
	// deadline, whichever is first), computed as each attempt is sent.
	// The client's own copy of the header is always removed. Empty means
	// no header is sent; an attempt without a deadline sends none.
	DeadlineHeader string

	// Guard, when set, is asked before each attempt whether the chosen
	// target may be tried, and told each attempt's outcome; a refused target
	// is skipped for another. breaker.PerTarget is one: an open target's
	// breaker refuses it. Nil means every target may be tried.
	Guard Guard

	// TLS configures connections to https:// targets: a private CA,
	// client certificates, the server name to verify. The zero value
	// verifies against the system roots and sends no client certificate.
	TLS UpstreamTLS
	// HTTP2 configures HTTP/2 to h2c:// targets and to https:// targets
	// that offer it (keepalive pings); see UpstreamHTTP2 for how
	// connections are reused. The zero value sends no pings.
	HTTP2 UpstreamHTTP2

	// MaxConnsPerTarget limits the HTTP/1.1 connections open to each
	// target, busy or idle. A request that finds them all busy waits up to
	// DialTimeout for one, then fails as an unreachable target does (502;
	// retried on another target, since nothing was sent). It bounds nothing
	// for HTTP/2 targets (h2c://, and https:// targets that choose HTTP/2):
	// there one connection carries many requests, as many as the target
	// allows (see UpstreamHTTP2), and a request that finds every
	// connection full gets a new one; bound those at the target, or with a
	// concurrency limit in front of the Backend. Zero means no limit.
	MaxConnsPerTarget int
	// DisableHTTP2 sends requests to https targets over HTTP/1.1 only (ALPN
	// "http/1.1"), through Pylon's own transport. False means an https
	// target that chooses HTTP/2 is served over HTTP/2 by the standard
	// transport, and one that chooses HTTP/1.1 by Pylon's.
	DisableHTTP2 bool

	// Transport performs upstream round trips. Nil means NewTransport(opts):
	// Pylon's HTTP/1.1 transport for http:// targets and https:// targets
	// that choose HTTP/1.1, the standard transport for HTTP/2 over TLS and
	// for h2c:// targets, idle connections pooled per target and no proxy
	// from the environment. A Transport given here is used as is;
	// DialTimeout, ResponseHeaderTimeout, MaxConnsPerTarget, DisableHTTP2,
	// TLS and HTTP2 then do not apply, and it sees h2c:// targets' requests
	// with the scheme "h2c", which one built on NewTransport handles.
	// When it has a CloseIdleConnections() method (a *Transport has, and so
	// do observe's wrapping transports, forwarding to the one they wrap),
	// Backend.Close calls it.
	Transport http.RoundTripper
	// Logger receives the targets' ejections and returns and their health
	// checks' verdicts (Warn and Info, once per change) and, at Debug, each
	// upstream error, which the access log already records with its request
	// (RequestInfo.Error). Nil means slog.Default(), as everywhere; pass
	// slog.New(slog.DiscardHandler) to silence it.
	Logger *slog.Logger
}

// Guard decides, attempt by attempt, whether a Backend may send a request to
// a target, and learns how each attempt went. Implementations must be safe
// for concurrent use.
type Guard interface {
	// Allow is called with the request and the chosen target before an
	// attempt. A non-nil error refuses the target: the Backend tries another,
	// and answers 503 when all are refused, with a Retry-After taken from the
	// error when it has a RetryAfter() time.Duration method. Otherwise done
	// is called exactly once when the attempt ends, panics included, with
	// the upstream status (0 when there was no response) and the error: nil
	// when the response was forwarded whole; the transport error when there
	// was no response; the read error when the upstream's body failed
	// mid-way (a reset or truncated body, a failure of the target); a
	// *GRPCStatusError when a gRPC call ended with UNAVAILABLE,
	// RESOURCE_EXHAUSTED or DEADLINE_EXCEEDED (a failure of the target); an
	// error that wraps context.Canceled when the client went away, its
	// grpc-timeout passed, or a panic cut the attempt short, which says
	// nothing about the target.
	Allow(r *http.Request, t *Target) (done func(status int, err error), err error)
}

// Backend is a named pool of upstream targets that requests are proxied to.
// It is an [http.Handler]: a route's target, or usable on its own.
//
// For each request it picks a healthy target with its Balancer, rewrites the
// request (hop-by-hop headers removed, X-Forwarded-* and Forwarded rebuilt),
// sends it with the client's context, and streams the response back. Errors
// become 502 (target unreachable or broken answer) or 504 (timeout) problem
// responses with no upstream detail. A client that goes away is recorded in
// RequestInfo, not answered, and never counts against a target.
type Backend struct {
	name      string
	opts      BackendOptions
	pool      *pool
	transport http.RoundTripper
	logger    *slog.Logger
	upgrades  []string
	dlHeader  string // canonical DeadlineHeader

	active       atomic.Int64 // requests in flight through this backend
	retriesInUse atomic.Int64 // retries in flight

}

// NewBackend builds a Backend. It validates the options and fails with an
// error that names the backend. It starts active health checks when they are
// configured; call Close to stop them.
func NewBackend(name string, opts BackendOptions) (*Backend, error) {
	if name == "" {
		return nil, errors.New("pylon: backend: empty name")
	}
	if opts.Retries < 0 {
		return nil, fmt.Errorf("pylon: backend %q: negative Retries", name)
	}
	if opts.RetryBudget < 0 || opts.RetryBudget > 1 {
		return nil, fmt.Errorf("pylon: backend %q: RetryBudget %v is not in [0, 1]", name, opts.RetryBudget)
	}
	if err := opts.Hedge.fill(name); err != nil { // hedge.go
		return nil, err
	}
	b := &Backend{name: name, opts: opts, logger: opts.Logger}
	if b.logger == nil {
		b.logger = slog.Default()
	}
	b.dlHeader = http.CanonicalHeaderKey(opts.DeadlineHeader)
	b.upgrades = opts.Upgrades
	if b.upgrades == nil {
		b.upgrades = []string{"websocket"}
	}
	b.transport = opts.Transport
	if b.transport == nil {
		t, err := newUpstreamTransport(opts) // h2.go
		if err != nil {
			return nil, fmt.Errorf("pylon: backend %q: %w", name, err)
		}
		b.transport = t
	}
	p, err := newPool(poolConfig{
		Backend:   name,
		Targets:   opts.Targets,
		Weights:   opts.Weights,
		Balancer:  opts.Balancer,
		Outlier:   opts.Outlier,
		Health:    opts.HealthCheck,
		Transport: b.transport,
		Logger:    b.logger,
		OnDrained: func(t *Target) { closeIdleTo(b.transport, t) },
		Forget:    func(t *Target) { forgetTarget(opts.Guard, t) },
	})
	if err != nil {
		return nil, err
	}
	b.pool = p
	return b, nil
}

// Name returns the backend's name.
func (b *Backend) Name() string { return b.name }

// Targets returns the backend's current targets, in the order configured
// or last given to SetTargets. Callers must not modify the slice.
func (b *Backend) Targets() []*Target { return b.pool.targets() }

// Close stops active health checks and closes idle upstream connections:
// those of a transport the backend built itself, or of
// BackendOptions.Transport when it has a CloseIdleConnections() method
// (wrapped transports such as observe's forward it to the one they wrap).
// In-flight requests are not cut.
func (b *Backend) Close() error {
	b.pool.close()
	if c, ok := b.transport.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
	return nil
}

// Transport is the upstream transport NewBackend builds when
// BackendOptions.Transport is nil, returned by NewTransport so that it can be
// wrapped (for tracing, say) and passed back as BackendOptions.Transport.
//
// Requests to http:// targets, and to https:// targets that choose HTTP/1.1
// in ALPN, go through Pylon's own HTTP/1.1 transport: the request is written
// and the response read on the caller's goroutine, over connections pooled
// per target (at most 256 idle ones each, closed after 90s unused, checked
// before reuse for an upstream that closed them). https:// targets that
// choose HTTP/2 are served by the standard library's http.Transport, with
// the same settings.
type Transport struct {
	h1  *h1.Transport
	std *http.Transport // HTTP/2 over TLS
	h2c *http.Transport // h2c:// targets: HTTP/2 without TLS
	rht time.Duration   // ResponseHeaderTimeout, which std and h2c leave to headerTimeout
}

// NewTransport returns the transport NewBackend builds when
// BackendOptions.Transport is nil: DialTimeout, ResponseHeaderTimeout,
// MaxConnsPerTarget, DisableHTTP2, TLS and HTTP2 from opts, idle connections
// pooled per target, no proxy from the environment, no transparent
// compression; h2c:// targets are sent over plaintext HTTP/2.
func NewTransport(opts BackendOptions) *Transport {
	std := stdTransport(opts)
	// Over HTTP/2, ResponseHeaderTimeout is applied request by request
	// (headerTimeout, h2.go), which spares gRPC calls.
	rht := std.ResponseHeaderTimeout
	std.ResponseHeaderTimeout = 0
	h2c := applyUpstream(std, opts) // h2.go: TLS, HTTP2 and h2c:// settings
	o := h1.Options{
		TLSClientConfig:        std.TLSClientConfig,
		DialContext:            std.DialContext,
		TLSHandshakeTimeout:    std.TLSHandshakeTimeout,
		ResponseHeaderTimeout:  rht,
		ExpectContinueTimeout:  std.ExpectContinueTimeout,
		IdleTimeout:            std.IdleConnTimeout,
		MaxIdlePerHost:         std.MaxIdleConnsPerHost,
		MaxConnsPerHost:        opts.MaxConnsPerTarget,
		MaxConnWait:            opts.DialTimeout,
		MaxResponseHeaderBytes: std.MaxResponseHeaderBytes,
	}
	if !opts.DisableHTTP2 {
		o.HTTP2 = headerTimeout{std, rht}
	}
	t := &Transport{h1: h1.New(o), std: std, h2c: h2c, rht: rht}
	// New connections over either transport resume the same TLS sessions.
	if std.TLSClientConfig == nil {
		std.TLSClientConfig = &tls.Config{}
	}
	std.TLSClientConfig.ClientSessionCache = t.h1.TLSConfig().ClientSessionCache
	return t
}

// RoundTrip sends r upstream.
func (t *Transport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Scheme == SchemeH2C {
		return h2cRoundTripper{t.h2c, t.rht}.RoundTrip(r) // plaintext HTTP/2
	}
	return t.h1.RoundTrip(r)
}

// CloseIdleConnections closes the pooled connections not in use.
func (t *Transport) CloseIdleConnections() {
	t.h1.CloseIdleConnections()
	t.std.CloseIdleConnections()
	t.h2c.CloseIdleConnections()
}

// CloseIdleConnectionsTo closes the idle connections to u's host alone when
// it is served over HTTP/1.1 (a target drained or removed, see
// Backend.SetTargets); over HTTP/2 the standard transport can only close all
// of its idle connections, which it does.
func (t *Transport) CloseIdleConnectionsTo(u *url.URL) {
	switch {
	case u.Scheme == SchemeH2C:
		t.h2c.CloseIdleConnections()
	case !t.h1.CloseIdleConnectionsTo(u.Scheme, u.Host):
		t.std.CloseIdleConnections()
	}
}

// stdTransport is the standard transport with Pylon's settings: HTTP/2 to
// the https targets that choose it, and the baseline of the benchmarks.
func stdTransport(opts BackendOptions) *http.Transport {
	dial := opts.DialTimeout
	if dial == 0 {
		dial = 5 * time.Second
	}
	rht := opts.ResponseHeaderTimeout
	if rht == 0 {
		rht = 30 * time.Second
	}
	d := &net.Dialer{Timeout: dial, KeepAlive: 30 * time.Second}
	return &http.Transport{
		DialContext:         d.DialContext,
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 256,
		// No MaxConnsPerHost: over HTTP/2 it can hold a request waiting
		// for a connection that another request is making, for as long
		// as that takes, or forever (golang/go#34941). MaxConnsPerTarget
		// bounds Pylon's HTTP/1.1 pool alone.
		IdleConnTimeout:        90 * time.Second,
		TLSHandshakeTimeout:    10 * time.Second,
		ExpectContinueTimeout:  time.Second,
		ResponseHeaderTimeout:  rht,
		MaxResponseHeaderBytes: 1 << 20,
		DisableCompression:     true, // a proxy forwards bodies as encoded
		ForceAttemptHTTP2:      !opts.DisableHTTP2,
	}
}

// bufPool holds the buffers that response bodies are copied through.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// ServeHTTP proxies r to one of the backend's targets.
func (b *Backend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	info := Info(r.Context())
	if info != nil {
		info.Backend = b.name
	}
	b.active.Add(1)
	defer b.active.Add(-1)
	if r.Method == http.MethodConnect {
		// A reverse proxy has no use for CONNECT; RFC 8441's extended
		// CONNECT (:protocol) would reach the transport and fail there.
		Error(w, r, http.StatusNotImplemented, extendedConnectDetail)
		return
	}
	isGRPC := IsGRPC(r)
	if isGRPC {
		var cancel context.CancelFunc
		if r, cancel = grpcDeadline(r); cancel != nil { // backend_grpc.go
			defer cancel()
		}
	}

	upType := ""
	if r.Header["Connection"] != nil && r.Header["Upgrade"] != nil {
		upType = b.allowedUpgrade(r.Header)
	}

	out := b.outRequest(r, info, upType)

	// Request bodies are wrapped so that the transport's Close after a failed
	// attempt never closes the body a retry would read (Caddy issue 7546),
	// and so that an over-limit body is told apart from an upstream error.
	var body *reqBody
	if out.Body != nil {
		body = &reqBody{rc: r.Body}
		if b.opts.RetryBufferBytes > 0 && r.ContentLength > 0 && r.ContentLength <= b.opts.RetryBufferBytes && b.opts.Retries > 0 {
			buf := make([]byte, r.ContentLength)
			if _, err := io.ReadFull(r.Body, buf); err != nil {
				b.bodyError(w, r, info, err)
				return
			}
			body.buf = buf
		} else if isGRPC && b.opts.RetryBufferBytes > 0 && b.opts.Retries > 0 {
			body.recMax = int(b.opts.RetryBufferBytes) // replayable if it ends within the cap
		}
		out.Body = body
	}

	if b.opts.Hedge.Delay > 0 && upType == "" && !isGRPC && hedgeable(r, body) {
		b.serveHedged(w, r, info, out, body) // hedge.go
		return
	}

	var tried [4]*Target
	triedS := tried[:0]
	retryHeld := false
	var cur openAttempt // the attempt under way, if any
	defer func() {
		// Every exit path ends its attempt itself; only a panic (ours, or
		// a Transport's, a Guard's, a wrapped ResponseWriter's) leaves one
		// open here. It says nothing about the target.
		if cur.t != nil {
			b.end(&cur, outcomeNeutral, cur.status, errAttemptPanicked)
		}
		if retryHeld {
			b.retriesInUse.Add(-1)
		}
	}()

	var lastErr error // the previous attempt's failure, answered when no target is left
	for attempt := 0; ; attempt++ {
		t, done, gerr := b.choose(r, triedS)
		if gerr != nil {
			b.noTarget(w, r, info, attempt, lastErr, gerr)
			return
		}
		cur = openAttempt{t: t, done: done} // choose counted t in flight
		triedS = append(triedS, t)
		if info != nil {
			info.Attempts = attempt + 1
			info.Target = t.String()
		}
		if body != nil && attempt > 0 && (body.buf != nil || body.recorded()) {
			// A fresh reader per attempt: the transport may still be
			// reading the previous one from its write goroutine.
			body = body.replay()
			out.Body = body
		}
		setTargetURL(out, r, t.URL(), b.opts.PreserveHost, b.opts.PassRawQuery)

		try := out
		if b.opts.TryTimeout > 0 {
			ctx, cancel := context.WithTimeout(r.Context(), b.opts.TryTimeout)
			cur.cancel = cancel
			try = out.WithContext(ctx)
		}
		if isGRPC {
			setGRPCTimeout(out.Header, try.Context())
		}
		if b.dlHeader != "" {
			setDeadlineHeader(out.Header, b.dlHeader, try.Context())
		}

		began := time.Now()
		res, err := b.roundTrip(w, try) // interim.go
		if info != nil {
			info.UpstreamDuration += time.Since(began)
		}

		if err != nil {
			if berr := body.readErr(); berr != nil && !errors.Is(berr, io.EOF) {
				b.end(&cur, outcomeNeutral, 0, context.Canceled)
				b.bodyError(w, r, info, berr)
				return
			}
			if r.Context().Err() == context.Canceled {
				b.end(&cur, outcomeNeutral, 0, context.Canceled)
				b.clientGone(info)
				return
			}
			if isGRPC && !isDialError(err) && clientDeadlineOutcome(r.Context(), streamCanceled(err)) {
				// The client's grpc-timeout passed (our own timer fired),
				// or the upstream, told the deadline, reset the stream
				// just before it. A target that could not be reached
				// failed, whatever the deadline: it is retried and
				// counted below.
				b.end(&cur, outcomeNeutral, 0, errClientOutcome)
				if info != nil {
					info.grpcClientDeadline = true
				}
				Error(w, r, http.StatusGatewayTimeout, "The call's deadline passed.")
				return
			}
			b.end(&cur, outcomeFailure, 0, err)
			lastErr = err
			if b.mayRetry(r, attempt, body, err) {
				if d := b.backoff(attempt); b.fits(r.Context(), d) && b.takeRetry(&retryHeld) && sleepCtx(r.Context(), d) == nil {
					continue
				}
			}
			b.upstreamError(w, r, info, t, err)
			return
		}

		cur.status = res.StatusCode
		// An answer that may be retried: a gRPC call refused UNAVAILABLE
		// before any byte of a response (backend_grpc.go), or a 502, 503
		// or 504. A retry that the deadline cannot fit is not sent: the
		// client gets this answer at once.
		var failure error // what the target is charged with, when retried
		retry := false
		switch {
		case isGRPC && trailersOnlyUnavailable(res):
			retry = body.replayable() && attempt < b.opts.Retries && r.Context().Err() == nil
			failure = &GRPCStatusError{Code: GRPCUnavailable}
		case isRetryableStatus(res.StatusCode):
			retry = b.mayRetry(r, attempt, body, nil)
		}
		if retry {
			if d := b.backoff(attempt); b.fits(r.Context(), d) && b.takeRetry(&retryHeld) {
				drainClose(res.Body)
				b.end(&cur, outcomeFailure, res.StatusCode, failure)
				lastErr = errUpstreamStatus
				if sleepCtx(r.Context(), d) == nil {
					continue
				}
				b.upstreamError(w, r, info, t, r.Context().Err())
				return
			}
		}

		o, abort, err := b.respond(w, r, out, t, res, info, upType, isGRPC)
		b.end(&cur, o, res.StatusCode, err)
		if abort {
			// The upstream failed after the headers were sent: the only
			// honest signal left is to abort the response, so the client
			// sees a truncated body, not a complete one. The attempt is
			// ended first; the panic unwinds past nothing that counts.
			panic(http.ErrAbortHandler)
		}
		return
	}
}

// errAttemptPanicked is what a Guard is told when a panic cut an attempt
// short. It wraps context.Canceled: like a client going away, it says
// nothing about the target.
var errAttemptPanicked = fmt.Errorf("pylon: attempt ended by a panic: %w", context.Canceled)

// openAttempt is the upstream attempt under way: its target's in-flight
// count is taken, its guard's done is owed, its per-try context is live.
// ServeHTTP ends it on every path, and its defer ends it after a panic.
type openAttempt struct {
	t      *Target
	done   func(int, error)
	cancel context.CancelFunc
	status int // the upstream's status, once it answered
}

// errUpstreamStatus stands for an upstream's 502, 503 or 504 answer that was
// retried.
var errUpstreamStatus = errors.New("pylon: upstream answered 502, 503 or 504")

// choose picks the attempt's target and counts it in flight. With a Guard
// it skips the targets the guard refuses (an open circuit breaker), and
// fails when it refuses all. A target removed by a concurrent SetTargets
// is never used: the next pick reads the newer set.
func (b *Backend) choose(r *http.Request, tried []*Target) (*Target, func(int, error), error) {
	g := b.opts.Guard
	avoid := tried
	var refused []*Target
	gerr := ErrNoTargets
	for picks, lost := 0, 0; picks <= len(b.pool.targets()) && lost < maxAcquire; {
		t := b.pool.pick(r, avoid)
		if t == nil || slices.Contains(refused, t) {
			break // no target, or every target left is refused
		}
		var done func(int, error)
		if g != nil {
			var err error
			if done, err = g.Allow(r, t); err != nil {
				gerr = err
				refused = append(refused, t)
				avoid = append(avoid[:len(avoid):len(avoid)], t)
				picks++
				continue
			}
		}
		if !b.pool.acquire(t) {
			if done != nil {
				done(0, errTargetRemoved)
			}
			lost++
			continue
		}
		return t, done, nil
	}
	return nil, nil, gerr
}

// end ends the attempt a, once: its per-try context is released, passive
// health learns outcome o, and the guard learns the status (0 when none) and
// error (context.Canceled when the client went away). a is cleared first, so
// that a guard whose done panics is not called again by ServeHTTP's defer.
func (b *Backend) end(a *openAttempt, o outcome, status int, err error) {
	t, done, cancel := a.t, a.done, a.cancel
	if t == nil {
		return
	}
	*a = openAttempt{}
	if cancel != nil {
		cancel()
	}
	b.pool.finish(t, o)
	if done != nil {
		done(status, err)
	}
}

// noTarget answers when the Guard refused every target: 503 with the
// guard's Retry-After on a first attempt, else the previous failure.
func (b *Backend) noTarget(w http.ResponseWriter, r *http.Request, info *RequestInfo, attempt int, lastErr, gerr error) {
	if info != nil {
		info.Error = gerr.Error()
	}
	if attempt > 0 && lastErr != nil && lastErr != errUpstreamStatus {
		b.upstreamError(w, r, info, nil, lastErr)
		return
	}
	var ra interface{ RetryAfter() time.Duration }
	if errors.As(gerr, &ra) {
		if d := ra.RetryAfter(); d > 0 {
			w.Header().Set("Retry-After", strconv.FormatInt(int64((d+time.Second-1)/time.Second), 10))
		}
	}
	Error(w, r, http.StatusServiceUnavailable, "The upstream service is unavailable.")
}

// outRequest builds the upstream request once; attempts only change its URL.
func (b *Backend) outRequest(r *http.Request, info *RequestInfo, upType string) *http.Request {
	// The request and its URL share one allocation.
	o := new(struct {
		req http.Request
		url url.URL
	})
	out := &o.req
	*out = *r // keeps the context and the route's path values
	out.RequestURI = ""
	out.Close = false
	if info == nil || !info.requestTrailers {
		out.Trailer = nil // they arrive after routing and auth decisions; see Route.RequestTrailers
	}
	out.TransferEncoding = nil
	out.URL = &o.url
	if r.ContentLength == 0 {
		out.Body = nil // lets the transport retry a body-less request itself
	}

	if info == nil || !info.identified {
		// Outside a Gateway: no proxy is trusted, and the client's
		// Connection header is read as the header is now.
		var local RequestInfo
		Trust{}.Identify(&local, r)
		info = &local
	}
	out.Header = make(http.Header, len(r.Header)+5)
	copyRequestHeader(out.Header, r.Header, !info.connStripped)
	if upType != "" {
		out.Header["Connection"] = []string{"Upgrade"}
		out.Header["Upgrade"] = []string{upType}
	}
	setForwarded(out.Header, r, info)
	if b.dlHeader != "" {
		delete(out.Header, b.dlHeader) // never the client's value
	}

	// Expect: 100-continue needs no relaying: the transport waits for the
	// upstream's 100 before reading the body, and net/http answers the
	// client's Expect with its own 100 on that first read. Other 1xx
	// responses (103 Early Hints) are relayed by roundTrip (interim.go).
	return out
}

// setDeadlineHeader sets h[key] to the milliseconds left before ctx's
// deadline (0 when it passed), or removes it when ctx has none.
func setDeadlineHeader(h http.Header, key string, ctx context.Context) {
	dl, ok := ctx.Deadline()
	if !ok {
		delete(h, key)
		return
	}
	ms := max(time.Until(dl).Milliseconds(), 0)
	h[key] = []string{strconv.FormatInt(ms, 10)}
}

// setTargetURL points out at target t, keeping the client's path and query.
func setTargetURL(out, in *http.Request, t *url.URL, preserveHost, passRaw bool) {
	u := out.URL
	u.Scheme = t.Scheme
	u.Host = t.Host
	u.Path, u.RawPath = joinPath(t, in.URL)
	u.RawQuery = in.URL.RawQuery
	if !passRaw {
		u.RawQuery = cleanQuery(u.RawQuery)
	}
	u.ForceQuery = false
	if preserveHost {
		out.Host = in.Host
	} else {
		out.Host = ""
	}
}

// joinPath appends the request path to the target's base path.
func joinPath(t *url.URL, in *url.URL) (path, rawPath string) {
	if t.Path == "" || t.Path == "/" {
		return in.Path, in.RawPath
	}
	base := strings.TrimSuffix(t.Path, "/")
	rel := in.Path
	if rel == "" {
		rel = "/"
	}
	if in.RawPath == "" && t.RawPath == "" {
		return base + rel, ""
	}
	rawBase := strings.TrimSuffix(t.EscapedPath(), "/")
	rawRel := in.EscapedPath()
	if rawRel == "" {
		rawRel = "/"
	}
	return base + rel, rawBase + rawRel
}

func (b *Backend) allowedUpgrade(h http.Header) string {
	if !headerHasToken(h["Connection"], "upgrade") {
		return ""
	}
	up := h.Get("Upgrade")
	if strings.EqualFold(up, "h2c") {
		return ""
	}
	for _, p := range b.upgrades {
		if strings.EqualFold(p, up) {
			return up
		}
	}
	return ""
}

func idempotent(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return hasIdempotencyKey(r)
}

// hasIdempotencyKey reports whether r carries an idempotency key
// (Idempotency-Key, or the older X-Idempotency-Key): its sender made it
// safe to send again, whatever its method.
func hasIdempotencyKey(r *http.Request) bool {
	return r.Header["Idempotency-Key"] != nil || r.Header["X-Idempotency-Key"] != nil
}

func isRetryableStatus(code int) bool {
	return code == http.StatusBadGateway || code == http.StatusServiceUnavailable || code == http.StatusGatewayTimeout
}

// mayRetry reports whether the failed attempt may be retried. err is the
// transport error, or nil when the upstream answered 502, 503 or 504.
func (b *Backend) mayRetry(r *http.Request, attempt int, body *reqBody, err error) bool {
	if attempt >= b.opts.Retries || r.Context().Err() != nil {
		return false
	}
	buffered := body == nil || body.buf != nil
	safe := idempotent(r) || (body != nil && body.buf != nil && b.opts.RetryNonIdempotent)
	if err != nil {
		if isTimeout(err) {
			return false
		}
		if isDialError(err) {
			// Never written: no byte of the body was read, and the
			// request may go to another target whatever its method.
			return true
		}
		// Otherwise an unbuffered body may be partly sent, or still be
		// read by the transport: it cannot be sent again.
		return safe && buffered
	}
	return b.opts.RetryOnStatus && safe && buffered
}

// takeRetry takes a place in the retry budget, once per request.
func (b *Backend) takeRetry(held *bool) bool {
	if *held {
		return true
	}
	if !b.retryAllowed() {
		return false
	}
	b.retriesInUse.Add(1)
	*held = true
	return true
}

// retryAllowed applies the retry budget: retries in flight may be at most
// RetryBudget of the active requests, or MinRetryConcurrency.
func (b *Backend) retryAllowed() bool {
	budget := b.opts.RetryBudget
	if budget == 0 {
		budget = 0.2
	}
	minC := b.opts.MinRetryConcurrency
	if minC == 0 {
		minC = 3
	}
	limit := int64(budget * float64(b.active.Load()))
	if limit < int64(minC) {
		limit = int64(minC)
	}
	return b.retriesInUse.Load() < limit
}

// backoff returns the jittered backoff before retry attempt+1 (0 when
// RetryBackoff is negative).
func (b *Backend) backoff(attempt int) time.Duration {
	base := b.opts.RetryBackoff
	if base < 0 {
		return 0
	}
	if base == 0 {
		base = 25 * time.Millisecond
	}
	maxB := b.opts.RetryMaxBackoff
	if maxB <= 0 {
		maxB = 10 * base
	}
	d := base << min(attempt, 16)
	if d > maxB || d <= 0 {
		d = maxB
	}
	return time.Duration(rand.Int64N(int64(d)) + 1) // full jitter
}

// minAttemptTime is the least time left before the request's deadline that
// a retry is sent with, when TryTimeout is not set: an attempt given less
// could hardly be answered, and only delays the client's answer.
const minAttemptTime = 10 * time.Millisecond

// fits reports whether a retry sent after backoff d fits the request's
// remaining deadline: at least d plus the attempt's minimum time
// (TryTimeout when set, else minAttemptTime) is left. A request without a
// deadline always fits.
func (b *Backend) fits(ctx context.Context, d time.Duration) bool {
	dl, ok := ctx.Deadline()
	if !ok {
		return true
	}
	need := minAttemptTime
	if b.opts.TryTimeout > 0 {
		need = b.opts.TryTimeout
	}
	return time.Until(dl) >= d+need
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func isDialError(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "dial"
}

func (b *Backend) clientGone(info *RequestInfo) {
	if info != nil {
		info.ClientCanceled = true
		info.Error = "client canceled"
	}
}

func (b *Backend) bodyError(w http.ResponseWriter, r *http.Request, info *RequestInfo, err error) {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		Error(w, r, http.StatusRequestEntityTooLarge, "The request body is larger than this route accepts.")
		return
	}
	if errors.Is(err, ErrBodyTimeout) { // checked first: net/http also cancels r's context
		Error(w, r, http.StatusRequestTimeout, "The request body stopped arriving.")
		return
	}
	if r.Context().Err() == context.Canceled {
		b.clientGone(info)
		return
	}
	Error(w, r, http.StatusBadRequest, "The request body could not be read.")
}

// upstreamError answers a failed attempt: 504 for a timeout, 502 otherwise,
// nothing when the client is gone. The cause goes to the log only.
func (b *Backend) upstreamError(w http.ResponseWriter, r *http.Request, info *RequestInfo, t *Target, err error) {
	if r.Context().Err() == context.Canceled {
		b.clientGone(info)
		return
	}
	status, detail := http.StatusBadGateway, "The upstream service could not be reached."
	if isTimeout(err) {
		status, detail = http.StatusGatewayTimeout, "The upstream service did not answer in time."
	}
	target := ""
	if t != nil {
		target = t.String()
	}
	b.logger.LogAttrs(r.Context(), slog.LevelDebug, "pylon: upstream error",
		slog.String("backend", b.name), slog.String("target", target), slog.String("error", err.Error()))
	if info != nil {
		info.Error = err.Error()
	}
	Error(w, r, status, detail)
}

// respond streams res to the client and returns the attempt's outcome for
// passive health and the error for the guard: nil when the response was
// forwarded whole, context.Canceled when the client went away (outcome
// neutral). abort reports that the upstream failed mid-body (outcome
// failure, err the read error): the headers are sent, so the caller must
// abort the response.
func (b *Backend) respond(w http.ResponseWriter, r *http.Request, out *http.Request, target *Target, res *http.Response, info *RequestInfo, upType string, isGRPC bool) (o outcome, abort bool, err error) {
	if info != nil {
		info.UpstreamStatus = res.StatusCode
	}
	o = outcomeSuccess
	if isRetryableStatus(res.StatusCode) {
		o = outcomeFailure
	}
	if res.StatusCode == http.StatusSwitchingProtocols {
		o, err = b.upgrade(w, r, res, upType, info)
		return o, false, err
	}
	defer res.Body.Close()

	removeHopByHop(res.Header)
	if loc := res.Header["Location"]; len(loc) == 1 {
		if nl, ok := rewriteLocation(loc[0], out.URL, target.URL(), r, info); ok {
			res.Header["Location"] = []string{nl}
		}
	}
	dst := w.Header()
	for k, vv := range res.Header {
		if old, ok := dst[k]; ok && k != "Content-Type" && k != "Content-Length" {
			dst[k] = append(old[:len(old):len(old)], vv...)
		} else {
			dst[k] = vv
		}
	}
	if len(res.Trailer) > 0 {
		names := make([]string, 0, len(res.Trailer))
		for k := range res.Trailer {
			names = append(names, k)
		}
		dst["Trailer"] = []string{strings.Join(names, ", ")}
	}
	w.WriteHeader(res.StatusCode)

	flush := res.ContentLength == -1 || isEventStream(res.Header)
	if err := copyBody(w, res.Body, flush); err != nil {
		if r.Context().Err() == context.Canceled || errors.Is(err, errClientWrite) {
			b.clientGone(info)
			return outcomeNeutral, false, context.Canceled
		}
		// A read error: the upstream reset the connection, or closed it
		// before the end of its body (unexpected EOF), or its try timed out.
		if info != nil {
			info.Error = "upstream body: " + err.Error()
		}
		b.logger.LogAttrs(r.Context(), slog.LevelDebug, "pylon: upstream body error",
			slog.String("backend", b.name), slog.String("target", target.String()), slog.String("error", err.Error()))
		if isGRPC {
			// A gRPC client understands a status in the trailers
			// better than a reset stream (backend_grpc.go).
			o, err = grpcBodyError(w, r, info, err)
			return o, false, err
		}
		return outcomeFailure, true, err
	}
	for k, vv := range res.Trailer {
		dst[http.TrailerPrefix+k] = vv
	}
	if isGRPC {
		if code, ok := grpcStatusOf(res); ok {
			if info != nil {
				info.GRPCStatus, info.grpcStatusSet = int(code), true
			}
			if o == outcomeSuccess {
				var gerr error
				o, gerr = grpcOutcome(r.Context(), code)
				if info != nil && gerr == errClientOutcome {
					info.grpcClientDeadline = true
				}
				return o, false, gerr
			}
		}
	}
	return o, false, nil
}

var errClientWrite = errors.New("pylon: write to client failed")

func isEventStream(h http.Header) bool {
	ct := h["Content-Type"]
	return len(ct) > 0 && strings.HasPrefix(ct[0], "text/event-stream")
}

// copyBody copies src to w through a pooled buffer, flushing after each
// write when flush is set (streams and responses of unknown length).
func copyBody(w http.ResponseWriter, src io.Reader, flush bool) error {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	var rc *http.ResponseController
	if flush {
		rc = http.NewResponseController(w)
	}
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return errClientWrite
			}
			if rc != nil {
				if err := rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
					return errClientWrite
				}
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

func drainClose(rc io.ReadCloser) {
	_, _ = io.CopyN(io.Discard, rc, 4<<10)
	rc.Close()
}

// reqBody wraps a request body for the transport: Close does not close the
// client's body (the server does, after the handler), and the first read
// error is kept so an over-limit body is told apart from an
// upstream failure. A buffered body can be replayed.
type reqBody struct {
	rc  io.ReadCloser // the client's body; never nil unless buf is set
	buf []byte        // non-nil when buffered (empty for an empty body)
	off int
	// The first read error; under errMu, for the transport may still be
	// reading (on a goroutine of its own) when RoundTrip has returned.
	errMu sync.Mutex
	err   error

	// A gRPC call's body, whose length is not known ahead, is recorded as
	// it is sent, up to recMax bytes, so that a call refused with
	// UNAVAILABLE can be sent again (see recorded).
	recMax  int
	rec     []byte
	recOver bool        // longer than recMax: not replayable
	recEOF  atomic.Bool // the transport read it to its end
}

// recorded reports whether the body was recorded whole: the transport read
// it to EOF within recMax, so it reads it no more and rec is stable.
func (b *reqBody) recorded() bool {
	return b != nil && b.recMax > 0 && b.recEOF.Load() && !b.recOver
}

// replayable reports whether a request with body b may be sent again: it has
// none, it is buffered, or it was recorded whole.
func (b *reqBody) replayable() bool {
	return b == nil || b.buf != nil || b.recorded()
}

// replay returns a fresh reader of b's buffered bytes, or of its recording
// (a gRPC call's body, read whole), for another attempt. Its buf is never
// nil, even for an empty body, so that it never reads from a source: it
// has none.
func (b *reqBody) replay() *reqBody {
	buf := b.buf
	if buf == nil {
		buf = b.rec
	}
	if buf == nil {
		buf = []byte{} // an empty body, sent again as empty
	}
	return &reqBody{buf: buf}
}

func (b *reqBody) Read(p []byte) (int, error) {
	if b.buf != nil {
		if b.off >= len(b.buf) {
			return 0, io.EOF
		}
		n := copy(p, b.buf[b.off:])
		b.off += n
		return n, nil
	}
	n, err := b.rc.Read(p)
	if b.recMax > 0 && !b.recOver {
		if len(b.rec)+n > b.recMax {
			b.recOver, b.rec = true, nil
		} else {
			b.rec = append(b.rec, p[:n]...)
		}
	}
	if err != nil {
		b.errMu.Lock()
		if b.err == nil {
			b.err = err
			if err == io.EOF && b.recMax > 0 {
				b.recEOF.Store(true)
			}
		}
		b.errMu.Unlock()
	}
	return n, err
}

// readErr returns the first error reading the client's body, if any yet;
// nil for a nil b.
func (b *reqBody) readErr() error {
	if b == nil {
		return nil
	}
	b.errMu.Lock()
	defer b.errMu.Unlock()
	return b.err
}

func (b *reqBody) Close() error { return nil }
