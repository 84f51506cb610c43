package h1

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http/httptrace"
	"slices"
	"sync"
	"syscall"
	"time"
)

// hostPool holds one target's connections.
type hostPool struct {
	t     *Transport
	addr  string // host:port
	https bool
	tls   *tls.Config // with ServerName, for https

	mu    sync.Mutex
	idle  []*conn       // most recently used last
	total int           // open connections, idle or in use
	freed chan struct{} // closed and cleared when a connection is freed; for waiters
	timer *time.Timer   // closes expired idle connections; nil when not armed
	gone  bool          // retired (CloseIdleConnectionsTo): connections are closed when freed
}

// conn is one upstream connection. Between exchanges it is in the pool; during
// one it belongs to that exchange alone.
type conn struct {
	hp     *hostPool
	nc     net.Conn        // TCP, or TLS over it
	tcp    net.Conn        // the TCP connection, closed to cut an exchange
	raw    syscall.RawConn // the TCP socket, for the idle check; may be nil
	br     *bufio.Reader
	bw     *bufio.Writer
	idleAt time.Time
	reused bool

	peekFn  func(fd uintptr) bool // made once, so that the idle check does not allocate
	peekBuf [1]byte
	peekRes peekResult

	// Written by the exchange's goroutines one at a time (see exchange).
	limit   int64 // bytes the reader may still take; header size limit
	written int64 // bytes written since the exchange began
	nread   int64 // bytes read since the exchange began
}

// Read reads from the network for br, within the header size limit.
func (c *conn) Read(p []byte) (int, error) {
	if c.limit <= 0 {
		return 0, errHeaderTooLarge
	}
	if int64(len(p)) > c.limit {
		p = p[:c.limit]
	}
	n, err := c.nc.Read(p)
	c.limit -= int64(n)
	c.nread += int64(n)
	return n, err
}

// Write writes to the network for bw, counting what was written.
func (c *conn) Write(p []byte) (int, error) {
	n, err := c.nc.Write(p)
	c.written += int64(n)
	return n, err
}

var errHeaderTooLarge = errors.New("h1: response headers too large")

const noLimit = 1<<63 - 1

// get returns an idle connection, or a new one; fresh forces a new one.
func (hp *hostPool) get(ctx context.Context, trace *httptrace.ClientTrace, fresh bool) (*conn, error) {
	if trace != nil && trace.GetConn != nil {
		trace.GetConn(hp.addr)
	}
	var deadline *time.Timer
	defer func() {
		if deadline != nil {
			deadline.Stop()
		}
	}()
	for {
		hp.mu.Lock()
		for !fresh && len(hp.idle) > 0 {
			c := hp.idle[len(hp.idle)-1]
			hp.idle[len(hp.idle)-1] = nil
			hp.idle = hp.idle[:len(hp.idle)-1]
			idleFor := time.Since(c.idleAt)
			if idleFor < hp.t.opts.IdleTimeout {
				hp.mu.Unlock()
				if c.usable() {
					if trace != nil && trace.GotConn != nil {
						trace.GotConn(httptrace.GotConnInfo{Conn: c.nc, Reused: true, WasIdle: true, IdleTime: idleFor})
					}
					return c, nil
				}
			} else {
				hp.mu.Unlock()
			}
			c.nc.Close()
			hp.mu.Lock()
			hp.forget()
		}
		max := hp.t.opts.MaxConnsPerHost
		if fresh && max > 0 && hp.total >= max && len(hp.idle) > 0 {
			// A retry needs a new connection: an idle one makes room.
			c := hp.idle[0]
			hp.idle = slices.Delete(hp.idle, 0, 1)
			hp.forget()
			hp.mu.Unlock()
			c.nc.Close()
			hp.mu.Lock()
		}
		if max <= 0 || hp.total < max {
			hp.total++
			hp.mu.Unlock()
			c, err := hp.dial(ctx, trace)
			if err != nil {
				hp.mu.Lock()
				hp.total--
				hp.notify()
				hp.mu.Unlock()
				return nil, err
			}
			return c, nil
		}
		// Every connection is busy: wait for one to be freed.
		if hp.freed == nil {
			hp.freed = make(chan struct{})
		}
		freed := hp.freed
		hp.mu.Unlock()
		if deadline == nil {
			deadline = time.NewTimer(hp.t.opts.MaxConnWait)
		}
		select {
		case <-freed:
		case <-deadline.C:
			return nil, &net.OpError{Op: "dial", Net: "tcp", Err: ErrPoolExhausted}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// forget stops counting c, which is counted in total but not idle, and
// wakes the requests waiting for a connection; the caller closes c after
// unlocking (a TLS close may block on its close_notify). hp.mu is held.
func (hp *hostPool) forget() {
	hp.total--
	hp.notify()
}

// notify wakes the requests waiting for a connection. hp.mu is held.
func (hp *hostPool) notify() {
	if hp.freed != nil {
		close(hp.freed)
		hp.freed = nil
	}
}

// put ends c's exchange: back to the pool when reusable, else closed.
func (hp *hostPool) put(c *conn, reusable bool) {
	hp.mu.Lock()
	if !reusable || hp.gone || len(hp.idle) >= hp.t.opts.MaxIdlePerHost {
		hp.forget()
		hp.mu.Unlock()
		c.nc.Close()
		return
	}
	defer hp.mu.Unlock()
	c.idleAt = time.Now()
	c.reused = true
	hp.idle = append(hp.idle, c)
	hp.notify()
	if hp.timer == nil {
		hp.timer = time.AfterFunc(hp.t.opts.IdleTimeout, hp.expire)
	}
}

// expire closes the idle connections past IdleTimeout, and rearms itself
// while some are left.
func (hp *hostPool) expire() {
	var expired []*conn
	defer func() { closeAll(expired) }() // after the unlock
	hp.mu.Lock()
	defer hp.mu.Unlock()
	hp.timer = nil
	now := time.Now()
	keep := hp.idle[:0]
	var next time.Duration
	for _, c := range hp.idle {
		left := hp.t.opts.IdleTimeout - now.Sub(c.idleAt)
		if left <= 0 {
			hp.forget()
			expired = append(expired, c)
			continue
		}
		if next == 0 || left < next {
			next = left
		}
		keep = append(keep, c)
	}
	clear(hp.idle[len(keep):])
	hp.idle = keep
	if len(keep) > 0 {
		hp.timer = time.AfterFunc(next, hp.expire)
	}
}

// retire closes the idle connections and makes every connection in use
// close when its exchange ends; the pool is no longer in the transport's
// map.
func (hp *hostPool) retire() {
	hp.mu.Lock()
	hp.gone = true
	hp.mu.Unlock()
	hp.closeIdle()
}

// closeAll closes connections taken out of the pool.
func closeAll(cs []*conn) {
	for _, c := range cs {
		c.nc.Close()
	}
}

func (hp *hostPool) closeIdle() {
	hp.mu.Lock()
	idle := slices.Clone(hp.idle)
	defer func() { closeAll(idle) }() // after the unlock
	defer hp.mu.Unlock()
	for range idle {
		hp.forget()
	}
	clear(hp.idle)
	hp.idle = hp.idle[:0]
	if hp.timer != nil {
		hp.timer.Stop()
		hp.timer = nil
	}
}

func (hp *hostPool) dial(ctx context.Context, trace *httptrace.ClientTrace) (*conn, error) {
	if trace != nil && trace.ConnectStart != nil {
		trace.ConnectStart("tcp", hp.addr)
	}
	nc, err := hp.t.dial(ctx, "tcp", hp.addr)
	if trace != nil && trace.ConnectDone != nil {
		trace.ConnectDone("tcp", hp.addr, err)
	}
	if err != nil {
		return nil, err
	}
	c := &conn{hp: hp, nc: nc, tcp: nc, limit: noLimit}
	if sc, ok := nc.(syscall.Conn); ok {
		c.raw, _ = sc.SyscallConn()
	}
	if hp.https {
		tc := tls.Client(nc, hp.tls)
		if trace != nil && trace.TLSHandshakeStart != nil {
			trace.TLSHandshakeStart()
		}
		hctx, cancel := context.WithTimeout(ctx, hp.t.opts.TLSHandshakeTimeout)
		err := tc.HandshakeContext(hctx)
		cancel()
		if trace != nil && trace.TLSHandshakeDone != nil {
			trace.TLSHandshakeDone(tc.ConnectionState(), err)
		}
		if err != nil {
			nc.Close()
			return nil, err
		}
		if tc.ConnectionState().NegotiatedProtocol == "h2" {
			tc.Close()
			return nil, errUseHTTP2
		}
		c.nc = tc
	}
	c.br = bufio.NewReaderSize(c, 4<<10)
	c.bw = bufio.NewWriterSize(c, 4<<10)
	if trace != nil && trace.GotConn != nil {
		trace.GotConn(httptrace.GotConnInfo{Conn: c.nc})
	}
	return c, nil
}

// usable reports whether an idle connection may be reused: the upstream has
// not closed it, and it has sent nothing since its last response.
func (c *conn) usable() bool {
	if c.br.Buffered() > 0 {
		return false
	}
	if c.raw == nil {
		return true // no cheap check; the retry rule covers a closed one
	}
	switch c.peek() {
	case peekNothing:
		return true
	case peekData:
		if tc, ok := c.nc.(*tls.Conn); ok {
			return tlsQuiet(c, tc)
		}
		return false
	}
	return false // closed or failed
}

// tlsQuiet reads what a TLS upstream sent on an idle connection: records
// that carry no data (a session ticket) leave it usable; application data
// or a close_notify do not.
func tlsQuiet(c *conn, tc *tls.Conn) bool {
	_ = tc.SetReadDeadline(time.Now().Add(time.Millisecond))
	_, err := c.br.Peek(1)
	_ = tc.SetReadDeadline(time.Time{})
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
