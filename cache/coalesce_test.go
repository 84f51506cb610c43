package cache

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// stampede sends n concurrent requests through h while the origin is held,
// releases it once n-1 of them wait for the first, and returns the bodies.
func stampede(t *testing.T, c *Cache, h http.Handler, o *origin, n int, release chan struct{}) []*httptest.ResponseRecorder {
	t.Helper()
	out := make([]*httptest.ResponseRecorder, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			out[i] = get(h, "GET", "/cold")
		})
	}
	waitFor(t, "requests to queue behind the first", func() bool { return c.waiting.Load() == int64(n-1) })
	close(release)
	wg.Wait()
	return out
}

func TestCoalescingStampede(t *testing.T) {
	const n = 1000
	c := newTestCache(t, Options{Now: newClock().Now})
	o := &origin{}
	release := make(chan struct{})
	o.set(func(w http.ResponseWriter, r *http.Request) {
		<-release
		static(200, "body", "Cache-Control: max-age=60")(w, r)
	})
	res := stampede(t, c, c.Middleware(o), o, n, release)
	if got := o.calls.Load(); got != 1 {
		t.Fatalf("backend calls = %d, want 1", got)
	}
	collapsed := 0
	for i, w := range res {
		if w.Code != 200 || w.Body.String() != "body" {
			t.Fatalf("response %d: %d %q", i, w.Code, w.Body)
		}
		if strings.Contains(status(w), "collapsed") {
			collapsed++
		}
	}
	if collapsed != n-1 {
		t.Fatalf("collapsed = %d, want %d", collapsed, n-1)
	}
}

func TestCoalescingUnshareable(t *testing.T) {
	// A private response cannot be shared: every waiter fetches its own,
	// and later requests skip coalescing (pass marker).
	const n = 20
	c := newTestCache(t, Options{Now: newClock().Now})
	o := &origin{}
	release := make(chan struct{})
	o.set(func(w http.ResponseWriter, r *http.Request) {
		<-release
		static(200, "mine", "Cache-Control: private, max-age=60")(w, r)
	})
	res := stampede(t, c, c.Middleware(o), o, n, release)
	if got := o.calls.Load(); got != n {
		t.Fatalf("backend calls = %d, want %d", got, n)
	}
	for _, w := range res {
		if w.Body.String() != "mine" || strings.Contains(status(w), "collapsed") {
			t.Fatalf("got %q %q", w.Body, status(w))
		}
	}
	if e, _ := c.store.Get(context.Background(), "GET http://example.com/cold"); e == nil || e.kind != kindPass {
		t.Fatalf("no pass marker: %+v", e)
	}
}

func TestCoalescingVary(t *testing.T) {
	// Waiters whose Vary'd headers differ from the leader's are not served
	// its response.
	c := newTestCache(t, Options{Now: newClock().Now})
	o := &origin{}
	release := make(chan struct{})
	o.set(func(w http.ResponseWriter, r *http.Request) {
		<-release
		static(200, r.Header.Get("Accept-Language"), "Cache-Control: max-age=60", "Vary: Accept-Language")(w, r)
	})
	h := c.Middleware(o)
	langs := []string{"en", "fr", "en", "fr", "de", "en"}
	res := make([]*httptest.ResponseRecorder, len(langs))
	var wg sync.WaitGroup
	for i, l := range langs {
		wg.Go(func() { res[i] = get(h, "GET", "/cold", "Accept-Language: "+l) })
	}
	waitFor(t, "waiters", func() bool { return c.waiting.Load() == int64(len(langs)-1) })
	close(release)
	wg.Wait()
	for i, w := range res {
		if w.Body.String() != langs[i] {
			t.Fatalf("request for %s got %q", langs[i], w.Body)
		}
	}
	if got := o.calls.Load(); got != 3 {
		t.Fatalf("backend calls = %d, want 3 (one per language)", got)
	}
}

func TestCoalescingBackendError(t *testing.T) {
	// When the first fetch fails with 5xx, waiters retry; they are not
	// served the error as if it were cached, and not all of them hit the
	// backend at once.
	const n = 10
	c := newTestCache(t, Options{Now: newClock().Now})
	o := &origin{}
	release := make(chan struct{})
	var mu sync.Mutex
	first := true
	o.set(func(w http.ResponseWriter, r *http.Request) {
		<-release
		mu.Lock()
		f := first
		first = false
		mu.Unlock()
		if f {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		static(200, "body", "Cache-Control: max-age=60")(w, r)
	})
	res := stampede(t, c, c.Middleware(o), o, n, release)
	errs := 0
	for _, w := range res {
		if w.Code == 503 {
			errs++
		}
	}
	if errs != 1 || o.calls.Load() != 2 {
		t.Fatalf("errors = %d (want 1), calls = %d (want 2)", errs, o.calls.Load())
	}
}

func TestCoalescingWaiterCancels(t *testing.T) {
	c := newTestCache(t, Options{Now: newClock().Now})
	o := &origin{}
	release := make(chan struct{})
	o.set(func(w http.ResponseWriter, r *http.Request) {
		<-release
		static(200, "body", "Cache-Control: max-age=60")(w, r)
	})
	h := c.Middleware(o)
	done := make(chan struct{})
	go func() { get(h, "GET", "/cold"); close(done) }()
	waitFor(t, "leader", func() bool { return o.calls.Load() == 1 })
	ctx, cancel := context.WithCancel(context.Background())
	waiterDone := make(chan struct{})
	go func() {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/cold", nil).WithContext(ctx))
		close(waiterDone)
	}()
	waitFor(t, "waiter", func() bool { return c.waiting.Load() == 1 })
	cancel()
	<-waiterDone // a waiter whose client leaves returns at once
	close(release)
	<-done
}
