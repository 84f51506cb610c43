package aggregate_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

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
