package traffic

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pylon-gateway/pylon"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func named(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) })
}

func serve(h http.Handler, r *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	return rec
}

func TestSplit(t *testing.T) {
	h := MustSplit(SplitOptions{}, Side{Name: "stable", Handler: named("stable"), Weight: 95}, Side{Name: "canary", Handler: named("canary"), Weight: 5})
	counts := map[string]int{}
	const n = 20000
	for range n {
		counts[serve(h, httptest.NewRequest("GET", "/", nil)).Body.String()]++
	}
	assert.InDelta(t, 0.05, float64(counts["canary"])/n, 0.01, "canary share")

	sticky := MustSplit(SplitOptions{Key: pylon.HashHeader("X-User")}, Side{Handler: named("a"), Weight: 1}, Side{Handler: named("b"), Weight: 1})
	seen := map[string]int{}
	for u := range 200 {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set("X-User", "user-"+strconv.Itoa(u))
		first := serve(sticky, r).Body.String()
		seen[first]++
		for range 5 {
			assert.Equal(t, first, serve(sticky, r).Body.String(), "a client stays on its side")
		}
	}
	assert.InDelta(t, 100, seen["a"], 30)

	off := MustSplit(SplitOptions{}, Side{Handler: named("a"), Weight: 1}, Side{Handler: named("b")})
	for range 100 {
		assert.Equal(t, "a", serve(off, httptest.NewRequest("GET", "/", nil)).Body.String())
	}
	for _, bad := range [][]Side{nil, {{Handler: named("a")}}, {{Weight: 1}}, {{Handler: named("a"), Weight: -1}}} {
		_, err := Split(SplitOptions{}, bad...)
		assert.Error(t, err)
	}
}

func TestFault(t *testing.T) {
	abort := MustFault(FaultOptions{AbortPercent: 100, AbortStatus: 500})(named("ok"))
	rec := serve(abort, httptest.NewRequest("GET", "/", nil))
	assert.Equal(t, 500, rec.Code)
	assert.Equal(t, pylon.ProblemContentType, rec.Header().Get("Content-Type"))

	byHeader := MustFault(FaultOptions{AbortPercent: 100, Header: "x-fault"})(named("ok"))
	assert.Equal(t, "ok", serve(byHeader, httptest.NewRequest("GET", "/", nil)).Body.String())
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("X-Fault", "1")
	assert.Equal(t, 503, serve(byHeader, r).Code)

	half := MustFault(FaultOptions{AbortPercent: 30})(named("ok"))
	aborted := 0
	for range 10000 {
		if serve(half, httptest.NewRequest("GET", "/", nil)).Code == 503 {
			aborted++
		}
	}
	assert.InDelta(t, 3000, aborted, 300)

	// A delay that the client does not wait for ends the request.
	slow := MustFault(FaultOptions{DelayPercent: 100, Delay: time.Hour})(named("ok"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan *httptest.ResponseRecorder)
	go func() { done <- serve(slow, httptest.NewRequest("GET", "/", nil).WithContext(ctx)) }()
	cancel()
	assert.Empty(t, (<-done).Body.String())

	quick := MustFault(FaultOptions{DelayPercent: 100, Delay: time.Millisecond})(named("ok"))
	assert.Equal(t, "ok", serve(quick, httptest.NewRequest("GET", "/", nil)).Body.String())

	for _, bad := range []FaultOptions{{AbortPercent: 101}, {DelayPercent: -1}, {Delay: -1}, {AbortStatus: 200}} {
		_, err := Fault(bad)
		assert.Error(t, err)
	}
	off := MustFault(FaultOptions{})(named("ok"))
	assert.Equal(t, "ok", serve(off, httptest.NewRequest("GET", "/", nil)).Body.String())
}

// shadow records what it gets and blocks until released.
type shadow struct {
	mu      sync.Mutex
	got     []string
	release chan struct{}
	entered chan struct{}
}

func (s *shadow) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	s.got = append(s.got, r.Host+" "+string(b))
	s.mu.Unlock()
	s.entered <- struct{}{}
	select {
	case <-s.release:
	case <-r.Context().Done():
	}
	w.WriteHeader(500) // discarded
	panic("shadows may panic too")
}

func TestMirror(t *testing.T) {
	sh := &shadow{release: make(chan struct{}), entered: make(chan struct{}, 8)}
	m, err := NewMirror(sh, MirrorOptions{MaxBodyBytes: 8, MaxConcurrent: 1})
	require.NoError(t, err)
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		io.WriteString(w, "primary "+string(b))
	})
	h := m.Middleware(echo)

	// The primary answers while the shadow is still busy.
	rec := serve(h, httptest.NewRequest("POST", "http://api.test/orders", strings.NewReader("hello")))
	assert.Equal(t, "primary hello", rec.Body.String())
	<-sh.entered
	// Saturated: the next one is dropped, the primary unaffected.
	rec = serve(h, httptest.NewRequest("GET", "http://api.test/", nil))
	assert.Equal(t, 200, rec.Code)
	// Too large a body: served whole, not mirrored.
	rec = serve(h, httptest.NewRequest("POST", "http://api.test/", strings.NewReader("0123456789")))
	assert.Equal(t, "primary 0123456789", rec.Body.String())
	big := httptest.NewRequest("POST", "http://api.test/", io.NopCloser(strings.NewReader("0123456789abc")))
	big.ContentLength = -1
	rec = serve(h, big)
	assert.Equal(t, "primary 0123456789abc", rec.Body.String(), "an unknown-length body over the limit is served whole")
	close(sh.release)
	m.Close()
	assert.Equal(t, MirrorStats{Mirrored: 1, Dropped: 1, TooLarge: 2}, m.Stats())
	assert.Equal(t, []string{"api.test-shadow hello"}, sh.got)

	// Sampling.
	count := &counter{}
	m2, err := NewMirror(count, MirrorOptions{Percent: 20, MaxConcurrent: 1000})
	require.NoError(t, err)
	h2 := m2.Middleware(echo)
	for range 5000 {
		serve(h2, httptest.NewRequest("GET", "/", nil))
	}
	m2.Close()
	assert.InDelta(t, 1000, m2.Stats().Mirrored, 150)

	_, err = NewMirror(nil, MirrorOptions{})
	assert.Error(t, err)
}

type counter struct{}

func (counter) ServeHTTP(http.ResponseWriter, *http.Request) {}

func TestSplitRecordsSide(t *testing.T) {
	h := MustSplit(SplitOptions{}, Side{Name: "stable", Handler: named("stable"), Weight: 1}, Side{Handler: named("side 1"), Weight: 1})
	seen := map[string]bool{}
	for range 200 {
		info := &pylon.RequestInfo{}
		r := httptest.NewRequest("GET", "/", nil)
		r = r.WithContext(pylon.NewContext(r.Context(), info))
		body := serve(h, r).Body.String()
		assert.Equal(t, body, info.Split, "RequestInfo.Split names the side that served")
		seen[info.Split] = true
	}
	assert.True(t, seen["stable"] && seen["side 1"], "both sides recorded, the unnamed one as \"side 1\": %v", seen)
	// Outside a Gateway (no RequestInfo) the split still serves.
	assert.NotEmpty(t, serve(h, httptest.NewRequest("GET", "/", nil)).Body.String())
}

// serveLoopback serves h with pylon.NewServer on a loopback port.
func serveLoopback(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := pylon.NewServer("", h)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close(); <-done })
	return "http://" + ln.Addr().String()
}

// TestMirrorStreamsChunkedUpload: a chunked HTTP/1.1 upload (no declared
// length) through a Gateway route that mirrors reaches the primary as the
// client sends it, not once the client has sent it all; the shadow gets
// the whole body after. An upload that outgrows MaxBodyBytes is served
// whole and not mirrored, and so is one the primary does not read.
func TestMirrorStreamsChunkedUpload(t *testing.T) {
	first := make(chan struct{}, 1)
	primary := serveLoopback(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		head := make([]byte, 5)
		if _, err := io.ReadFull(r.Body, head); err != nil {
			return
		}
		first <- struct{}{}
		rest, _ := io.ReadAll(r.Body)
		io.WriteString(w, "primary "+string(head)+string(rest))
	}))
	shadowGot := make(chan string, 4)
	shadowUp := serveLoopback(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		shadowGot <- string(b)
	}))
	b := pylon.MustNewBackend("primary", pylon.BackendOptions{Targets: []string{primary}})
	t.Cleanup(func() { _ = b.Close() })
	sb := pylon.MustNewBackend("shadow", pylon.BackendOptions{Targets: []string{shadowUp}})
	t.Cleanup(func() { _ = sb.Close() })
	m, err := NewMirror(sb, MirrorOptions{MaxBodyBytes: 16})
	require.NoError(t, err)
	gw := pylon.New(pylon.Options{})
	gw.Route("POST /upload").Use(m.Middleware).To(b)
	gw.Route("POST /ignore").Use(m.Middleware).Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusAccepted) // answers without reading the body
	}))
	require.NoError(t, gw.Err())
	front := serveLoopback(t, gw)

	upload := func(chunks ...string) string {
		t.Helper()
		pr, pw := io.Pipe()
		defer pw.Close()
		req, err := http.NewRequest("POST", front+"/upload", pr)
		require.NoError(t, err)
		type result struct {
			body string
			err  error
		}
		done := make(chan result, 1)
		go func() {
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				done <- result{err: err}
				return
			}
			defer res.Body.Close()
			body, err := io.ReadAll(res.Body)
			done <- result{string(body), err}
		}()
		_, err = io.WriteString(pw, chunks[0])
		require.NoError(t, err)
		select {
		case <-first:
		case <-time.After(10 * time.Second):
			pw.CloseWithError(errors.New("test gave up"))
			<-done
			t.Fatal("the primary got nothing while the upload was open: held back until the body ends")
		}
		for _, c := range chunks[1:] {
			_, err = io.WriteString(pw, c)
			require.NoError(t, err)
		}
		pw.Close()
		res := <-done
		require.NoError(t, res.err)
		return res.body
	}

	assert.Equal(t, "primary hello world", upload("hello", " world"))
	assert.Equal(t, "hello world", <-shadowGot, "the shadow gets the whole body")
	assert.Equal(t, "primary hello, a longer world", upload("hello", ", a longer", " world"), "over MaxBodyBytes: served whole")
	// A body of declared length the primary did not read is read after
	// it was served, and mirrored whole.
	res, err := http.Post(front+"/ignore", "text/plain", strings.NewReader("unread"))
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, http.StatusAccepted, res.StatusCode)
	assert.Equal(t, "unread", <-shadowGot, "a declared-length body the primary left is mirrored")
	// A streamed one is not: its client may wait for the answer before it
	// ends the stream.
	res, err = http.Post(front+"/ignore", "text/plain", io.NopCloser(strings.NewReader("streamed")))
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, http.StatusAccepted, res.StatusCode)
	m.Close()
	assert.Equal(t, MirrorStats{Mirrored: 2, TooLarge: 1, Incomplete: 1}, m.Stats(), "a streamed body the primary did not read is not mirrored")
	assert.Empty(t, shadowGot)
}

// A delay the route's deadline cuts short answers 504 (the client is still
// there), not an empty 200 recorded as a client gone.
func TestFaultDelayPastRouteDeadline(t *testing.T) {
	gw := pylon.New(pylon.Options{})
	gw.Route("/").Timeout(20 * time.Millisecond).
		Use(MustFault(FaultOptions{DelayPercent: 100, Delay: time.Hour})).Handler(named("ok"))
	require.NoError(t, gw.Err())
	info := &pylon.RequestInfo{}
	r := httptest.NewRequest("GET", "/", nil)
	r = r.WithContext(pylon.NewContext(r.Context(), info))
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, r)
	assert.Equal(t, http.StatusGatewayTimeout, w.Code)
	assert.False(t, info.ClientCanceled, "a route deadline is not a client gone")
}
