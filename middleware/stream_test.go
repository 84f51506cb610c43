package middleware_test

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/middleware"
)

// defaultChain is the global chain the design recommends.
func defaultChain(t *testing.T) (middleware.Chain, *logBuffer) {
	logger, logs := newLogger()
	return middleware.New(
		middleware.RequestID,
		middleware.Recover(logger),
		middleware.AccessLog(logger),
		middleware.RealIP(pylon.Trust{Proxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}),
	), logs
}

func TestDefaultChainKeepsSSEFlushing(t *testing.T) {
	chain, logs := defaultChain(t)
	next := make(chan struct{})
	srv := httptest.NewServer(chain.ThenFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		rc := http.NewResponseController(w)
		for i := range 3 {
			fmt.Fprintf(w, "data: %d\n\n", i)
			if err := rc.Flush(); err != nil {
				t.Errorf("Flush through the chain: %v", err)
				return
			}
			if i < 2 {
				<-next // the client must have read event i before event i+1 is written
			}
		}
	}))
	defer srv.Close()
	res, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	br := bufio.NewReader(res.Body)
	for i := range 3 {
		line, err := br.ReadString('\n')
		if err != nil || line != fmt.Sprintf("data: %d\n", i) {
			t.Fatalf("event %d: %q, %v", i, line, err)
		}
		_, _ = br.ReadString('\n')
		if i < 2 {
			next <- struct{}{}
		}
	}
	res.Body.Close()
	srv.Close() // waits for the handler, and so for the log line
	if l := logs.lines(t); len(l) != 1 || l[0]["status"] != 200.0 {
		t.Errorf("access log %v", l)
	}
}

func TestDefaultChainKeepsUpgrades(t *testing.T) {
	chain, logs := defaultChain(t)
	served := make(chan struct{}, 1) // the chain returned, so the log line is written
	h := chain.ThenFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "echo" {
			http.Error(w, "upgrade required", http.StatusUpgradeRequired)
			return
		}
		if _, ok := w.(http.Hijacker); !ok {
			t.Error("the chain's writer lost http.Hijacker")
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("Hijack through the chain: %v", err)
			return
		}
		defer conn.Close()
		fmt.Fprint(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		_ = brw.Flush()
		line, _ := brw.ReadString('\n')
		fmt.Fprint(brw, strings.ToUpper(line))
		_ = brw.Flush()
	})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r)
		served <- struct{}{}
	}))
	defer srv.Close()

	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprint(conn, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\nX-Request-Id: ws-1\r\n\r\n")
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d, want 101", res.StatusCode)
	}
	fmt.Fprint(conn, "ping\n")
	if line, err := br.ReadString('\n'); err != nil || line != "PING\n" {
		t.Fatalf("echo %q, %v", line, err)
	}
	conn.Close()
	<-served // srv.Close does not wait for hijacked connections
	l := logs.lines(t)
	if len(l) != 1 || l[0]["status"] != 101.0 || l[0]["request_id"] != "ws-1" {
		t.Errorf("access log %v, want one line with status 101 and request_id ws-1", l)
	}
}
