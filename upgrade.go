package pylon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
)

// upgrade completes a protocol switch (WebSocket): it hijacks the client's
// connection, relays the upstream's 101 answer and then copies bytes both
// ways until either side closes. The connection is registered with the
// server's connTracker, if any, so that Run can drain it on shutdown.
//
// It returns the attempt's outcome and the error for the guard, as respond
// does: a switch the client did not ask for is the target's failure; a
// connection that cannot be hijacked says nothing about the target.
func (b *Backend) upgrade(w http.ResponseWriter, r *http.Request, res *http.Response, upType string, info *RequestInfo) (outcome, error) {
	backConn, ok := res.Body.(io.ReadWriteCloser)
	if !ok || upType == "" || !strings.EqualFold(res.Header.Get("Upgrade"), upType) {
		if ok {
			backConn.Close()
		} else {
			res.Body.Close()
		}
		b.logger.LogAttrs(r.Context(), slog.LevelWarn, "pylon: upstream switched protocols unasked",
			slog.String("backend", b.name), slog.String("upgrade", res.Header.Get("Upgrade")))
		if info != nil {
			info.Error = "unexpected protocol switch"
		}
		Error(w, r, http.StatusBadGateway, "The upstream service answered with an invalid response.")
		return outcomeFailure, errUnaskedUpgrade
	}
	defer backConn.Close()

	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		if info != nil {
			info.Error = "hijack: " + err.Error()
		}
		Error(w, r, http.StatusInternalServerError, "The connection cannot be upgraded.")
		return outcomeNeutral, errHijack
	}
	defer conn.Close()

	tr := trackerFrom(r.Context())
	if tr != nil {
		if !tr.add(conn, backConn) {
			return outcomeNeutral, context.Canceled // the server is shutting down
		}
		defer tr.remove(conn)
	}

	// Stop copying when the request's context ends (route deadline or
	// shutdown), so no goroutine outlives the request.
	stop := context.AfterFunc(r.Context(), func() {
		backConn.Close()
		conn.Close()
	})
	defer stop()

	removeHopByHop(res.Header)
	res.Header["Connection"] = []string{"Upgrade"}
	res.Header["Upgrade"] = []string{upType}
	res.Body = nil
	if err := res.Write(brw); err != nil {
		return outcomeNeutral, context.Canceled
	}
	if err := brw.Flush(); err != nil {
		return outcomeNeutral, context.Canceled
	}

	errc := make(chan error, 2)
	go spliceConn(backConn, brw, errc)  // client -> upstream (brw holds bytes already read)
	go spliceConn(conn, backConn, errc) // upstream -> client
	<-errc
	// One direction ended: close both ends so the other copy returns too.
	backConn.Close()
	conn.Close()
	<-errc
	return outcomeSuccess, nil
}

var (
	// errUnaskedUpgrade is what a Guard is told when a target switched
	// protocols unasked.
	errUnaskedUpgrade = errors.New("pylon: upstream switched protocols unasked")
	// errHijack is what a Guard is told when the client's connection could
	// not be taken over, which says nothing about the target.
	errHijack = fmt.Errorf("pylon: client connection not upgradable: %w", context.Canceled)
)

func spliceConn(dst io.Writer, src io.Reader, errc chan<- error) {
	bp := bufPool.Get().(*[]byte)
	_, err := io.CopyBuffer(dst, src, *bp)
	bufPool.Put(bp)
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	errc <- err
}

// connTracker is the server-wide state Run shares with handlers through
// the base context: whether the server is draining, and the upgraded
// connections, so that a graceful shutdown, which net/http does not extend
// to hijacked connections, can wait for them and close them at the deadline.
type connTracker struct {
	draining atomic.Bool // set when shutdown begins; readiness reads it

	mu      sync.Mutex
	conns   map[net.Conn]io.Closer
	closing bool
	idle    chan struct{} // closed and replaced when conns becomes empty
}

type trackerKey struct{}

func newConnTracker() *connTracker {
	return &connTracker{conns: make(map[net.Conn]io.Closer)}
}

func trackerFrom(ctx context.Context) *connTracker {
	t, _ := ctx.Value(trackerKey{}).(*connTracker)
	return t
}

func (t *connTracker) add(c net.Conn, back io.Closer) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closing {
		return false
	}
	t.conns[c] = back
	return true
}

func (t *connTracker) remove(c net.Conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.conns, c)
	if len(t.conns) == 0 && t.idle != nil {
		close(t.idle)
		t.idle = nil
	}
}

// wait blocks until no upgraded connection is open or ctx ends; at ctx's end
// it closes those left. New upgrades are refused from the first call.
func (t *connTracker) wait(ctx context.Context) {
	t.mu.Lock()
	t.closing = true
	if len(t.conns) == 0 {
		t.mu.Unlock()
		return
	}
	if t.idle == nil {
		t.idle = make(chan struct{})
	}
	idle := t.idle
	t.mu.Unlock()
	select {
	case <-idle:
	case <-ctx.Done():
		t.mu.Lock()
		for c, back := range t.conns {
			c.Close()
			back.Close()
		}
		t.mu.Unlock()
	}
}
