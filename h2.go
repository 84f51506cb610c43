package pylon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"sync"
	"time"
)

// SchemeH2C is the target URL scheme for plaintext HTTP/2 with prior
// knowledge ("h2c://10.0.0.5:50051"), what gRPC services inside a cluster
// speak. A Backend's own transport sends requests for such targets over
// HTTP/2 without TLS, reusing each connection for many concurrent streams
// (see UpstreamHTTP2); upstream they are ordinary http:// requests.
const SchemeH2C = "h2c"

// UpstreamTLS configures the TLS client side of connections to https://
// targets. The zero value verifies targets against the system roots, with
// the server name taken from each target's host, and presents no client
// certificate. Files are read once, when the Backend is built; a file that
// cannot be read or parsed fails NewBackend.
type UpstreamTLS struct {
	// RootCAs are the certificate authorities targets' certificates are
	// verified against. Nil means CAFile, or the system roots when that is
	// empty too.
	RootCAs *x509.CertPool
	// CAFile is a PEM file of certificate authorities (a private CA),
	// added to RootCAs (or, when RootCAs is nil, used instead of the
	// system roots). Empty means none.
	CAFile string
	// Certificates are client certificates presented to targets that ask
	// for one (mutual TLS). Nil means CertFile and KeyFile.
	Certificates []tls.Certificate
	// CertFile and KeyFile are a PEM client certificate and its key,
	// presented to targets that ask for one. Empty means none; set both or
	// neither.
	CertFile, KeyFile string
	// ServerName is the name targets' certificates are verified against
	// and sent in SNI, for targets addressed by IP or by a name their
	// certificate does not carry. Empty means each target's host.
	ServerName string
}

// UpstreamHTTP2 configures HTTP/2 to targets: h2c:// targets always, and
// https:// targets that offer it by ALPN. One connection carries many
// concurrent requests (streams), never more than the target allows in its
// SETTINGS_MAX_CONCURRENT_STREAMS (net/http's default is 250; grpc-go's
// is unlimited unless its MaxConcurrentStreams server option is set): a
// request that no open connection can take gets a new connection. The
// zero value is safe.
//
// net/http's transport offers no bound of its own below the target's: its
// StrictMaxConcurrentRequests has no effect on the connections
// http.Transport dials, and MaxConnsPerHost can leave an HTTP/2 request
// waiting for a connection forever, so neither is exposed here (and
// BackendOptions.MaxConnsPerTarget bounds HTTP/1.1 connections only). Bound
// a target's streams at the target, and the gateway's concurrency with a
// limit in front of the Backend.
type UpstreamHTTP2 struct {
	// PingTimeout, when positive, sends an HTTP/2 PING on a connection
	// that received no frame for this long, and closes it when the PING is
	// not answered within 15s, so that a dead target is noticed before a
	// request is sent on it. Keep it above 5 minutes for grpc-go servers
	// with their default keepalive enforcement, which close connections
	// that ping more often while idle. Zero means no pings.
	PingTimeout time.Duration
}

// tlsConfig builds the tls.Config o describes; nil when o is the zero value.
func (o UpstreamTLS) tlsConfig() (*tls.Config, error) {
	if o.RootCAs == nil && o.CAFile == "" && o.Certificates == nil && o.CertFile == "" && o.KeyFile == "" && o.ServerName == "" {
		return nil, nil
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		RootCAs:      o.RootCAs,
		Certificates: o.Certificates,
		ServerName:   o.ServerName,
	}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("TLS.CAFile: %w", err)
		}
		pool := o.RootCAs
		if pool == nil {
			pool = x509.NewCertPool()
		} else {
			pool = pool.Clone()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("TLS.CAFile %q: no PEM certificate in it", o.CAFile)
		}
		cfg.RootCAs = pool
	}
	if (o.CertFile == "") != (o.KeyFile == "") {
		return nil, errors.New("TLS.CertFile and TLS.KeyFile must be set together")
	}
	if o.Certificates == nil && o.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("TLS client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// applyUpstream sets on t what opts.TLS and opts.HTTP2 describe, and
// returns a clone of t that speaks HTTP/2 only, without TLS, for h2c://
// targets. It ignores a TLS error: newUpstreamTransport reports it first.
func applyUpstream(t *http.Transport, opts BackendOptions) *http.Transport {
	if cfg, err := opts.TLS.tlsConfig(); err == nil && cfg != nil {
		t.TLSClientConfig = cfg
	}
	t.HTTP2 = &http.HTTP2Config{SendPingTimeout: max(opts.HTTP2.PingTimeout, 0)}
	h2c := t.Clone()
	h2c.TLSClientConfig = nil
	h2c.ForceAttemptHTTP2 = false
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	h2c.Protocols = &p
	return h2c
}

// newUpstreamTransport builds the transport a Backend uses when
// BackendOptions.Transport is nil (NewTransport), after checking the
// settings NewTransport cannot report.
func newUpstreamTransport(opts BackendOptions) (*Transport, error) {
	if _, err := opts.TLS.tlsConfig(); err != nil {
		return nil, err
	}
	if opts.HTTP2.PingTimeout < 0 {
		return nil, errors.New("negative HTTP2.PingTimeout")
	}
	return NewTransport(opts), nil
}

// h2cRoundTripper sends h2c:// requests as http:// ones over its
// HTTP/2-only transport, with ResponseHeaderTimeout.
type h2cRoundTripper struct {
	t   *http.Transport
	rht time.Duration
}

func (h h2cRoundTripper) RoundTrip(r *http.Request) (*http.Response, error) {
	o := new(struct { // the request and its URL in one allocation
		req http.Request
		url url.URL
	})
	o.req = *r
	o.url = *r.URL
	o.url.Scheme = "http"
	o.req.URL = &o.url
	return headerTimeout{h.t, h.rht}.RoundTrip(&o.req)
}

// headerTimeout applies ResponseHeaderTimeout to the requests its HTTP/2
// transport sends (which has none of its own): to all but gRPC calls, whose
// response headers a unary call's server sends only once it is done, so
// that only the call's own deadline bounds them. As net/http's timer, it
// starts once the request is written whole, and stops at the response's
// headers.
type headerTimeout struct {
	rt http.RoundTripper
	d  time.Duration
}

func (h headerTimeout) RoundTrip(r *http.Request) (*http.Response, error) {
	if h.d <= 0 || IsGRPC(r) {
		return h.rt.RoundTrip(r)
	}
	ctx, cancel := context.WithCancelCause(r.Context())
	ht := &headerTimer{d: h.d, cancel: cancel}
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{WroteRequest: ht.wrote})
	res, err := h.rt.RoundTrip(r.WithContext(ctx))
	if ht.stop() {
		if err == nil {
			res.Body.Close()
		}
		cancel(nil)
		return nil, errHeaderTimeout
	}
	switch {
	case err != nil:
		cancel(nil)
	case res.StatusCode == http.StatusSwitchingProtocols:
		// The upgraded connection lives on: ctx ends with r's.
	case res.Body == http.NoBody:
		cancel(nil)
	default:
		res.Body = &cancelBody{ReadCloser: res.Body, cancel: cancel}
	}
	return res, err
}

// headerTimer is a headerTimeout's timer for one request.
type headerTimer struct {
	d      time.Duration
	cancel context.CancelCauseFunc
	mu     sync.Mutex
	t      *time.Timer
	done   bool // the round trip returned
	fired  bool
}

// wrote starts the timer once the request is written whole.
func (h *headerTimer) wrote(info httptrace.WroteRequestInfo) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.done || h.t != nil || info.Err != nil {
		return
	}
	h.t = time.AfterFunc(h.d, func() {
		h.mu.Lock()
		if h.done {
			h.mu.Unlock()
			return
		}
		h.fired = true
		h.mu.Unlock()
		h.cancel(errHeaderTimeout)
	})
}

// stop stops the timer when the round trip returns, and reports whether it
// had fired.
func (h *headerTimer) stop() (fired bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.done = true
	if h.t != nil {
		h.t.Stop()
	}
	return h.fired
}

// cancelBody ends its request's context when the body is closed.
type cancelBody struct {
	io.ReadCloser
	cancel context.CancelCauseFunc
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel(nil)
	return err
}

// errHeaderTimeout is the error of an HTTP/2 request whose response headers
// did not come within ResponseHeaderTimeout: a timeout, as net/http's own.
var errHeaderTimeout error = headerTimeoutError{}

type headerTimeoutError struct{}

func (headerTimeoutError) Error() string   { return "pylon: timeout awaiting response headers" }
func (headerTimeoutError) Timeout() bool   { return true }
func (headerTimeoutError) Temporary() bool { return true }
