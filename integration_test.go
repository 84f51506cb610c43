package pylon_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/middleware"
)

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) lines() []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(s.b.String()), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["msg"] != nil {
			out = append(out, m)
		}
	}
	return out
}

// TestDefaultChainKeepsStreamsAndUpgrades runs SSE and a WebSocket upgrade
// through a Gateway with the default middleware chain and a Backend, over
// real loopback servers, and checks the access log's story of each.
func TestDefaultChainKeepsStreamsAndUpgrades(t *testing.T) {
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/events":
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "data: one\n\n")
			w.(http.Flusher).Flush()
			<-release
			io.WriteString(w, "data: two\n\n")
		case "/ws":
			conn, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer conn.Close()
			brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
			brw.Flush()
			line, _ := brw.ReadString('\n')
			brw.WriteString("echo:" + line)
			brw.Flush()
		}
	}))
	defer up.Close()

	logs := &syncBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, nil))
	b := pylon.MustNewBackend("svc", pylon.BackendOptions{Targets: []string{up.URL}})
	defer b.Close()
	g := pylon.New(pylon.Options{})
	g.Use(middleware.RequestID, middleware.Recover(logger), middleware.AccessLog(logger))
	g.Route("GET /events").Name("events").To(b)
	g.Route("GET /ws").Name("ws").To(b)
	require.NoError(t, g.Err())
	gw := httptest.NewServer(g)
	defer gw.Close()

	res, err := http.Get(gw.URL + "/events")
	require.NoError(t, err)
	br := bufio.NewReader(res.Body)
	line, err := br.ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, "data: one\n", line, "the first event is flushed through the chain")
	close(release)
	rest, _ := io.ReadAll(br)
	res.Body.Close()
	assert.Equal(t, "\ndata: two\n\n", string(rest))
	assert.NotEmpty(t, res.Header.Get("X-Request-Id"))

	conn, err := net.Dial("tcp", strings.TrimPrefix(gw.URL, "http://"))
	require.NoError(t, err)
	io.WriteString(conn, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	cr := bufio.NewReader(conn)
	wsRes, err := http.ReadResponse(cr, nil)
	require.NoError(t, err)
	require.Equal(t, 101, wsRes.StatusCode)
	io.WriteString(conn, "hi\n")
	echo, err := cr.ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, "echo:hi\n", echo)
	conn.Close()

	// The tunnel's handler ends once both sides are closed; httptest does
	// not wait for hijacked connections, so poll for its line.
	deadline := time.Now().Add(5 * time.Second)
	for len(logs.lines()) < 2 {
		require.True(t, time.Now().Before(deadline), "the access log never recorded the tunnel")
		runtime.Gosched()
	}
	var routes []string
	for _, l := range logs.lines() {
		routes = append(routes, l["route"].(string))
		assert.NotEmpty(t, l["request_id"])
		if l["route"] == "ws" {
			assert.EqualValues(t, 101, l["status"])
		}
		if l["route"] == "events" {
			assert.EqualValues(t, 200, l["status"])
		}
	}
	assert.ElementsMatch(t, []string{"events", "ws"}, routes)
}
