package pylon

import (
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// MaxConnsPerTarget bounds the connections to a target: a request that finds
// them all busy waits up to DialTimeout, then is answered 502, and the target
// is free again once the stream that held it ends.
func TestMaxConnsPerTarget(t *testing.T) {
	release := make(chan struct{})
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stream" {
			io.WriteString(w, "s")
			w.(http.Flusher).Flush() // the gateway passes on what it has read
			<-release
		}
		io.WriteString(w, "ok")
	})
	gw := front(t, Options{}, backend(t, BackendOptions{
		Targets:           []string{up.URL},
		MaxConnsPerTarget: 1,
		DialTimeout:       50 * time.Millisecond,
	}))
	stream, err := http.Get(gw.URL + "/stream")
	require.NoError(t, err)
	require.Equal(t, 200, stream.StatusCode)

	res, err := http.Get(gw.URL + "/other")
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, http.StatusBadGateway, res.StatusCode, "no connection left for it")

	close(release)
	_, _ = io.ReadAll(stream.Body)
	stream.Body.Close()
	res, err = http.Get(gw.URL + "/other")
	require.NoError(t, err)
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	assert.Equal(t, 200, res.StatusCode)
	assert.Equal(t, "ok", string(b))
}

// The default transport is Pylon's own for http:// targets, and a user's
// Transport still wins.
func TestDefaultTransport(t *testing.T) {
	b := backend(t, BackendOptions{Targets: []string{"http://127.0.0.1:1"}})
	_, ok := b.transport.(*Transport)
	assert.True(t, ok)
	own := &http.Transport{}
	b = backend(t, BackendOptions{Targets: []string{"http://127.0.0.1:1"}, Transport: own})
	assert.Same(t, own, b.transport)
}

// closeCounter is a user transport with a CloseIdleConnections method.
type closeCounter struct {
	http.RoundTripper
	n atomic.Int32
}

func (c *closeCounter) CloseIdleConnections() { c.n.Add(1) }

// TestBackendCloseUserTransport checks that Backend.Close closes the idle
// connections of a transport the user gave when it can.
func TestBackendCloseUserTransport(t *testing.T) {
	rt := &closeCounter{RoundTripper: http.DefaultTransport}
	b, err := NewBackend("b", BackendOptions{Targets: []string{"http://127.0.0.1:1"}, Transport: rt})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if got := rt.n.Load(); got != 1 {
		t.Errorf("CloseIdleConnections called %d times, want 1", got)
	}
}
