package pylon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/pylon-gateway/pylon/internal/h1"
)

// NewServer returns an *http.Server for handler with hardened defaults:
// ReadHeaderTimeout 10s (slow-header clients), IdleTimeout 120s,
// MaxHeaderBytes 64 KiB (larger headers get 431), and three protocols on
// one listener: HTTP/1.1; HTTP/2 over TLS (ALPN "h2"); and, on a plaintext
// listener, HTTP/2 with prior knowledge ("h2c", what gRPC clients inside a
// cluster speak). The one setting is srv.Protocols; turn h2c off with
// srv.Protocols.SetUnencryptedHTTP2(false).
//
// h2c is on by default because it is safe to be: a plaintext HTTP/2
// connection is told apart by its connection preface ("PRI * HTTP/2.0"),
// which no HTTP/1 request can be, so it changes nothing for HTTP/1.1
// clients, and it gets the same limits as HTTP/2 over TLS (at most 250
// concurrent streams per connection, header limits, IdleTimeout). What is
// unsafe is the HTTP/1.1 "Upgrade: h2c" dance, which lets a client walk
// past a front proxy's rules ("h2c smuggling"): net/http does not
// implement it, and a Backend never forwards it, so it stays refused.
//
// It sets no WriteTimeout or ReadTimeout, which would cut long
// downloads, uploads and event streams; routes bound their own time with
// Route.Timeout. It is NewServerWithOptions with default options.
//
// The server's Handler is handler wrapped by a thin layer that adds two
// protections net/http lacks (see ServerOptions):
//
//   - Request smuggling. net/http serves an HTTP/1.1 request that carries
//     both Content-Length and Transfer-Encoding: chunked (or an obs-folded
//     Transfer-Encoding) by the chunked framing and keeps the connection
//     open, so bytes a front proxy counted as body are served as a second
//     request. RFC 9112 §6.1 requires closing the connection after such a
//     request. net/http deletes Content-Length before any handler runs, so
//     the two cases cannot be told apart from a plain chunked request, and
//     an *http.Server has no hook to see the raw header bytes of the
//     connections it accepts (ConnContext cannot replace the conn, and a
//     TLS conn must stay a *tls.Conn). Refusing them with 400 is therefore
//     not possible without also refusing every chunked request; instead the
//     server answers every HTTP/1.x request with a chunked body, and every
//     HTTP/1.0 request with a body, with Connection: close: the request is
//     served (an HTTP/1.1 one by its chunked framing; the upstream never
//     sees the Content-Length), and nothing after the body is read as
//     another request. Requests with a Content-Length alone, and HTTP/2, keep their
//     connections; a client sending chunked bodies opens a new connection
//     for the next request.
//   - Slow request bodies. Each read of a request body must receive a byte
//     within ServerOptions.BodyIdleTimeout (default 60s), however long the
//     whole upload takes; a stalled read fails with ErrBodyTimeout, which a
//     Backend answers with 408. gRPC calls over HTTP/2 get five times as
//     long (5 minutes by default, Envoy's stream idle timeout): a client or
//     bidirectional stream may rightly be silent for minutes between its
//     messages, and a call whose deadline (grpc-timeout, capped by the
//     route's Timeout) comes sooner ends at it. They get no exemption: the
//     Content-Type and grpc-timeout that would earn one are the client's to
//     choose, on any route.
//
// Change any field before serving. Replacing srv.Handler removes both
// protections; wrap the new handler with NewServerWithOptions instead.
func NewServer(addr string, handler http.Handler) *http.Server {
	return NewServerWithOptions(addr, handler, ServerOptions{})
}

// ServerOptions configures NewServerWithOptions. Every field's zero value is
// a safe default.
type ServerOptions struct {
	// BodyIdleTimeout is the longest a read of a request body waits for the
	// next bytes to arrive. It bounds each read, not the body: an upload
	// that keeps flowing is never cut, one that stalls for this long fails
	// with ErrBodyTimeout and releases its goroutine and upstream
	// connection. It is not applied while the server has a ReadTimeout,
	// which already bounds the whole request. gRPC calls over HTTP/2, whose
	// client and bidirectional streams may rightly be silent for a long
	// time, wait five times as long (see NewServer). Request streams silent
	// for longer need a longer value, or a negative one. Zero means 60s
	// (nginx's client_body_timeout); negative means no limit.
	BodyIdleTimeout time.Duration
}

// ErrBodyTimeout is the error a request body read returns, on a server from
// NewServer, when no byte arrived within ServerOptions.BodyIdleTimeout. It
// also matches os.ErrDeadlineExceeded. A Backend answers it with 408 Request
// Timeout.
var ErrBodyTimeout = errors.New("pylon: request body read timed out")

// NewServerWithOptions is NewServer with options.
func NewServerWithOptions(addr string, handler http.Handler, opts ServerOptions) *http.Server {
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	protocols.SetUnencryptedHTTP2(true)
	idle := opts.BodyIdleTimeout
	if idle == 0 {
		idle = 60 * time.Second
	}
	srv := &http.Server{
		Addr:              addr,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		Protocols:         &protocols,
	}
	srv.Handler = &guardHandler{next: handler, idle: idle, srv: srv}
	return srv
}

// grpcIdleFactor is how many times BodyIdleTimeout a gRPC call's body over
// HTTP/2 may be silent: 5 minutes for the default 60s, the stream idle
// timeout Envoy applies by default.
const grpcIdleFactor = 5

// guardHandler is the Handler NewServer installs in front of the user's.
type guardHandler struct {
	next http.Handler
	idle time.Duration // <= 0: no limit
	srv  *http.Server  // for ReadTimeout, which the user may set after NewServer
}

// Err reports the wrapped handler's configuration error, so that Run still
// refuses to serve a misconfigured Gateway.
func (h *guardHandler) Err() error {
	if c, ok := h.next.(interface{ Err() error }); ok {
		return c.Err()
	}
	return nil
}

func (h *guardHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 1 && (len(r.TransferEncoding) > 0 || r.ProtoMinor == 0 && r.ContentLength != 0) {
		// Chunked framing may have overridden a Content-Length that a
		// front proxy used (or, for HTTP/1.0, the reverse): end the
		// connection after this response, as RFC 9112 §6.1 requires.
		w.Header().Set("Connection", "close")
	}
	if h.idle > 0 && r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 && h.srv.ReadTimeout <= 0 {
		idle := h.idle
		if r.ProtoMajor >= 2 && IsGRPC(r) && idle <= math.MaxInt64/grpcIdleFactor {
			idle *= grpcIdleFactor // a stream between its messages
		}
		b := &idleBody{rc: r.Body, ctl: *http.NewResponseController(w), idle: idle}
		// Armed now, not only at the first read: net/http itself reads
		// an unread body (to discard it) before it writes the response,
		// and that read must not wait forever either.
		_ = b.ctl.SetReadDeadline(time.Now().Add(h.idle))
		r.Body = b
	}
	h.next.ServeHTTP(w, r)
}

// idleBody arms the connection's read deadline before each read of a
// request body, so that a stalled body fails instead of holding its
// goroutine forever. At EOF it clears the deadline and touches it no more:
// net/http's background read, which watches for the client going away
// while the response is written, must never time out. After any other
// error the expired deadline stays, so that net/http's discarding of the
// rest of the body fails at once and the connection is closed.
type idleBody struct {
	rc   io.ReadCloser
	ctl  http.ResponseController
	idle time.Duration
	err  error // the terminal error, once seen
}

func (b *idleBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	_ = b.ctl.SetReadDeadline(time.Now().Add(b.idle))
	n, err := b.rc.Read(p)
	if err != nil {
		if err == io.EOF {
			_ = b.ctl.SetReadDeadline(time.Time{})
		} else if errors.Is(err, os.ErrDeadlineExceeded) {
			err = fmt.Errorf("%w (%w)", ErrBodyTimeout, err)
		}
		b.err = err
	}
	return n, err
}

func (b *idleBody) Close() error { return b.rc.Close() }

// RunOptions configures RunWithOptions. Every field's zero value is a safe
// default.
type RunOptions struct {
	// Listener is served instead of listening on the server's Addr. Nil
	// means net.Listen("tcp", srv.Addr).
	Listener net.Listener
	// DrainTimeout bounds the graceful shutdown: in-flight requests and
	// upgraded (WebSocket) connections get this long to finish once ctx
	// ends; then they are closed. Zero means 30s.
	DrainTimeout time.Duration
	// DrainDelay is how long the server keeps serving, with readiness
	// answering 503 "draining", after ctx ends and before it stops
	// accepting connections, so that load balancers stop sending traffic
	// first. Zero means no delay.
	DrainDelay time.Duration
	// Logger receives start and stop messages (Info) and a drain that
	// ran out of time (Warn); net/http's own error log goes to it at
	// Debug unless srv.ErrorLog is set. Nil means slog.Default(), as
	// everywhere; pass slog.New(slog.DiscardHandler) to silence it.
	Logger *slog.Logger
	// LeanHTTP1 serves HTTP/1.1 requests on plaintext connections with
	// Pylon's own connection loop instead of net/http's: the same handler,
	// timeouts, hooks and drain, parsed by http.ReadRequest and answered
	// by net/http's rules, with 6–16 % less CPU per proxied request in the
	// load benchmark (see the README's Performance section). It leaves to srv, with the
	// bytes it has read, every connection whose request it does not serve
	// itself: HTTP/2 (h2c), HTTP/1.0, chunked request bodies,
	// Expect: 100-continue, upgrades, CONNECT, "OPTIONS *", heads over
	// 4 KiB and anything malformed, which srv answers or refuses as it
	// always does. It saves net/http's read per request that notices a
	// client going away: that read starts only for a handler still running
	// after 5 ms, so a request's context is cancelled when its client
	// leaves as before. A TLS server is served by srv alone.
	// srv.SetKeepAlivesEnabled is not seen by the lean loop.
	LeanHTTP1 bool
}

// Run serves srv until ctx ends, then shuts down gracefully. It is
// RunWithOptions with default options.
func Run(ctx context.Context, srv *http.Server) error {
	return RunWithOptions(ctx, srv, RunOptions{})
}

// RunWithOptions serves srv (over TLS when srv.TLSConfig has certificates)
// until ctx ends, then stops accepting connections and waits up to
// DrainTimeout for in-flight requests and upgraded connections to finish,
// closing those left at the deadline. It refuses to start when srv.Handler
// reports a configuration error through an Err() error method, as Gateway
// (and the Handler NewServer installs) does. It returns nil after a
// graceful shutdown. The smuggling and slow-body protections come from the
// Handler NewServer installs, not from RunWithOptions: a server built
// otherwise is served as it is.
func RunWithOptions(ctx context.Context, srv *http.Server, opts RunOptions) error {
	if c, ok := srv.Handler.(interface{ Err() error }); ok {
		if err := c.Err(); err != nil {
			return err
		}
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	drain := opts.DrainTimeout
	if drain == 0 {
		drain = 30 * time.Second
	}
	ln := opts.Listener
	if ln == nil {
		addr := srv.Addr
		if addr == "" {
			addr = ":http"
		}
		var err error
		if ln, err = net.Listen("tcp", addr); err != nil {
			return err
		}
	}

	tracker := newConnTracker()
	base := srv.BaseContext
	srv.BaseContext = func(l net.Listener) context.Context {
		c := context.Background()
		if base != nil {
			c = base(l)
		}
		return context.WithValue(c, trackerKey{}, tracker)
	}
	if srv.ErrorLog == nil {
		srv.ErrorLog = slog.NewLogLogger(logger.Handler(), slog.LevelDebug)
	}

	tls := srv.TLSConfig != nil && (len(srv.TLSConfig.Certificates) > 0 || srv.TLSConfig.GetCertificate != nil)
	var lean *h1.Server
	if opts.LeanHTTP1 && !tls {
		lean = h1.NewServer(srv)
	}
	errc := make(chan error, 1)
	go func() {
		var err error
		switch {
		case lean != nil:
			err = lean.Serve(ln)
		case tls:
			err = srv.ServeTLS(ln, "", "")
		default:
			err = srv.Serve(ln)
		}
		errc <- err
	}()
	logger.Info("pylon: serving", "addr", ln.Addr().String())

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	tracker.draining.Store(true)
	logger.Info("pylon: draining", "delay", opts.DrainDelay.String(), "timeout", drain.String())
	if opts.DrainDelay > 0 {
		t := time.NewTimer(opts.DrainDelay)
		select {
		case <-t.C:
		case err := <-errc:
			t.Stop()
			return err
		}
	}
	dctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	var err error
	if lean != nil {
		err = lean.Shutdown(dctx)
	} else {
		err = srv.Shutdown(dctx)
	}
	tracker.wait(dctx)
	if err != nil {
		if lean != nil {
			_ = lean.Close()
		}
		_ = srv.Close()
	}
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		return serr
	}
	if errors.Is(err, context.DeadlineExceeded) {
		logger.Warn("pylon: drain deadline passed; connections closed")
		return nil
	}
	return err
}
