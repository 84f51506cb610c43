package pylon

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// NewServer returns an *http.Server for handler with hardened defaults:
// ReadHeaderTimeout 10s (slow-header clients), IdleTimeout 120s,
// MaxHeaderBytes 64 KiB (larger headers get 431), HTTP/1.1 and, over TLS,
// HTTP/2. It sets no WriteTimeout or ReadTimeout, which would cut long
// downloads, uploads and event streams; routes bound their own time with
// Route.Timeout. Change any field before serving.
func NewServer(addr string, handler http.Handler) *http.Server {
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	return &http.Server{
		Addr:              addr,
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		Protocols:         &protocols,
	}
}

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
	// Logger receives start and stop messages. Nil means no logging.
	Logger *slog.Logger
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
// does. It returns nil after a graceful shutdown.
func RunWithOptions(ctx context.Context, srv *http.Server, opts RunOptions) error {
	if c, ok := srv.Handler.(interface{ Err() error }); ok {
		if err := c.Err(); err != nil {
			return err
		}
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
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

	errc := make(chan error, 1)
	go func() {
		var err error
		if srv.TLSConfig != nil && (len(srv.TLSConfig.Certificates) > 0 || srv.TLSConfig.GetCertificate != nil) {
			err = srv.ServeTLS(ln, "", "")
		} else {
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
	err := srv.Shutdown(dctx)
	tracker.wait(dctx)
	if err != nil {
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
