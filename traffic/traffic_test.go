package traffic

import (
	"context"
	"io"
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
