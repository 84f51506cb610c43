package aggregate_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/aggregate"
)

// serveGateway serves h at pattern on a real Gateway over loopback.
func serveGateway(t *testing.T, pattern string, timeout time.Duration, h http.Handler) *httptest.Server {
	t.Helper()
	gw := pylon.New(pylon.Options{})
	gw.Route(pattern).Timeout(timeout).Handler(h)
	if err := gw.Err(); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw)
	t.Cleanup(srv.Close)
	return srv
}

func getURL(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, string(b)
}

// nestedItems is {"name":"x","items":[…]}: n arrays of arrays nested depth
// deep.
func nestedItems(n, depth int) string {
	nest := strings.Repeat("[", depth) + strings.Repeat("]", depth)
	parts := make([]string, n)
	for i := range parts {
		parts[i] = nest
	}
	return `{"name":"x","items":[` + strings.Join(parts, ",") + `]}`
}

func TestAnswerNestedTooDeepIsInvalid(t *testing.T) {
	deep := upstream(t, "deep", jsonBody(nestedItems(50, 9990)))
	var mu sync.Mutex
	var errs []error
	onCall := func(r *http.Request, res aggregate.CallResult) {
		mu.Lock()
		errs = append(errs, res.Err)
		mu.Unlock()
	}
	for _, tc := range []struct {
		name string
		call *aggregate.Call
	}{
		{"shaped", aggregate.Get("a", deep, "/a").Timeout(100*time.Millisecond).Allow("name", "items.sku")},
		{"unshaped", aggregate.Get("a", deep, "/a")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			errs = nil
			mu.Unlock()
			h := aggregate.MustNewWithOptions(aggregate.Options{OnCall: onCall}, tc.call)
			srv := serveGateway(t, "GET /x", 500*time.Millisecond, h)
			res, body := getURL(t, srv.URL+"/x")
			if res.StatusCode != http.StatusBadGateway || !strings.Contains(body, `call \"a\"`) {
				t.Fatalf("got %d %s, want 502 naming the call", res.StatusCode, body)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(errs) != 1 || !errors.Is(errs[0], aggregate.ErrInvalidJSON) {
				t.Fatalf("call errors %v, want ErrInvalidJSON", errs)
			}
		})
	}
}

func TestDeepAnswerWithinLimitIsShaped(t *testing.T) {
	doc := nestedItems(50, 500)
	deep := upstream(t, "deep", jsonBody(doc))
	// Call-level and result-level (BFF) shaping both through the arrays.
	h := aggregate.MustNewWithOptions(aggregate.Options{Allow: []string{"a.name", "a.items.sku"}},
		aggregate.Get("a", deep, "/a").Allow("name", "items.sku"))
	srv := serveGateway(t, "GET /x", 5*time.Second, h)
	res, body := getURL(t, srv.URL+"/x")
	if want := `{"a":` + doc + "}\n"; res.StatusCode != http.StatusOK || body != want {
		t.Fatalf("got %d %.200s", res.StatusCode, body)
	}
}

func TestMergeRepeatedMemberWithinOneAnswerConflicts(t *testing.T) {
	dup := upstream(t, "dup", jsonBody(`{"id":1,"role":"user","\u0069d":2}`))
	other := upstream(t, "other", jsonBody(`{"x":1}`))
	// Required: the call fails as for a collision across calls, 502.
	h := aggregate.MustNew(aggregate.Get("a", dup, "/a").Merge(), aggregate.Get("c", other, "/c").Merge())
	srv := serveGateway(t, "GET /x", 5*time.Second, h)
	if res, body := getURL(t, srv.URL+"/x"); res.StatusCode != http.StatusBadGateway || !strings.Contains(body, `call \"a\"`) {
		t.Fatalf("required: got %d %s, want 502 naming a", res.StatusCode, body)
	}
	// Optional: left out whole (none of its members written), marked as
	// a conflict; the other call's members stay.
	h = aggregate.MustNewWithOptions(aggregate.Options{ErrorsMember: "_errors"},
		aggregate.Get("a", dup, "/a").Merge().Optional(), aggregate.Get("c", other, "/c").Merge())
	srv = serveGateway(t, "GET /x", 5*time.Second, h)
	res, body := getURL(t, srv.URL+"/x")
	if want := `{"x":1,"_errors":{"a":"conflict"}}` + "\n"; res.StatusCode != http.StatusOK || body != want || res.Header.Get("Pylon-Partial") != "a" {
		t.Fatalf("optional: got %d %v %s", res.StatusCode, res.Header, body)
	}
	// The keys of the refused answer are not taken: a later call may use
	// them.
	role := upstream(t, "role", jsonBody(`{"role":"admin"}`))
	h = aggregate.MustNew(aggregate.Get("a", dup, "/a").Merge().Optional(), aggregate.Get("r", role, "/r").Merge())
	srv = serveGateway(t, "GET /x", 5*time.Second, h)
	if res, body := getURL(t, srv.URL+"/x"); res.StatusCode != http.StatusOK || body != `{"role":"admin"}`+"\n" {
		t.Fatalf("later call: got %d %s", res.StatusCode, body)
	}
}

func TestAnswerNotUTF8IsInvalid(t *testing.T) {
	bad := upstream(t, "bad", jsonBody("{\"a\":\"\xff\xfe\"}"))
	ok := upstream(t, "ok", jsonBody(`{"k":1}`))
	for _, tc := range []struct {
		name string
		call *aggregate.Call
	}{
		{"compacted", aggregate.Get("a", bad, "/a")},
		{"shaped", aggregate.Get("a", bad, "/a").Deny("z")},
		{"merged", aggregate.Get("a", bad, "/a").Merge()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := serveGateway(t, "GET /x", 5*time.Second, aggregate.MustNew(tc.call, aggregate.Get("ok", ok, "/ok")))
			if res, body := getURL(t, srv.URL+"/x"); res.StatusCode != http.StatusBadGateway || !strings.Contains(body, `call \"a\"`) {
				t.Fatalf("required: got %d %s, want 502", res.StatusCode, body)
			}
			srv = serveGateway(t, "GET /x", 5*time.Second, aggregate.MustNewWithOptions(aggregate.Options{ErrorsMember: "_errors"},
				tc.call.Optional(), aggregate.Get("ok", ok, "/ok")))
			res, body := getURL(t, srv.URL+"/x")
			if want := `{"ok":{"k":1},"_errors":{"a":"invalid response"}}` + "\n"; res.StatusCode != http.StatusOK || body != want {
				t.Fatalf("optional: got %d %s", res.StatusCode, body)
			}
		})
	}
}

func TestCallTimeoutBoundsHandlerIgnoringContext(t *testing.T) {
	before := goleak.IgnoreCurrent()
	release := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	var returned sync.WaitGroup
	// An in-process handler that ignores its context, and writes once
	// released, long after its call timed out.
	stubborn := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer returned.Done()
		<-release
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"late":1}`)
	})
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, `{"k":1}`) })
	for _, tc := range []struct {
		name     string
		optional bool
		status   int
		body     string
	}{
		{"optional", true, http.StatusOK, `{"ok":{"k":1},"_errors":{"h":"timeout"}}` + "\n"},
		{"required", false, http.StatusGatewayTimeout, `call \"h\" did not answer in time`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			call := aggregate.Get("h", stubborn, "/h").Timeout(100 * time.Millisecond)
			if tc.optional {
				call.Optional()
			}
			h := aggregate.MustNewWithOptions(aggregate.Options{ErrorsMember: "_errors"}, call, aggregate.Get("ok", ok, "/ok"))
			srv := serveGateway(t, "GET /x", 5*time.Second, h)
			t.Cleanup(func() {
				if t.Failed() {
					unblock() // before the server closes, which waits for it
				}
			})
			returned.Add(1)
			// Answered while the handler is still blocked: only the call's
			// timeout can have ended it.
			// (The client's limit only keeps a regression from hanging.)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/x", nil)
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("the call's timeout did not end the call: %v", err)
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			body := string(b)
			if res.StatusCode != tc.status || !strings.Contains(body, tc.body) {
				t.Fatalf("got %d %s, want %d %s", res.StatusCode, body, tc.status, tc.body)
			}
			if tc.optional && res.Header.Get("Pylon-Partial") != "h" {
				t.Fatalf("Pylon-Partial %q, want h", res.Header.Get("Pylon-Partial"))
			}
		})
	}
	unblock()
	returned.Wait()
	// Nothing outlives the handlers' own return (the servers closed with
	// their subtests).
	http.DefaultClient.CloseIdleConnections()
	goleak.VerifyNone(t, before)
}
