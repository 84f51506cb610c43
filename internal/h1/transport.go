// Package h1 is Pylon's HTTP/1.1 upstream transport: an http.RoundTripper
// that writes each request and reads its response on the caller's
// goroutine, over connections pooled per target.
//
// It parses nothing itself: requests are written by [http.Request.Write]
// and responses read by [http.ReadResponse], whose body readers handle
// Content-Length, chunked encoding and trailers. What it adds is the
// connection's life: the pool (idle and total limits, idle timeout, a check
// for connections the upstream closed while idle), deadlines and
// cancellation, a request body written on a goroutine of its own while the
// response is read (so that an early answer stops it), Expect:
// 100-continue, 1xx responses, and 101 upgrades handed over to the caller.
//
// A connection goes back to the pool only when its request was written
// whole, its response read to the end, neither side asked to close, the
// request was not cancelled and no byte is left unread: nothing pooled can
// deliver a stale response.
//
// It also holds the server side's lean loop, [Server]: HTTP/1.1 requests
// read by [http.ReadRequest] and answered by net/http's rules on a
// goroutine per connection, everything else handed to an *http.Server.
package h1

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"time"
)

// Options configures a [Transport]. Every zero value is a usable default.
type Options struct {
	// DialContext dials TCP connections. Nil means a net.Dialer with
	// DialTimeout and a 30s keep-alive.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// DialTimeout bounds a TCP connect. Zero means 5s.
	DialTimeout time.Duration
	// TLSClientConfig is the base TLS configuration for https targets; it
	// is cloned. Nil means the defaults. A ClientSessionCache is added
	// when it has none, so that new connections resume sessions.
	TLSClientConfig *tls.Config
	// TLSHandshakeTimeout bounds a TLS handshake. Zero means 10s.
	TLSHandshakeTimeout time.Duration
	// HTTP2, when set, is offered to https targets in ALPN next to
	// HTTP/1.1; a target that picks "h2" is from then on sent its requests
	// through HTTP2 (the standard transport). Nil means https targets are
	// offered HTTP/1.1 only.
	HTTP2 http.RoundTripper
	// ResponseHeaderTimeout bounds the wait for response headers once the
	// request is written whole. Zero means no limit but the request's
	// context.
	ResponseHeaderTimeout time.Duration
	// ExpectContinueTimeout is how long a request with "Expect:
	// 100-continue" waits for the 100 before its body is sent anyway. Zero
	// means 1s.
	ExpectContinueTimeout time.Duration
	// IdleTimeout is how long a connection stays in the pool unused. Zero
	// means 90s.
	IdleTimeout time.Duration
	// MaxIdlePerHost is the number of idle connections kept per target.
	// Zero means 256.
	MaxIdlePerHost int
	// MaxConnsPerHost limits the connections open to a target, in use or
	// idle. Zero means no limit.
	MaxConnsPerHost int
	// MaxConnWait bounds the wait for a connection when MaxConnsPerHost are
	// all in use; then RoundTrip fails with ErrPoolExhausted. Zero means
	// DialTimeout.
	MaxConnWait time.Duration
	// MaxResponseHeaderBytes limits the size of a response's header
	// section. Zero means 1 MiB.
	MaxResponseHeaderBytes int64
}

// ErrPoolExhausted is returned (inside a *net.OpError whose Op is "dial",
// since nothing was sent) when every connection allowed to a target stayed
// busy for MaxConnWait.
var ErrPoolExhausted = errors.New("h1: all connections to the target are busy")

// Transport is an HTTP/1.1 http.RoundTripper. It is safe for concurrent use;
// its zero value is not usable, build it with New.
type Transport struct {
	opts  Options
	dial  func(ctx context.Context, network, addr string) (net.Conn, error)
	tls   *tls.Config
	hosts sync.Map // hostKey -> *hostPool
	h2    sync.Map // hostKey -> struct{}: https targets that chose HTTP/2
}

type hostKey struct{ scheme, host string }

// New returns a Transport with the options o.
func New(o Options) *Transport {
	if o.DialTimeout <= 0 {
		o.DialTimeout = 5 * time.Second
	}
	if o.TLSHandshakeTimeout <= 0 {
		o.TLSHandshakeTimeout = 10 * time.Second
	}
	if o.ExpectContinueTimeout <= 0 {
		o.ExpectContinueTimeout = time.Second
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 90 * time.Second
	}
	if o.MaxIdlePerHost <= 0 {
		o.MaxIdlePerHost = 256
	}
	if o.MaxConnWait <= 0 {
		o.MaxConnWait = o.DialTimeout
	}
	if o.MaxResponseHeaderBytes <= 0 {
		o.MaxResponseHeaderBytes = 1 << 20
	}
	t := &Transport{opts: o, dial: o.DialContext}
	if t.dial == nil {
		t.dial = (&net.Dialer{Timeout: o.DialTimeout, KeepAlive: 30 * time.Second}).DialContext
	}
	if o.TLSClientConfig != nil {
		t.tls = o.TLSClientConfig.Clone()
	} else {
		t.tls = &tls.Config{}
	}
	if t.tls.ClientSessionCache == nil {
		t.tls.ClientSessionCache = tls.NewLRUClientSessionCache(0)
	}
	t.tls.NextProtos = []string{"http/1.1"}
	if o.HTTP2 != nil {
		t.tls.NextProtos = []string{"h2", "http/1.1"}
	}
	return t
}

// TLSConfig returns the configuration https connections are made with, so
// that a companion HTTP/2 transport can share its session cache.
func (t *Transport) TLSConfig() *tls.Config { return t.tls }

var (
	errNoURL     = errors.New("h1: request has no URL")
	errScheme    = errors.New("h1: unsupported URL scheme")
	errUseHTTP2  = errors.New("h1: target negotiated HTTP/2")
	errAbort     = errors.New("h1: request body write stopped")
	errTooMany1x = errors.New("h1: too many 1xx responses")
)

// RoundTrip sends req and returns the upstream's response. The request's
// body is always closed. A request that fails on a reused connection before
// any byte of it was written (or, for a body-less idempotent request, before
// any byte of the answer arrived) is sent once more on a fresh connection.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	return t.RoundTripInterim(req, nil)
}

// RoundTripInterim is RoundTrip relaying the interim responses it reads to
// w (see Interim), on the caller's goroutine, before it returns; a nil w
// relays nothing. A request that goes to the HTTP/2 transport relays them
// through a ClientTrace (WithInterim).
func (t *Transport) RoundTripInterim(req *http.Request, w Interim) (*http.Response, error) {
	u := req.URL
	if u == nil {
		closeBody(req)
		return nil, errNoURL
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		closeBody(req)
		return nil, errScheme
	}
	if err := checkRequest(req); err != nil {
		closeBody(req)
		return nil, err
	}
	key := hostKey{u.Scheme, u.Host}
	if t.opts.HTTP2 != nil && u.Scheme == "https" {
		if _, ok := t.h2.Load(key); ok {
			return t.roundTripH2(req, w)
		}
	}
	hp := t.pool(key)
	ctx := req.Context()
	trace := httptrace.ContextClientTrace(ctx)
	for try := 0; ; try++ {
		c, err := hp.get(ctx, trace, try > 0)
		if err == errUseHTTP2 {
			t.h2.Store(key, struct{}{})
			return t.roundTripH2(req, w)
		}
		if err != nil {
			closeBody(req)
			return nil, err
		}
		res, err := c.roundTrip(req, trace, w)
		if err == nil {
			return res, nil
		}
		var re retryableError
		if errors.As(err, &re) {
			if try == 0 && ctx.Err() == nil {
				continue // the request's body, if any, was not touched
			}
			err = re.err
		}
		closeBody(req)
		return nil, err
	}
}

// roundTripH2 sends req on the HTTP/2 transport, relaying its interim
// responses to w.
func (t *Transport) roundTripH2(req *http.Request, w Interim) (*http.Response, error) {
	if w == nil {
		return t.opts.HTTP2.RoundTrip(req)
	}
	req, stop := WithInterim(w, req)
	defer stop()
	return t.opts.HTTP2.RoundTrip(req)
}

// retryableError is a failure on a reused connection that the upstream
// cannot have acted on.
type retryableError struct{ err error }

func (e retryableError) Error() string { return e.err.Error() }
func (e retryableError) Unwrap() error { return e.err }

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

func (t *Transport) pool(key hostKey) *hostPool {
	if v, ok := t.hosts.Load(key); ok {
		return v.(*hostPool)
	}
	addr := key.host
	if _, _, err := net.SplitHostPort(addr); err != nil {
		port := "80"
		if key.scheme == "https" {
			port = "443"
		}
		addr = net.JoinHostPort(strings.Trim(addr, "[]"), port)
	}
	hp := &hostPool{t: t, addr: addr, https: key.scheme == "https"}
	if hp.https {
		hp.tls = t.tls.Clone()
		if hp.tls.ServerName == "" {
			host, _, _ := net.SplitHostPort(addr)
			hp.tls.ServerName = host
		}
	}
	v, _ := t.hosts.LoadOrStore(key, hp)
	return v.(*hostPool)
}

// CloseIdleConnectionsTo closes the idle connections to scheme://host
// and forgets its pool (a removed target leaves nothing behind):
// connections in use are closed when their exchange ends. It reports false,
// closing nothing, when the host negotiated HTTP/2, whose connections are
// Options.HTTP2's.
func (t *Transport) CloseIdleConnectionsTo(scheme, host string) bool {
	key := hostKey{scheme, host}
	if _, ok := t.h2.LoadAndDelete(key); ok {
		return false
	}
	if v, ok := t.hosts.LoadAndDelete(key); ok {
		v.(*hostPool).retire()
	}
	return true
}

// CloseIdleConnections closes the pooled connections that are not in use.
// Connections in use are closed when their exchange ends.
func (t *Transport) CloseIdleConnections() {
	t.hosts.Range(func(_, v any) bool {
		v.(*hostPool).closeIdle()
		return true
	})
}
