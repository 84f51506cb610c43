package h1

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"maps"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
)

// Server serves HTTP/1.1 requests from plaintext connections on a loop of
// its own, one goroutine per connection, and hands every connection it does
// not serve to an *http.Server, together with the bytes it has read.
//
// What it serves itself is the common case of a keep-alive proxy: an
// HTTP/1.1 request whose head fits in 4 KiB, with one valid Host, without
// Transfer-Encoding, Expect or Upgrade, that http.ReadRequest parses and
// whose every field net/http's server would accept. Everything else —
// HTTP/1.0, chunked request bodies, 100-continue, upgrades, CONNECT,
// "OPTIONS *", bigger heads, the h2c connection preface, requests net/http
// refuses — is served by the *http.Server as if it had accepted the
// connection itself, from the request at hand on, so that it answers (or
// refuses) exactly as it always does. The wire code is the standard
// library's (http.ReadRequest and its readers); Server writes responses
// with net/http's rules: Content-Length for bodies the handler finishes
// within 2 KiB, chunked framing otherwise, Date, sniffed Content-Type,
// HEAD, 1xx, 204 and 304 without a body, trailers, Connection: close from
// either side, unread request bodies up to 256 KiB discarded.
//
// What it saves is net/http's background read per request: a request's
// context is still cancelled when its client goes away, but the read that
// notices it starts only for a handler still running after 5 ms.
//
// The *http.Server's Handler, ErrorLog, ReadTimeout, ReadHeaderTimeout,
// WriteTimeout, IdleTimeout, ConnState, BaseContext and ConnContext apply
// to both loops, which show them one net.Conn for a connection's whole
// life (a wrapper with CloseWrite and NetConn) and report its states once
// (NewServer wraps srv.ConnState to that end).
// SetKeepAlivesEnabled is not seen by this loop.
type Server struct {
	srv     *http.Server
	handoff *handoffListener
	once    sync.Once

	shutting atomic.Bool
	mu       sync.Mutex
	conns    map[*serverConn]struct{}
	lns      map[net.Listener]struct{}
	drained  chan struct{} // closed when shutting and conns is empty
}

const (
	headBufSize     = 4 << 10
	bufferBeforeCL  = 2048      // net/http's bufferBeforeChunkingSize
	maxDiscard      = 256 << 10 // net/http's maxPostHandlerReadBytes
	clientGoneAfter = 5 * time.Millisecond
)

// NewServer returns a Server that serves srv's handler and hands what it
// does not serve to srv.
func NewServer(srv *http.Server) *Server {
	if srv.ConnState != nil {
		srv.ConnState = filterState(srv.ConnState)
	}
	if cc := srv.ConnContext; cc != nil {
		// A handed-over connection keeps the context the lean loop
		// made for it: ConnContext is called once per connection.
		srv.ConnContext = func(ctx context.Context, nc net.Conn) context.Context {
			if hc, ok := nc.(*handedConn); ok && hc.ctx != nil {
				return hc.ctx
			}
			return cc(ctx, nc)
		}
	}
	return &Server{
		srv:     srv,
		handoff: &handoffListener{ch: make(chan net.Conn), done: make(chan struct{})},
		conns:   make(map[*serverConn]struct{}),
		lns:     make(map[net.Listener]struct{}),
		drained: make(chan struct{}),
	}
}

// ErrServerClosed is http.ErrServerClosed, returned by Serve after
// Shutdown or Close.
var ErrServerClosed = http.ErrServerClosed

// Serve accepts connections on ln until Shutdown or Close, and returns
// ErrServerClosed then; any other error from Accept but a temporary one ends
// it too. The *http.Server serves the connections handed to it for as long.
func (s *Server) Serve(ln net.Listener) error {
	s.once.Do(func() {
		s.handoff.addr = ln.Addr()
		go func() {
			if err := s.srv.Serve(s.handoff); !errors.Is(err, http.ErrServerClosed) {
				s.logf("h1: the server for handed-over connections stopped: %v", err)
			}
			s.handoff.Close() // a connection handed over from now on is closed
		}()
	})
	s.mu.Lock()
	if s.shutting.Load() {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.lns[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.lns, ln)
		s.mu.Unlock()
	}()

	base := context.Background()
	if s.srv.BaseContext != nil {
		if base = s.srv.BaseContext(ln); base == nil {
			panic("BaseContext returned a nil context")
		}
	}
	base = context.WithValue(base, http.ServerContextKey, s.srv)
	var backoff time.Duration
	for {
		rwc, err := ln.Accept()
		if err != nil {
			if s.shutting.Load() {
				return ErrServerClosed
			}
			if t, ok := err.(interface{ Temporary() bool }); ok && t.Temporary() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.logf("h1: accept error: %v; retrying in %v", err, backoff)
				t := time.NewTimer(backoff)
				<-t.C
				continue
			}
			return err
		}
		backoff = 0
		c := s.newConn(rwc)
		ctx := base
		if s.srv.ConnContext != nil {
			if ctx = s.srv.ConnContext(ctx, c.nc); ctx == nil {
				panic("ConnContext returned nil")
			}
			c.nc.ctx = ctx
		}
		if !s.track(c) {
			rwc.Close()
			return ErrServerClosed
		}
		c.setState(http.StateNew)
		go c.serve(ctx)
	}
}

// Shutdown stops accepting, closes idle connections, lets the requests in
// flight finish (their responses say Connection: close) and waits for them
// and for the *http.Server's own Shutdown, or for ctx to end, whose error
// it then returns.
func (s *Server) Shutdown(ctx context.Context) error {
	s.beginShutdown()
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Shutdown(ctx) }()
	var err error
	select {
	case <-s.drained:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if herr := <-errc; err == nil {
		err = herr
	}
	return err
}

// Close closes the listeners and every connection at once, and the
// *http.Server with them.
func (s *Server) Close() error {
	s.beginShutdown()
	s.mu.Lock()
	for c := range s.conns {
		c.rwc.Close()
	}
	s.mu.Unlock()
	return s.srv.Close()
}

func (s *Server) beginShutdown() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutting.Swap(true) {
		return
	}
	for ln := range s.lns {
		ln.Close()
	}
	s.handoff.Close()
	for c := range s.conns {
		if c.state.CompareAndSwap(stateIdle, stateClosing) {
			c.rwc.Close()
		}
	}
	if len(s.conns) == 0 {
		close(s.drained)
	}
}

func (s *Server) track(c *serverConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutting.Load() {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c *serverConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.conns[c]; !ok {
		return
	}
	delete(s.conns, c)
	if s.shutting.Load() && len(s.conns) == 0 {
		close(s.drained)
	}
}

func (s *Server) logf(format string, args ...any) {
	if s.srv.ErrorLog != nil {
		s.srv.ErrorLog.Printf(format, args...)
	} else {
		log.Printf(format, args...)
	}
}

func (s *Server) handler() http.Handler {
	if s.srv.Handler != nil {
		return s.srv.Handler
	}
	return http.DefaultServeMux
}

// handoffListener is the listener the *http.Server serves: it accepts the
// connections the lean loop hands over.
type handoffListener struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
	addr net.Addr
}

func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *handoffListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *handoffListener) Addr() net.Addr { return l.addr }

// handedConn is the net.Conn the *http.Server's hooks (ConnContext,
// ConnState) and a Hijack see for a connection of the lean loop, the same
// value for its whole life, on either loop. Once handed over, its reads
// return the bytes the lean loop already took first.
type handedConn struct {
	net.Conn
	head []byte
	br   *bufio.Reader

	// After a hand-over the *http.Server reports the connection as new
	// and active again; the lean loop has reported both already.
	skipNew, skipActive atomic.Bool
	ctx                 context.Context // from srv.ConnContext, if any
}

func (c *handedConn) Read(p []byte) (int, error) {
	if len(c.head) > 0 {
		n := copy(p, c.head)
		c.head = c.head[n:]
		return n, nil
	}
	if c.br != nil {
		if c.br.Buffered() > 0 {
			return c.br.Read(p)
		}
		c.br = nil
	}
	return c.Conn.Read(p)
}

// CloseWrite half-closes a TCP connection, as net/http does before it
// closes one it refused a request on, so that its answer is not lost to a
// reset.
func (c *handedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// NetConn returns the connection it wraps.
func (c *handedConn) NetConn() net.Conn { return c.Conn }

// filterState wraps an *http.Server's ConnState so that a handed-over
// connection is not reported new and active twice.
func filterState(hook func(net.Conn, http.ConnState)) func(net.Conn, http.ConnState) {
	return func(nc net.Conn, st http.ConnState) {
		if hc, ok := nc.(*handedConn); ok {
			switch {
			case st == http.StateNew && hc.skipNew.Swap(false):
				return
			case st == http.StateActive && hc.skipActive.Swap(false):
				return
			}
			hc.skipActive.Store(false)
		}
		hook(nc, st)
	}
}

// Connection states for Shutdown: an idle connection may be closed by it.
const (
	stateActive int32 = iota
	stateIdle
	stateClosing
	stateHijacked
)

// serverConn is one client connection on the lean loop.
type serverConn struct {
	s      *Server
	rwc    net.Conn    // the connection, for the loop's reads and writes
	nc     *handedConn // the same, for hooks, a Hijack and a hand-over
	remote string
	src    connSource
	br     *bufio.Reader
	out    connWriter
	bw     *bufio.Writer
	head   []byte // a copy of the current request's head, for a hand-over
	hdr    []byte // the response head being built
	body   []byte // response body held back before the head is sent
	state  atomic.Int32

	// Client-gone detection for the request in flight: a timer that,
	// when a handler is still running, starts a read of the connection;
	// its end (EOF, reset) cancels the request.
	mu       sync.Mutex
	timer    *time.Timer
	active   *response // the request in flight, which may be armed
	cur      *response // the armed request: the one the watch reads for
	watching bool
	aborting bool
	watchEnd chan struct{}
	gone     bool // the watch saw the client go away

	afterPost bool // the last request was a POST
	dateSec   int64
	dateBuf   []byte
}

// connSource is what the connection's reader reads: the byte the watch
// read took, if any, then the connection.
type connSource struct {
	c       net.Conn
	b       [1]byte
	pending bool
}

func (s *connSource) Read(p []byte) (int, error) {
	if s.pending && len(p) > 0 {
		p[0] = s.b[0]
		s.pending = false
		return 1, nil
	}
	return s.c.Read(p)
}

// connWriter records the first write error and cancels the request in
// flight with it, as net/http does.
type connWriter struct {
	c      net.Conn
	err    error
	cancel context.CancelFunc
}

func (w *connWriter) Write(p []byte) (int, error) {
	n, err := w.c.Write(p)
	if err != nil && w.err == nil {
		w.err = err
		if w.cancel != nil {
			w.cancel()
		}
	}
	return n, err
}

func (s *Server) newConn(rwc net.Conn) *serverConn {
	c := &serverConn{s: s, rwc: rwc, nc: &handedConn{Conn: rwc}, remote: rwc.RemoteAddr().String()}
	c.src.c = rwc
	c.out.c = rwc
	c.br = bufio.NewReaderSize(&c.src, headBufSize)
	c.bw = bufio.NewWriterSize(&c.out, 4<<10)
	c.state.Store(stateActive)
	return c
}

func (c *serverConn) setState(st http.ConnState) {
	if h := c.s.srv.ConnState; h != nil {
		h(c.nc, st)
	}
}

// headerTimeout is the deadline of reading a request head: net/http's
// ReadHeaderTimeout, else ReadTimeout.
func (c *serverConn) headerTimeout() time.Duration {
	if d := c.s.srv.ReadHeaderTimeout; d > 0 {
		return d
	}
	return c.s.srv.ReadTimeout
}

func (c *serverConn) idleTimeout() time.Duration {
	if d := c.s.srv.IdleTimeout; d > 0 {
		return d
	}
	return c.s.srv.ReadTimeout
}

func (c *serverConn) serve(ctx context.Context) {
	ctx = context.WithValue(ctx, http.LocalAddrContextKey, c.rwc.LocalAddr())
	handedOver := false
	defer func() {
		if p := recover(); p != nil && p != http.ErrAbortHandler {
			buf := make([]byte, 64<<10)
			buf = buf[:runtime.Stack(buf, false)]
			c.s.logf("http: panic serving %v: %v\n%s", c.remote, p, buf)
		}
		c.stopWatch()
		if c.state.Load() != stateHijacked && !handedOver {
			c.rwc.Close()
			c.setState(http.StateClosed)
		}
		c.s.untrack(c)
	}()
	for first := true; ; first = false {
		if !first {
			c.setState(http.StateIdle)
		}
		if c.br.Buffered() == 0 {
			// Wait for the next request: IdleTimeout between
			// requests, the header timeout for the first.
			d := c.idleTimeout()
			if first {
				d = c.headerTimeout()
			}
			if d > 0 {
				_ = c.rwc.SetReadDeadline(time.Now().Add(d))
			} else if !first {
				_ = c.rwc.SetReadDeadline(time.Time{})
			}
			c.state.Store(stateIdle)
			if c.s.shutting.Load() {
				return
			}
			_, err := c.br.Peek(1)
			if !c.state.CompareAndSwap(stateIdle, stateActive) || err != nil {
				return // closed by Shutdown, timed out or gone
			}
		} else if c.s.shutting.Load() && !first {
			return
		}
		c.setState(http.StateActive)
		if c.afterPost {
			// RFC 9112 §2.2 tolerance for old clients that end a POST
			// body with a CRLF, as net/http has it.
			peek, _ := c.br.Peek(4)
			_, _ = c.br.Discard(numLeadingCRorLF(peek))
		}
		start := time.Now()
		var headDeadline time.Time // between requests the idle timeout applies until the head must be waited for
		if d := c.headerTimeout(); d > 0 && !first {
			headDeadline = start.Add(d)
		}
		n, err := c.peekHead(headDeadline)
		if err != nil && c.br.Buffered() == 0 {
			return // as net/http: a silent close
		}
		if err != nil || n < 0 {
			// A head too big for the loop's buffer, or one cut short
			// by a timeout or the client: net/http answers it (400
			// for a request line cut short, a silent close else).
			c.handOver(nil)
			handedOver = true
			return
		}
		buf, _ := c.br.Peek(n)
		c.head = append(c.head[:0], buf...)
		before := c.br.Buffered()
		req, err := http.ReadRequest(c.br)
		read := before - c.br.Buffered()
		if read > n || err == nil && read != n {
			return // cannot happen: textproto reads lines to the empty one
		}
		if err != nil && !first && read+c.br.Buffered() < len(prefacePrefix) {
			// net/http would wait for as many bytes as the h2c
			// preface's first line before reading this on a new
			// connection; on a kept-alive one it answers at once.
			_, _ = io.WriteString(c.rwc, badRequest)
			return
		}
		if err != nil || !leanable(req) {
			c.handOver(c.head[:read])
			handedOver = true
			return
		}
		if !c.serveRequest(ctx, req, start) {
			return
		}
	}
}

const (
	prefacePrefix = "PRI * HTTP/2.0"
	badRequest    = "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n400 Bad Request"
)

func numLeadingCRorLF(v []byte) (n int) {
	for _, b := range v {
		if b != '\r' && b != '\n' {
			break
		}
		n++
	}
	return n
}

// peekHead waits until a whole request head (through the empty line that
// ends it) is in the reader's buffer and returns its length, or -1 when
// the buffer filled without one. A non-zero deadline is armed before the
// first wait, so a head that came whole costs no deadline.
func (c *serverConn) peekHead(deadline time.Time) (int, error) {
	for {
		buf, _ := c.br.Peek(c.br.Buffered())
		if i := headEnd(buf); i >= 0 {
			return i, nil
		}
		if len(buf) >= c.br.Size() {
			return -1, nil
		}
		if !deadline.IsZero() {
			_ = c.rwc.SetReadDeadline(deadline)
			deadline = time.Time{}
		}
		if _, err := c.br.Peek(len(buf) + 1); err != nil {
			return 0, err
		}
	}
}

// headEnd returns the length of the head at the start of b: through the
// first empty line (CRLF or a bare LF, as textproto reads lines), or -1.
func headEnd(b []byte) int {
	for i := 0; ; {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return -1
		}
		i += j + 1
		switch {
		case i < len(b) && b[i] == '\n':
			return i + 1
		case i+1 < len(b) && b[i] == '\r' && b[i+1] == '\n':
			return i + 2
		}
	}
}

// leanable reports whether the lean loop serves req: everything net/http's
// server checks beyond http.ReadRequest, and the features the loop leaves
// to net/http.
func leanable(req *http.Request) bool {
	if req.ProtoMajor != 1 || req.ProtoMinor != 1 || len(req.TransferEncoding) > 0 || req.ContentLength < 0 ||
		req.Method == http.MethodConnect || req.Method == "PRI" || req.RequestURI == "*" {
		return false
	}
	// http.ReadRequest takes Host out of the header and refuses two;
	// with an origin-form target, a Host of its own means the field was
	// there. An absolute-form target or an empty Host is net/http's to
	// judge.
	if req.URL.Host != "" || req.Host == "" || !httpguts.ValidHostHeader(req.Host) {
		return false
	}
	for k, vv := range req.Header {
		if k == "Expect" || k == "Upgrade" || !httpguts.ValidHeaderFieldName(k) {
			return false
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return false
			}
		}
	}
	return true
}

// handOver gives the connection to the *http.Server, with head (the bytes
// of a request already taken from the reader) and what the reader holds
// read again first.
func (c *serverConn) handOver(head []byte) {
	c.s.untrack(c)
	hc := c.nc
	hc.head, hc.br = head, c.br
	hc.skipNew.Store(true)
	hc.skipActive.Store(true)
	select {
	case c.s.handoff.ch <- hc:
	case <-c.s.handoff.done:
		c.rwc.Close()
	}
}

// serveRequest serves one request and reports whether the connection may
// carry the next.
func (c *serverConn) serveRequest(connCtx context.Context, req *http.Request, start time.Time) bool {
	c.afterPost = req.Method == http.MethodPost
	ctx, cancel := context.WithCancel(connCtx)
	defer cancel()
	*req = *req.WithContext(ctx)
	req.RemoteAddr = c.remote
	if d := c.s.srv.ReadTimeout; d > 0 {
		_ = c.rwc.SetReadDeadline(start.Add(d))
	} else {
		_ = c.rwc.SetReadDeadline(time.Time{})
	}
	if d := c.s.srv.WriteTimeout; d > 0 {
		_ = c.rwc.SetWriteDeadline(time.Now().Add(d))
	}
	w := &response{c: c, req: req, header: make(http.Header), contentLength: -1, closeAfter: req.Close, cancel: cancel}
	if req.ContentLength > 0 {
		w.reqBody.c, w.reqBody.w, w.reqBody.n = c, w, req.ContentLength
		req.Body = &w.reqBody
	} else {
		req.Body = http.NoBody
	}
	c.out.cancel = cancel
	c.startWatch(w)
	c.s.handler().ServeHTTP(w, req)
	c.stopWatch()
	if w.hijacked {
		return false
	}
	w.finish()
	c.out.cancel = nil
	return w.reusable()
}

// startWatch arms the client-gone timer for w when nothing but the
// client's going away can come on the connection: the request has no body
// left to read and nothing pipelined is buffered. A request with a body is
// armed when its body reaches its end (requestBody.read).
func (c *serverConn) startWatch(w *response) {
	c.mu.Lock()
	c.active = w
	c.mu.Unlock()
	if w.req.ContentLength == 0 {
		c.armWatch(w)
	}
}

// armWatch makes w the request the watch may read for. Only an armed
// request is ever watched, so a timer that fired late for the previous
// request cannot read a body's bytes.
func (c *serverConn) armWatch(w *response) {
	if c.br.Buffered() > 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.active != w {
		return // ended, or hijacked
	}
	c.cur = w
	if c.timer == nil {
		c.timer = time.AfterFunc(clientGoneAfter, c.watch)
	} else {
		c.timer.Reset(clientGoneAfter)
	}
}

// watch reads the connection while a handler runs; a byte is kept for
// the next request, an error but the one stopWatch causes means the
// client went away.
func (c *serverConn) watch() {
	c.mu.Lock()
	w := c.cur
	if w == nil || c.watching {
		c.mu.Unlock()
		return
	}
	c.watching = true
	c.watchEnd = make(chan struct{})
	end := c.watchEnd
	c.mu.Unlock()

	n, err := c.rwc.Read(c.src.b[:])

	c.mu.Lock()
	if n == 1 {
		c.src.pending = true
	}
	if err != nil && !(c.aborting && isTimeout(err)) {
		c.gone = true
		w.cancel()
	}
	c.watching = false
	close(end)
	c.mu.Unlock()
}

// stopWatch ends the watch of the request in flight and waits for its read
// to return.
func (c *serverConn) stopWatch() {
	c.mu.Lock()
	c.active, c.cur = nil, nil
	if c.timer != nil {
		c.timer.Stop()
	}
	if !c.watching {
		c.mu.Unlock()
		return
	}
	c.aborting = true
	end := c.watchEnd
	c.mu.Unlock()
	_ = c.rwc.SetReadDeadline(aLongTimeAgo)
	<-end
	c.mu.Lock()
	c.aborting = false
	c.mu.Unlock()
	_ = c.rwc.SetReadDeadline(time.Time{})
}

var aLongTimeAgo = time.Unix(1, 0)

// requestBody is a request's body of known length, read from the
// connection. Its lock serializes readers on other goroutines (a
// transport's body writer) with the loop's discarding of the rest.
type requestBody struct {
	c      *serverConn
	w      *response
	mu     sync.Mutex
	n      int64 // bytes left
	closed bool  // by the handler
	ended  bool  // the response is done: reads are refused
	err    error // sticky read error
}

func (b *requestBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.read(p)
}

func (b *requestBody) read(p []byte) (int, error) {
	if b.closed || b.ended {
		return 0, http.ErrBodyReadAfterClose
	}
	if b.err != nil {
		return 0, b.err
	}
	if b.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.n {
		p = p[:b.n]
	}
	n, err := b.c.br.Read(p)
	b.n -= int64(n)
	if b.n == 0 {
		b.c.armWatch(b.w)
		return n, io.EOF
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		b.err = err
	}
	return n, err
}

// Close ends the body: later reads fail. As net/http does, a rest of up to
// 256 KiB is read and discarded now so that the connection can carry the
// next request; a bigger one closes it after the response.
func (b *requestBody) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || b.ended {
		return nil
	}
	if b.n > 0 && b.n <= maxDiscard && b.err == nil {
		b.discard()
	}
	b.closed = true
	return nil
}

// discard reads the rest of the body; b.mu is held.
func (b *requestBody) discard() {
	bp := copyBufPool.Get().(*[]byte)
	for b.n > 0 && b.err == nil {
		if _, err := b.read(*bp); err != nil {
			break
		}
	}
	copyBufPool.Put(bp)
}

// response is the http.ResponseWriter of one request on the lean loop.
type response struct {
	c       *serverConn
	req     *http.Request
	header  http.Header
	reqBody requestBody
	cancel  context.CancelFunc

	status        int
	wroteHeader   bool // the final status is set and the head snapshot taken
	committed     bool // the head is in the connection's buffer
	handlerDone   bool
	hijacked      bool
	fullDuplex    bool
	chunking      bool
	closeAfter    bool
	contentLength int64 // declared, or -1
	written       int64

	// The handler's header as it was at WriteHeader, for the head.
	clVals    []string
	clPresent bool
	te        string
	teVals    []string
	conn      string
	connVals  []string
	hasDate   bool
	haveType  bool
	hasCE     bool
	trailers  []string // declared by a Trailer field
	hasPrefix bool     // a TrailerPrefix key was set by WriteHeader
}

// Header returns the response header map.
func (w *response) Header() http.Header { return w.header }

var (
	excludeNormal = map[string]bool{"Content-Length": true, "Transfer-Encoding": true, "Connection": true}
	exclude304    = map[string]bool{"Content-Length": true, "Transfer-Encoding": true, "Connection": true, "Content-Type": true}
	exclude1xx    = map[string]bool{"Content-Length": true, "Transfer-Encoding": true}
)

// WriteHeader sends a 1xx at once; a final status is noted, with a
// snapshot of the header, and sent with the first body bytes, a flush or
// the handler's end.
func (w *response) WriteHeader(code int) {
	if w.hijacked {
		w.c.s.logf("http: response.WriteHeader on hijacked connection")
		return
	}
	if w.wroteHeader {
		w.c.s.logf("http: superfluous response.WriteHeader call")
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
		bw := w.c.bw
		writeStatusLine(bw, code)
		_ = w.header.WriteSubset(bw, exclude1xx)
		bw.WriteString("\r\n")
		_ = bw.Flush()
		return
	}
	w.wroteHeader = true
	w.status = code
	h := w.header
	// net/http sends the handler's Content-Length fields as they were at
	// WriteHeader (an invalid one too, unless it chunks) and sets its own
	// only when there were none.
	w.clVals, w.clPresent = h["Content-Length"]
	if cl := h.Get("Content-Length"); cl != "" {
		if v, err := strconv.ParseInt(cl, 10, 64); err == nil && v >= 0 {
			w.contentLength = v
		} else {
			w.c.s.logf("http: invalid Content-Length of %q", cl)
			h.Del("Content-Length")
		}
	}
	w.te = h.Get("Transfer-Encoding")
	w.teVals = h["Transfer-Encoding"]
	w.conn = h.Get("Connection")
	w.connVals = h["Connection"]
	_, w.hasDate = h["Date"]
	_, w.haveType = h["Content-Type"]
	w.hasCE = h.Get("Content-Encoding") != ""
	for _, v := range h["Trailer"] {
		for f := range strings.SplitSeq(v, ",") {
			if k := http.CanonicalHeaderKey(strings.TrimSpace(f)); k != "" && httpguts.ValidTrailerHeader(k) {
				w.trailers = append(w.trailers, k)
			}
		}
	}
	ex := excludeNormal
	if code == http.StatusNotModified {
		ex = exclude304
	}
	for k := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			if !w.hasPrefix {
				// Rare: trailers set before the head; exclude them too.
				w.hasPrefix = true
				ex = maps.Clone(ex)
			}
			ex[k] = true
		}
	}
	hdr := appendWriter{&w.c.hdr}
	w.c.hdr = w.c.hdr[:0]
	_ = h.WriteSubset(hdr, ex)
}

func writeStatusLine(bw *bufio.Writer, code int) {
	bw.WriteString("HTTP/1.1 ")
	if text := http.StatusText(code); text != "" {
		bw.Write(strconv.AppendInt(bw.AvailableBuffer(), int64(code), 10))
		bw.WriteByte(' ')
		bw.WriteString(text)
		bw.WriteString("\r\n")
	} else {
		fmt.Fprintf(bw, "%03d status code %d\r\n", code, code)
	}
}

// appendWriter appends what is written to a slice.
type appendWriter struct{ b *[]byte }

func (a appendWriter) Write(p []byte) (int, error) {
	*a.b = append(*a.b, p...)
	return len(p), nil
}

func (a appendWriter) WriteString(s string) (int, error) {
	*a.b = append(*a.b, s...)
	return len(s), nil
}

func bodyAllowedForStatus(code int) bool {
	switch {
	case code >= 100 && code <= 199:
		return false
	case code == http.StatusNoContent, code == http.StatusNotModified:
		return false
	}
	return true
}

// Write sends body bytes: held back up to 2 KiB before the head is sent,
// then framed by the declared length or in chunks.
func (w *response) Write(p []byte) (int, error) { return w.write(p, "") }

// WriteString is Write for a string, without copying it first.
func (w *response) WriteString(s string) (int, error) { return w.write(nil, s) }

func (w *response) write(p []byte, s string) (int, error) {
	if w.hijacked {
		return 0, http.ErrHijacked
	}
	if w.handlerDone {
		return 0, errors.New("http: write after the handler returned")
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	n := len(p) + len(s)
	if n == 0 {
		return 0, nil
	}
	if !bodyAllowedForStatus(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	w.written += int64(n)
	if w.contentLength != -1 && w.written > w.contentLength {
		return 0, http.ErrContentLength
	}
	c := w.c
	if !w.committed && len(c.body)+n <= bufferBeforeCL {
		c.body = append(c.body, p...)
		c.body = append(c.body, s...)
		return n, nil
	}
	if !w.committed {
		w.commit(p, s)
	}
	if w.req.Method == http.MethodHead {
		return n, nil
	}
	if w.chunking {
		w.chunk(p, s)
	} else {
		if len(c.body) > 0 {
			c.bw.Write(c.body)
			c.body = c.body[:0]
		}
		if p != nil {
			c.bw.Write(p)
		} else {
			c.bw.WriteString(s)
		}
	}
	if c.out.err != nil {
		return 0, c.out.err
	}
	return n, nil
}

// chunk writes p or s in chunks as net/http's 2 KiB buffer in front of
// its chunk writer cuts them: the buffer is filled and sent whole, and a
// write at least as big as the buffer meeting an empty one is a chunk of
// its own.
func (w *response) chunk(p []byte, s string) {
	c := w.c
	for len(p)+len(s) > bufferBeforeCL-len(c.body) {
		if len(c.body) == 0 {
			w.writeChunk(p, s)
			return
		}
		room := bufferBeforeCL - len(c.body)
		if p != nil {
			c.body = append(c.body, p[:room]...)
			p = p[room:]
		} else {
			c.body = append(c.body, s[:room]...)
			s = s[room:]
		}
		w.emitChunk(c.body)
		c.body = c.body[:0]
	}
	c.body = append(c.body, p...)
	c.body = append(c.body, s...)
}

func (w *response) emitChunk(b []byte) {
	if len(b) == 0 {
		return
	}
	w.writeChunk(b, "")
}

func (w *response) writeChunk(p []byte, s string) {
	bw := w.c.bw
	bw.Write(strconv.AppendInt(bw.AvailableBuffer(), int64(len(p)+len(s)), 16))
	bw.WriteString("\r\n")
	if p != nil {
		bw.Write(p)
	} else {
		bw.WriteString(s)
	}
	bw.WriteString("\r\n")
}

// commit writes the head into the connection's buffer: the status line,
// the handler's fields as they were at WriteHeader, and the fields the
// server decides (net/http's rules, in chunkWriter.writeHeader). p or s is
// the write that made it commit, for sniffing a Content-Type.
func (w *response) commit(p []byte, s string) {
	w.committed = true
	c := w.c
	isHEAD := w.req.Method == http.MethodHead
	code := w.status
	bodyOK := bodyAllowedForStatus(code)
	trailers := len(w.trailers) > 0 || w.hasPrefix
	hasTE := w.te != ""
	autoCL := false
	if w.handlerDone && !trailers && !hasTE && bodyOK && !w.clPresent && (!isHEAD || len(c.body) > 0) {
		w.contentLength = int64(len(c.body))
		autoCL = true
	}
	hasCL := w.contentLength != -1
	if w.conn == "close" || c.s.shutting.Load() {
		w.closeAfter = true
	}
	if code == http.StatusRequestEntityTooLarge && w.req.ContentLength > 0 {
		// The body is refused (http.MaxBytesReader's answer, which
		// tells net/http to close): reading its rest is pointless.
		b := &w.reqBody
		b.mu.Lock()
		if b.n > 0 {
			w.closeAfter = true
		}
		b.mu.Unlock()
	}
	if w.req.ContentLength != 0 && !w.closeAfter {
		if w.handlerDone {
			w.discardBody(w.discardLimit())
		} else if !w.fullDuplex {
			// As net/http: once the response starts, a small rest of
			// the body is read and discarded (later reads fail) and a
			// big one closes the connection after the response; with
			// EnableFullDuplex the handler reads on.
			b := &w.reqBody
			limit := w.discardLimit()
			b.mu.Lock()
			switch {
			case b.n > limit:
				w.closeAfter = true
			case b.n > 0 && !b.closed && b.err == nil:
				b.discard()
				b.closed = true
				if b.n != 0 {
					w.closeAfter = true
				}
			}
			b.mu.Unlock()
		}
	}
	dropCL := false
	if hasCL && hasTE && w.te != "identity" {
		c.s.logf("http: WriteHeader called with both Transfer-Encoding of %q and a Content-Length of %d", w.te, w.contentLength)
		hasCL = false
		w.contentLength = -1
		dropCL = true
	}
	sendTE := false
	switch {
	case isHEAD || !bodyOK:
	case hasCL:
	case hasTE && w.te == "identity":
		w.closeAfter = true
	default:
		w.chunking = true
		sendTE = true
	}

	bw := c.bw
	writeStatusLine(bw, code)
	// The handler's fields, then the server's in net/http's order.
	bw.Write(c.hdr)
	switch {
	case !bodyOK || w.chunking || dropCL:
	case len(w.clVals) > 0:
		_ = http.Header{"Content-Length": w.clVals}.Write(bw)
	}
	if sendTE && hasTE && w.te != "chunked" {
		// net/http keeps a coding of the handler's beside its own.
		_ = http.Header{"Transfer-Encoding": w.teVals}.Write(bw)
	}
	closeField := w.closeAfter && !hasCloseToken(w.connVals)
	if len(w.connVals) > 0 && !closeField {
		_ = http.Header{"Connection": w.connVals}.Write(bw)
	}
	if !w.hasDate {
		bw.WriteString("Date: ")
		bw.Write(c.date())
		bw.WriteString("\r\n")
	}
	if autoCL && bodyOK {
		bw.WriteString("Content-Length: ")
		bw.Write(strconv.AppendInt(bw.AvailableBuffer(), w.contentLength, 10))
		bw.WriteString("\r\n")
	}
	if bodyOK && !w.haveType && !w.hasCE && !hasTE && len(c.body)+len(p)+len(s) > 0 {
		bw.WriteString("Content-Type: ")
		bw.WriteString(sniff(c.body, p, s))
		bw.WriteString("\r\n")
	}
	if closeField {
		bw.WriteString("Connection: close\r\n")
	}
	if sendTE {
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	}
	bw.WriteString("\r\n")
	if isHEAD || !bodyOK {
		c.body = c.body[:0]
	}
}

// date is the Date field's value for now, formatted once a second.
func (c *serverConn) date() []byte {
	now := time.Now()
	if sec := now.Unix(); sec != c.dateSec || c.dateBuf == nil {
		c.dateSec = sec
		c.dateBuf = now.UTC().AppendFormat(c.dateBuf[:0], http.TimeFormat)
	}
	return c.dateBuf
}

// sniff is http.DetectContentType of the first 512 bytes of body and then
// p or s.
func sniff(body, p []byte, s string) string {
	var b [512]byte
	n := copy(b[:], body)
	if p != nil {
		n += copy(b[n:], p)
	} else {
		n += copy(b[n:], s)
	}
	return http.DetectContentType(b[:n])
}

// discardLimit is the most of a request body left unread that the
// response's start discards, as net/http decides it there: its own body
// closes the connection at 256 KiB unread, a body the handler wrapped is
// read up to 256 KiB + 1 first.
func (w *response) discardLimit() int64 {
	if w.req.Body == io.ReadCloser(&w.reqBody) {
		return maxDiscard - 1
	}
	return maxDiscard
}

// discardBody reads what the handler left of the request body, up to
// maxDiscard, so that the connection can carry the next request; a bigger
// or broken rest closes it.
func (w *response) discardBody(limit int64) {
	b := &w.reqBody
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.n == 0 {
		return
	}
	if b.closed || b.n > limit || b.err != nil {
		w.closeAfter = true
		return
	}
	b.discard()
	if b.n != 0 {
		w.closeAfter = true
	}
}

var copyBufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// finish ends the response when the handler returns.
func (w *response) finish() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	w.handlerDone = true
	c := w.c
	if !w.committed {
		w.commit(nil, "")
	} else if w.req.ContentLength != 0 && !w.closeAfter {
		w.discardBody(maxDiscard) // net/http's Body.Close rule
	}
	if w.chunking {
		w.emitChunk(c.body)
		c.bw.WriteString("0\r\n")
		if t := w.finalTrailers(); t != nil {
			_ = t.Write(c.bw)
		}
		c.bw.WriteString("\r\n")
	} else if len(c.body) > 0 {
		c.bw.Write(c.body)
	}
	c.body = c.body[:0]
	_ = c.bw.Flush()
	b := &w.reqBody
	b.mu.Lock()
	b.ended = true // a late reader must not take the next request's bytes
	b.mu.Unlock()
}

func (w *response) finalTrailers() http.Header {
	var t http.Header
	for k, vv := range w.header {
		if kk, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
			if t == nil {
				t = make(http.Header)
			}
			t[kk] = vv
		}
	}
	for _, k := range w.trailers {
		for _, v := range w.header[k] {
			if t == nil {
				t = make(http.Header)
			}
			t.Add(k, v)
		}
	}
	return t
}

// reusable reports whether the connection can carry the next request.
func (w *response) reusable() bool {
	c := w.c
	if w.closeAfter || c.out.err != nil || c.gone {
		return false
	}
	if w.req.Method != http.MethodHead && w.contentLength != -1 && bodyAllowedForStatus(w.status) && w.contentLength != w.written {
		return false
	}
	if b := &w.reqBody; w.req.ContentLength != 0 {
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.n != 0 || b.err != nil {
			return false
		}
	}
	return true
}

// Flush sends what is buffered, the head first.
func (w *response) Flush() { _ = w.FlushError() }

// FlushError is Flush reporting the connection's error; the method
// http.ResponseController calls.
func (w *response) FlushError() error {
	if w.hijacked {
		return http.ErrHijacked
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	c := w.c
	if !w.committed {
		w.commit(nil, "")
	}
	if len(c.body) > 0 && w.req.Method != http.MethodHead {
		if w.chunking {
			w.emitChunk(c.body)
		} else {
			c.bw.Write(c.body)
		}
	}
	c.body = c.body[:0]
	return c.bw.Flush()
}

// Hijack hands the connection to the handler, with what is buffered on
// both sides.
func (w *response) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.hijacked {
		return nil, nil, http.ErrHijacked
	}
	if w.handlerDone {
		return nil, nil, errors.New("http: Hijack after the handler returned")
	}
	c := w.c
	c.stopWatch()
	if w.wroteHeader {
		// As net/http: the head goes out, body bytes still held back
		// do not.
		c.body = c.body[:0]
		if !w.committed {
			w.commit(nil, "")
		}
		if err := c.bw.Flush(); err != nil {
			return nil, nil, err
		}
	}
	w.hijacked = true
	c.state.Store(stateHijacked)
	_ = c.rwc.SetDeadline(time.Time{})
	c.setState(http.StateHijacked)
	c.s.untrack(c)
	return c.nc, bufio.NewReadWriter(c.br, c.bw), nil
}

// SetReadDeadline sets the connection's read deadline; the method
// http.ResponseController calls.
func (w *response) SetReadDeadline(t time.Time) error { return w.c.rwc.SetReadDeadline(t) }

// SetWriteDeadline sets the connection's write deadline.
func (w *response) SetWriteDeadline(t time.Time) error { return w.c.rwc.SetWriteDeadline(t) }

// ReadFrom copies src into the body through a pooled buffer, so that
// io.Copy finds the writer net/http's has.
func (w *response) ReadFrom(src io.Reader) (int64, error) {
	bp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bp)
	buf := *bp
	var n int64
	for {
		nr, rerr := src.Read(buf)
		if nr > 0 {
			nw, werr := w.Write(buf[:nr])
			n += int64(nw)
			if werr != nil {
				return n, werr
			}
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}

// CloseNotify returns a channel that receives a value when the request
// ends or its client goes away: the deprecated http.CloseNotifier, for
// handlers that still ask for it.
func (w *response) CloseNotify() <-chan bool {
	ch := make(chan bool, 1)
	context.AfterFunc(w.req.Context(), func() { ch <- true })
	return ch
}

// EnableFullDuplex lets the handler read the request body after it has
// started the response, as with net/http.
func (w *response) EnableFullDuplex() error {
	w.fullDuplex = true
	return nil
}
