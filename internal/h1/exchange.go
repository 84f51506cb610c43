package h1

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"time"
)

// exchange is one request and its response on one connection; it is also
// the response's Body.
//
// The caller's goroutine writes a body-less request and reads the response.
// A request body is written by a goroutine of its own (writeBody), so that
// an answer that comes before the body is all sent is read at once; the
// connection is reused only if that goroutine finished without error.
type exchange struct {
	c    *conn
	t    *Transport
	req  *http.Request
	ctx  context.Context
	res  *http.Response
	rc   io.ReadCloser // the response body http.ReadResponse made
	stop func() bool   // unregisters the cancellation hook; nil without one

	body  *bodyReader // the request body as the writer reads it; nil without one
	wdone chan error  // the writer's result

	mu         sync.Mutex
	gotHeaders bool  // the final response's headers arrived
	bodyLeft   bool  // the writer ended without reading the body: the caller closes it
	done       bool  // the connection was released
	rerr       error // what Read returns once done
}

var errBodyClosed = errors.New("h1: read on closed response body")

// roundTrip sends req on c and reads the response's headers.
// Interim responses are relayed to w when it is not nil.
func (c *conn) roundTrip(req *http.Request, trace *httptrace.ClientTrace, w Interim) (*http.Response, error) {
	t := c.hp.t
	e := &exchange{c: c, t: t, req: req, ctx: req.Context()}
	c.written, c.nread = 0, 0
	if e.ctx.Done() != nil {
		e.stop = context.AfterFunc(e.ctx, e.cancel)
	}
	if req.Body == nil || req.Body == http.NoBody {
		err := errNotSimple
		if trace == nil || (trace.WroteHeaderField == nil && trace.WroteHeaders == nil) {
			// Request.Write's other hook, WroteRequest, is called here.
			if err = writeHead(c.bw, req); err != errNotSimple {
				if err == nil {
					err = c.bw.Flush()
				}
				if trace != nil && trace.WroteRequest != nil {
					trace.WroteRequest(httptrace.WroteRequestInfo{Err: err})
				}
			}
		}
		if err == errNotSimple {
			if err = req.Write(c.bw); err == nil {
				err = c.bw.Flush()
			}
		}
		if err != nil {
			return nil, e.fail(err, false)
		}
		if d := t.opts.ResponseHeaderTimeout; d > 0 {
			_ = c.nc.SetReadDeadline(time.Now().Add(d))
		}
	} else {
		e.startBody(trace)
	}
	return e.readResponse(trace, w)
}

// cancel runs when the request's context ends: it closes the connection,
// which fails any read or write in progress. The connection is never reused.
func (e *exchange) cancel() { e.c.tcp.Close() }

// readResponse reads the final response's headers, passing over 1xx ones.
func (e *exchange) readResponse(trace *httptrace.ClientTrace, w Interim) (*http.Response, error) {
	c := e.c
	for n1xx := 0; ; n1xx++ {
		c.limit = e.t.opts.MaxResponseHeaderBytes
		if _, err := c.br.Peek(1); err != nil {
			return nil, e.fail(err, true)
		}
		if n1xx == 0 && trace != nil && trace.GotFirstResponseByte != nil {
			trace.GotFirstResponseByte()
		}
		res, err := http.ReadResponse(c.br, e.req)
		if err != nil {
			return nil, e.fail(err, true)
		}
		code := res.StatusCode
		if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
			if n1xx >= 5 {
				return nil, e.fail(errTooMany1x, true)
			}
			if code == http.StatusContinue && e.body != nil {
				e.body.proceed(true)
			}
			if trace != nil {
				if code == http.StatusContinue && trace.Got100Continue != nil {
					trace.Got100Continue()
				}
				if trace.Got1xxResponse != nil {
					if err := trace.Got1xxResponse(code, textproto.MIMEHeader(res.Header)); err != nil {
						return nil, e.fail(err, true)
					}
				}
			}
			if w != nil {
				relayInterim(w, code, res.Header)
			}
			continue
		}
		c.limit = noLimit
		if e.body != nil {
			e.body.proceed(false) // a body still waiting for a 100 is not sent
		}
		e.mu.Lock()
		e.gotHeaders = true
		left := e.bodyLeft
		e.mu.Unlock()
		if left {
			e.body.rc.Close()
		}
		if e.t.opts.ResponseHeaderTimeout > 0 {
			_ = c.nc.SetReadDeadline(time.Time{})
		}
		e.res = res
		if code == http.StatusSwitchingProtocols {
			return e.upgrade(res)
		}
		if res.Body == http.NoBody {
			e.end(true, io.EOF)
			return res, nil
		}
		e.rc = res.Body
		res.Body = e
		return res, nil
	}
}

// fail ends an exchange that got no response: the connection is closed, and
// the error says whether the request may be sent again on a fresh one.
// reading tells a failure reading the response from one writing the request.
func (e *exchange) fail(err error, reading bool) error {
	c := e.c
	if e.stop != nil {
		e.stop()
	}
	e.mu.Lock()
	e.done = true
	e.mu.Unlock()
	c.hp.put(c, false) // closes it, which ends a body write in progress
	bodyRead := false
	if e.body != nil {
		e.body.abort()
		if werr := <-e.wdone; werr != nil && e.body.readErr != nil {
			err = werr // the client's body failed, not the upstream
		}
		bodyRead = e.body.reads > 0
	}
	if cerr := e.ctx.Err(); cerr != nil {
		return cerr
	}
	if !c.reused || c.nread > 0 || isTimeout(err) {
		return err
	}
	if c.written == 0 && !bodyRead {
		return retryableError{err: err}
	}
	if reading && e.body == nil && replayable(e.req) {
		// The upstream closed a kept-alive connection as the request
		// went out, and answered nothing: an idempotent request may go
		// again.
		return retryableError{err: err}
	}
	return err
}

func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}

func replayable(r *http.Request) bool {
	switch r.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return r.Header["Idempotency-Key"] != nil || r.Header["X-Idempotency-Key"] != nil
}

// Read reads the response body. At its end the connection is released.
func (e *exchange) Read(p []byte) (int, error) {
	e.mu.Lock()
	done, rerr := e.done, e.rerr
	e.mu.Unlock()
	if done {
		return 0, rerr
	}
	n, err := e.rc.Read(p)
	if err != nil {
		if err == io.EOF {
			e.end(true, io.EOF)
		} else {
			if cerr := e.ctx.Err(); cerr != nil {
				err = cerr
			}
			e.end(false, err)
		}
	}
	return n, err
}

// Close closes the response body. Before its end, the connection is closed.
func (e *exchange) Close() error {
	e.end(false, errBodyClosed)
	return nil
}

// end releases the connection once: to the pool when ok and nothing stands
// against reuse, else closed.
func (e *exchange) end(ok bool, rerr error) {
	e.mu.Lock()
	if e.done {
		e.mu.Unlock()
		return
	}
	e.done, e.rerr = true, rerr
	e.mu.Unlock()
	c := e.c
	if e.stop != nil && !e.stop() {
		ok = false // cancelled: the connection is being closed
	}
	if e.body != nil && !(ok && e.bodyWritten()) {
		ok = false
		e.body.abort()
	}
	if ok && (e.res.Close || e.req.Close || hasClose(e.req.Header) || c.br.Buffered() > 0) {
		ok = false
	}
	c.hp.put(c, ok)
}

// bodyWritten waits a little for the body writer to finish, as it usually
// has by the time the response is read, and reports whether it succeeded.
func (e *exchange) bodyWritten() bool {
	select {
	case err := <-e.wdone:
		return err == nil
	default:
	}
	t := time.NewTimer(50 * time.Millisecond)
	defer t.Stop()
	select {
	case err := <-e.wdone:
		return err == nil
	case <-t.C:
		return false
	}
}

// hasClose reports whether h's Connection field has the close option.
func hasClose(h http.Header) bool { return hasCloseToken(h["Connection"]) }

// hasCloseToken reports whether Connection field values have the close
// option.
func hasCloseToken(vals []string) bool {
	for _, v := range vals {
		for tok := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), "close") {
				return true
			}
		}
	}
	return false
}

// startBody starts the goroutine that writes the request, body included.
func (e *exchange) startBody(trace *httptrace.ClientTrace) {
	req := e.req
	b := &bodyReader{rc: req.Body, e: e, trace: trace}
	if expectsContinue(req.Header) {
		b.cont = make(chan bool, 1)
	}
	e.body = b
	e.wdone = make(chan error, 1)
	r2 := *req
	r2.Body = b
	go e.writeBody(&r2)
}

func (e *exchange) writeBody(r2 *http.Request) {
	c, b := e.c, e.body
	err := r2.Write(c.bw)
	if err == nil {
		err = c.bw.Flush()
	}
	e.mu.Lock()
	if err == nil && !e.gotHeaders && e.t.opts.ResponseHeaderTimeout > 0 {
		_ = c.nc.SetReadDeadline(time.Now().Add(e.t.opts.ResponseHeaderTimeout))
	}
	closeIt := b.reads > 0 || e.gotHeaders
	if !closeIt {
		e.bodyLeft = true // RoundTrip may send it again, or closes it
	}
	e.mu.Unlock()
	if closeIt {
		b.rc.Close()
	}
	if b.readErr != nil {
		// The client's body failed: the upstream would wait in vain for
		// the rest of it.
		c.tcp.Close()
	}
	e.wdone <- err
}

func expectsContinue(h http.Header) bool {
	for _, v := range h["Expect"] {
		if strings.EqualFold(strings.TrimSpace(v), "100-continue") {
			return true
		}
	}
	return false
}

// bodyReader is the request body as the writer reads it: it waits for a
// 100 Continue when one is expected, stops when the exchange no longer
// wants the body, and keeps the body's own read error apart. Close is left
// to the writer, which knows whether the body may still be sent again.
type bodyReader struct {
	rc    io.ReadCloser
	e     *exchange
	trace *httptrace.ClientTrace
	cont  chan bool // Expect: 100-continue: true to send, false not to; nil otherwise

	// Used by the writer goroutine only, read by others after wdone.
	reads   int
	waited  bool
	readErr error

	stopMu  sync.Mutex
	stopped bool
}

var errNoContinue = errors.New("h1: the upstream answered before 100 Continue; body not sent")

func (b *bodyReader) Read(p []byte) (int, error) {
	if b.cont != nil && !b.waited {
		b.waited = true
		if b.trace != nil && b.trace.Wait100Continue != nil {
			b.trace.Wait100Continue()
		}
		t := time.NewTimer(b.e.t.opts.ExpectContinueTimeout)
		select {
		case ok := <-b.cont:
			t.Stop()
			if !ok {
				return 0, errNoContinue
			}
		case <-t.C:
		}
	}
	b.stopMu.Lock()
	stopped := b.stopped
	b.stopMu.Unlock()
	if stopped {
		return 0, errAbort
	}
	b.reads++
	n, err := b.rc.Read(p)
	if err != nil && err != io.EOF {
		b.readErr = err
	}
	return n, err
}

// Close is a no-op: see bodyReader.
func (b *bodyReader) Close() error { return nil }

// proceed answers a body waiting for 100 Continue; later answers are dropped.
func (b *bodyReader) proceed(ok bool) {
	if b.cont == nil {
		return
	}
	select {
	case b.cont <- ok:
	default:
	}
}

// abort stops the body: its next read fails, and a write in progress is cut
// by an immediate write deadline.
func (b *bodyReader) abort() {
	b.stopMu.Lock()
	b.stopped = true
	b.stopMu.Unlock()
	b.proceed(false)
	_ = b.e.c.nc.SetWriteDeadline(time.Unix(1, 0))
}

// upgrade hands the connection of a 101 response over to the caller, as the
// response's Body, an io.ReadWriteCloser.
func (e *exchange) upgrade(res *http.Response) (*http.Response, error) {
	if e.stop != nil && !e.stop() {
		return nil, e.fail(e.ctx.Err(), true)
	}
	e.stop = nil
	e.mu.Lock()
	e.done = true
	e.mu.Unlock()
	res.Body = &upgraded{c: e.c}
	return res, nil
}

// upgraded is a switched connection: reads start with what the response's
// reader had buffered; Close closes it and frees its place in the pool.
type upgraded struct {
	c    *conn
	once sync.Once
}

func (u *upgraded) Read(p []byte) (int, error)  { return u.c.br.Read(p) }
func (u *upgraded) Write(p []byte) (int, error) { return u.c.nc.Write(p) }

func (u *upgraded) Close() error {
	u.once.Do(func() { u.c.hp.put(u.c, false) })
	return nil
}
