package aggregate_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/aggregate"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// upstream serves h on loopback behind a real *pylon.Backend.
func upstream(t testing.TB, name string, h http.HandlerFunc) *pylon.Backend {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	b, err := pylon.NewBackend(name, pylon.BackendOptions{Targets: []string{srv.URL}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// jsonBody answers body as JSON.
func jsonBody(body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, body)
	}
}

// get serves target through h on a mux with pattern, and returns the
// recorder.
func get(t testing.TB, h http.Handler, pattern, target string) *httptest.ResponseRecorder {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(pattern, h)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
	return rec
}

func problem(t testing.TB, rec *httptest.ResponseRecorder) pylon.Problem {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != pylon.ProblemContentType {
		t.Fatalf("Content-Type = %q, want problem JSON; body %s", ct, rec.Body)
	}
	var p pylon.Problem
	if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCallsOverlap(t *testing.T) {
	// Each upstream answers only once all three have been called: the
	// aggregate can succeed only if the calls are in flight together.
	var arrived sync.WaitGroup
	arrived.Add(3)
	all := make(chan struct{})
	go func() { arrived.Wait(); close(all) }()
	barrier := func(body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			arrived.Done()
			select {
			case <-all:
			case <-r.Context().Done():
				return
			}
			jsonBody(body)(w, r)
		}
	}
	a := upstream(t, "a", barrier(`{"n":1}`))
	b := upstream(t, "b", barrier(`{"n":2}`))
	c := upstream(t, "c", barrier(`{"n":3}`))
	h := aggregate.MustNew(
		aggregate.Get("a", a, "/a/{id}"),
		aggregate.Get("b", b, "/b/{id}").Timeout(5*time.Second),
		aggregate.Get("c", c, "/c/{id}"),
	)
	rec := get(t, h, "GET /x/{id}", "/x/1")
	if rec.Code != 200 || rec.Body.String() != `{"a":{"n":1},"b":{"n":2},"c":{"n":3}}`+"\n" {
		t.Fatalf("got %d %s", rec.Code, rec.Body)
	}
}

func TestDependencyChain(t *testing.T) {
	// customer needs order's customer_id; payment is independent and must
	// overlap with the chain: it answers only once customer was called.
	customerCalled := make(chan struct{})
	var gotPath atomic.Value
	order := upstream(t, "orders", jsonBody(`{"id":"7","customer_id":"c 42/x?"}`))
	customers := upstream(t, "customers", func(w http.ResponseWriter, r *http.Request) {
		gotPath.Store(r.URL.EscapedPath())
		close(customerCalled)
		jsonBody(`{"name":"Ada"}`)(w, r)
	})
	payments := upstream(t, "payments", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-customerCalled:
		case <-r.Context().Done():
			return
		}
		jsonBody(`{"status":"paid","order":"`+r.URL.Query().Get("order")+`"}`)(w, r)
	})
	h := aggregate.MustNew(
		aggregate.Get("order", order, "/orders/{id}"),
		aggregate.Get("customer", customers, "/customers/{order.customer_id}"),
		aggregate.Get("payment", payments, "/payments?order={id}"),
	)
	rec := get(t, h, "GET /orders/{id}/summary", "/orders/7/summary")
	// A '/' in a dependency value is not a safe segment: refused.
	if rec.Code != http.StatusBadGateway {
		t.Fatalf("slash in dependency value: got %d %s", rec.Code, rec.Body)
	}

	called2 := make(chan struct{})
	customers2 := upstream(t, "customers", func(w http.ResponseWriter, r *http.Request) {
		gotPath.Store(r.URL.EscapedPath())
		close(called2)
		jsonBody(`{"name":"Ada"}`)(w, r)
	})
	payments2 := upstream(t, "payments", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-called2:
		case <-r.Context().Done():
			return
		}
		jsonBody(`{"status":"paid","order":"`+r.URL.Query().Get("order")+`"}`)(w, r)
	})
	order = upstream(t, "orders", jsonBody(`{"id":"7","customer":{"id":"c 42?"}}`))
	h = aggregate.MustNew(
		aggregate.Get("order", order, "/orders/{id}"),
		aggregate.Get("customer", customers2, "/customers/{order.customer.id}"),
		aggregate.Get("payment", payments2, "/payments?order={id}"),
	)
	rec = get(t, h, "GET /orders/{id}/summary", "/orders/7/summary")
	want := `{"order":{"id":"7","customer":{"id":"c 42?"}},"customer":{"name":"Ada"},"payment":{"status":"paid","order":"7"}}` + "\n"
	if rec.Code != 200 || rec.Body.String() != want {
		t.Fatalf("got %d %s", rec.Code, rec.Body)
	}
	if p := gotPath.Load(); p != "/customers/c%2042%3F" {
		t.Errorf("customer path = %v", p)
	}
}

func TestDependencyFailure(t *testing.T) {
	var called atomic.Bool
	orders := upstream(t, "orders", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	})
	customers := upstream(t, "customers", func(w http.ResponseWriter, r *http.Request) {
		called.Store(true)
		jsonBody(`{}`)(w, r)
	})
	missing := upstream(t, "orders2", jsonBody(`{"id":1,"customer_id":null}`))
	tests := []struct {
		name  string
		calls []*aggregate.Call
		code  int
		body  string
	}{
		{"required dependency failed", []*aggregate.Call{
			aggregate.Get("order", orders, "/orders/1"),
			aggregate.Get("customer", customers, "/c/{order.customer_id}"),
		}, 502, ""},
		{"optional dependency failed, optional dependent", []*aggregate.Call{
			aggregate.Get("order", orders, "/orders/1").Optional(),
			aggregate.Get("customer", customers, "/c/{order.customer_id}").Optional(),
		}, 200, `{"_errors":{"order":"unavailable","customer":"dependency failed"}}` + "\n"},
		{"null field", []*aggregate.Call{
			aggregate.Get("order", missing, "/orders/1"),
			aggregate.Get("customer", customers, "/c/{order.customer_id}").Optional(),
		}, 200, `{"order":{"id":1,"customer_id":null},"_errors":{"customer":"dependency failed"}}` + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := aggregate.MustNewWithOptions(aggregate.Options{ErrorsMember: "_errors"}, tt.calls...)
			rec := get(t, h, "GET /", "/")
			if rec.Code != tt.code || (tt.body != "" && rec.Body.String() != tt.body) {
				t.Fatalf("got %d %s", rec.Code, rec.Body)
			}
			if tt.code == 502 && !strings.Contains(problem(t, rec).Detail, `"order"`) {
				t.Errorf("detail does not name the call: %s", rec.Body)
			}
		})
	}
	if called.Load() {
		t.Error("a call whose dependency failed was made")
	}
}

func TestShaping(t *testing.T) {
	order := upstream(t, "orders", jsonBody(`{
		"data": {
			"id": 7, "total": 99.5, "internal": {"cost": 12, "margin": 3},
			"items": [{"sku": "a", "qty": 1, "price": 10}, {"sku": "b", "qty": 2, "price": 20}],
			"customer_id": "c1"
		},
		"meta": {"v": 1}
	}`))
	reviews := upstream(t, "reviews", jsonBody(` [ {"stars": 5, "text": "good"}, {"stars": 1, "text": "bad"} ] `))
	stock := upstream(t, "stock", jsonBody(`{"sku_a": 3, "sku_b": 0}`))
	tests := []struct {
		name  string
		opts  aggregate.Options
		calls []*aggregate.Call
		want  string
	}{
		{"group by key (default)", aggregate.Options{}, []*aggregate.Call{
			aggregate.Get("meta", order, "/o").Target("meta"),
		}, `{"meta":{"v":1}}`},
		{"group under another key", aggregate.Options{}, []*aggregate.Call{
			aggregate.Get("o", order, "/o").Target("meta").Group("info"),
		}, `{"info":{"v":1}}`},
		{"target nested", aggregate.Options{}, []*aggregate.Call{
			aggregate.Get("cost", order, "/o").Target("data.internal.cost"),
		}, `{"cost":12}`},
		{"merge into top level", aggregate.Options{}, []*aggregate.Call{
			aggregate.Get("order", order, "/o").Target("data").Allow("id", "total").Merge(),
			aggregate.Get("stock", stock, "/s").Merge(),
		}, `{"id":7,"total":99.5,"sku_a":3,"sku_b":0}`},
		{"allow through arrays", aggregate.Options{}, []*aggregate.Call{
			aggregate.Get("order", order, "/o").Target("data").Allow("id", "items.sku", "internal.margin"),
		}, `{"order":{"id":7,"internal":{"margin":3},"items":[{"sku":"a"},{"sku":"b"}]}}`},
		{"allow whole subtree wins over nested path", aggregate.Options{}, []*aggregate.Call{
			aggregate.Get("order", order, "/o").Target("data").Allow("internal", "internal.cost"),
		}, `{"order":{"internal":{"cost":12,"margin":3}}}`},
		{"deny through arrays", aggregate.Options{}, []*aggregate.Call{
			aggregate.Get("order", order, "/o").Target("data").Deny("internal", "items.price", "customer_id"),
		}, `{"order":{"id":7,"total":99.5,"items":[{"sku":"a","qty":1},{"sku":"b","qty":2}]}}`},
		{"allow then deny", aggregate.Options{}, []*aggregate.Call{
			aggregate.Get("order", order, "/o").Target("data").Allow("items").Deny("items.qty"),
		}, `{"order":{"items":[{"sku":"a","price":10},{"sku":"b","price":20}]}}`},
		{"rename", aggregate.Options{}, []*aggregate.Call{
			aggregate.Get("order", order, "/o").Target("data").Allow("id", "items.sku").
				Rename("items.sku", "code").Rename("id", "orderId"),
		}, `{"order":{"orderId":7,"items":[{"code":"a"},{"code":"b"}]}}`},
		{"rename replaces a sibling of the new name", aggregate.Options{}, []*aggregate.Call{
			aggregate.Get("order", order, "/o").Target("data.items").Rename("qty", "sku"),
		}, `{"order":[{"sku":1,"price":10},{"sku":2,"price":20}]}`},
		{"array kept under its key", aggregate.Options{}, []*aggregate.Call{
			aggregate.Get("reviews", reviews, "/r").Deny("text"),
		}, `{"reviews":[{"stars":5},{"stars":1}]}`},
		{"array wrapped", aggregate.Options{}, []*aggregate.Call{
			aggregate.Get("reviews", reviews, "/r").Allow("stars").Wrap("items"),
		}, `{"reviews":{"items":[{"stars":5},{"stars":1}]}}`},
		{"array merged is wrapped under the call key", aggregate.Options{}, []*aggregate.Call{
			aggregate.Get("reviews", reviews, "/r").Allow("stars").Merge(),
		}, `{"reviews":[{"stars":5},{"stars":1}]}`},
		{"array merged with Wrap", aggregate.Options{}, []*aggregate.Call{
			aggregate.Get("reviews", reviews, "/r").Allow("stars").Merge().Wrap("list"),
		}, `{"list":[{"stars":5},{"stars":1}]}`},
		{"shaping the merged result", aggregate.Options{
			Allow:  []string{"order.id", "order.items.sku", "reviews.stars"},
			Rename: map[string]string{"reviews": "ratings"},
		}, []*aggregate.Call{
			aggregate.Get("order", order, "/o").Target("data"),
			aggregate.Get("reviews", reviews, "/r"),
		}, `{"order":{"id":7,"items":[{"sku":"a"},{"sku":"b"}]},"ratings":[{"stars":5},{"stars":1}]}`},
		{"denied on the merged result", aggregate.Options{Deny: []string{"order"}}, []*aggregate.Call{
			aggregate.Get("order", order, "/o").Target("data"),
			aggregate.Get("stock", stock, "/s"),
		}, `{"stock":{"sku_a":3,"sku_b":0}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := get(t, aggregate.MustNewWithOptions(tt.opts, tt.calls...), "GET /", "/")
			if rec.Code != 200 || rec.Body.String() != tt.want+"\n" {
				t.Fatalf("got %d\n%s\nwant\n%s", rec.Code, rec.Body, tt.want)
			}
			if !json.Valid(rec.Body.Bytes()) {
				t.Fatal("invalid JSON")
			}
		})
	}
}

func TestDeterministicOrder(t *testing.T) {
	// In-process handlers finish in the order chosen by the test: output
	// must be the same whichever call answers first.
	mk := func(order []int) []byte {
		n := 3
		done := make([]chan struct{}, n)
		for i := range done {
			done[i] = make(chan struct{})
		}
		calls := make([]*aggregate.Call, n)
		for i := range n {
			pos := -1
			for k, v := range order {
				if v == i {
					pos = k
				}
			}
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				defer close(done[i])
				if pos > 0 {
					<-done[order[pos-1]] // answer after the previous one in order
				}
				fmt.Fprintf(w, `{"k%d":%d,"z":0,"a":[1,2]}`, i, i)
			})
			calls[i] = aggregate.Get(fmt.Sprintf("c%d", i), h, "/")
		}
		calls[1].Merge().Deny("z")
		return get(t, aggregate.MustNew(calls...), "GET /", "/").Body.Bytes()
	}
	want := mk([]int{0, 1, 2})
	for _, order := range [][]int{{2, 1, 0}, {1, 2, 0}, {0, 2, 1}} {
		for range 5 {
			if got := mk(order); string(got) != string(want) {
				t.Fatalf("order %v: %s, want %s", order, got, want)
			}
		}
	}
	if string(want) != `{"c0":{"k0":0,"z":0,"a":[1,2]},"k1":1,"a":[1,2],"c2":{"k2":2,"z":0,"a":[1,2]}}`+"\n" {
		t.Fatalf("got %s", want)
	}
}

func TestConfigErrors(t *testing.T) {
	b := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	many := make([]*aggregate.Call, 17)
	for i := range many {
		many[i] = aggregate.Get(fmt.Sprintf("c%d", i), b, "/")
	}
	tests := []struct {
		name  string
		opts  aggregate.Options
		calls []*aggregate.Call
		want  string
	}{
		{"no calls", aggregate.Options{}, nil, "no calls"},
		{"too many", aggregate.Options{}, many, "MaxCalls"},
		{"duplicate key", aggregate.Options{}, []*aggregate.Call{aggregate.Get("a", b, "/"), aggregate.Get("a", b, "/")}, `call "a": key used twice`},
		{"dotted key", aggregate.Options{}, []*aggregate.Call{aggregate.Get("a.b", b, "/")}, `call "a.b"`},
		{"group collision", aggregate.Options{}, []*aggregate.Call{aggregate.Get("a", b, "/"), aggregate.Get("b", b, "/").Group("a")}, `call "b": group key "a" is already used by call "a"`},
		{"group is errors member", aggregate.Options{ErrorsMember: "errors"}, []*aggregate.Call{aggregate.Get("errors", b, "/")}, "ErrorsMember"},
		{"unknown dependency", aggregate.Options{}, []*aggregate.Call{aggregate.Get("a", b, "/x/{nope.id}")}, `call "a": path "/x/{nope.id}": placeholder {nope.id} names unknown call "nope"`},
		{"self dependency", aggregate.Options{}, []*aggregate.Call{aggregate.Get("a", b, "/x/{a.id}")}, "itself"},
		{"cycle", aggregate.Options{}, []*aggregate.Call{
			aggregate.Get("a", b, "/x/{c.id}"), aggregate.Get("b", b, "/x/{a.id}"), aggregate.Get("c", b, "/x/{b.id}"),
		}, "dependency cycle: a -> c -> b -> a"},
		{"unclosed brace", aggregate.Options{}, []*aggregate.Call{aggregate.Get("a", b, "/x/{id")}, "unclosed"},
		{"relative path", aggregate.Options{}, []*aggregate.Call{aggregate.Get("a", b, "x")}, "must start with '/'"},
		{"rest wildcard in query", aggregate.Options{}, []*aggregate.Call{aggregate.Get("a", b, "/x?q={p...}")}, "only be used in the path"},
		{"nil target", aggregate.Options{}, []*aggregate.Call{aggregate.Get("a", nil, "/")}, "nil target"},
		{"nil round tripper", aggregate.Options{}, []*aggregate.Call{aggregate.Get("a", aggregate.Remote(nil), "/")}, "nil RoundTripper"},
		{"round tripper needs URL", aggregate.Options{}, []*aggregate.Call{aggregate.Get("a", aggregate.Remote(http.DefaultTransport), "/x")}, "absolute"},
		{"bad method", aggregate.Options{}, []*aggregate.Call{aggregate.Request("GE T", "a", b, "/")}, "invalid method"},
		{"empty allow path", aggregate.Options{}, []*aggregate.Call{aggregate.Get("a", b, "/").Allow("x..y")}, "empty field name"},
		{"rename twice to one name", aggregate.Options{}, []*aggregate.Call{aggregate.Get("a", b, "/").Rename("x", "z").Rename("y", "z")}, `two fields renamed to "z"`},
		{"rename to a path", aggregate.Options{}, []*aggregate.Call{aggregate.Get("a", b, "/").Rename("x", "y.z")}, "plain"},
		{"negative timeout", aggregate.Options{}, []*aggregate.Call{aggregate.Get("a", b, "/").Timeout(-1)}, "negative timeout"},
		{"bad partial header", aggregate.Options{PartialHeader: "a b"}, []*aggregate.Call{aggregate.Get("a", b, "/")}, "PartialHeader"},
		{"bad result path", aggregate.Options{Deny: []string{""}}, []*aggregate.Call{aggregate.Get("a", b, "/")}, "Options"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := aggregate.NewWithOptions(tt.opts, tt.calls...)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "aggregate: ") {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
			defer func() {
				if p := recover(); p == nil {
					t.Error("NewWithOptions did not panic")
				}
			}()
			aggregate.MustNewWithOptions(tt.opts, tt.calls...)
		})
	}
}

func TestMergeConflict(t *testing.T) {
	a := upstream(t, "a", jsonBody(`{"id":1,"name":"x"}`))
	b := upstream(t, "b", jsonBody(`{"id":2,"other":"y"}`))
	// Required: the later call fails, 502.
	rec := get(t, aggregate.MustNew(aggregate.Get("a", a, "/").Merge(), aggregate.Get("b", b, "/").Merge()), "GET /", "/")
	if rec.Code != 502 || !strings.Contains(problem(t, rec).Detail, `"b"`) {
		t.Fatalf("got %d %s", rec.Code, rec.Body)
	}
	// Optional: left out, marked, the first call's value kept.
	h := aggregate.MustNewWithOptions(aggregate.Options{ErrorsMember: "_errors"},
		aggregate.Get("a", a, "/").Merge(), aggregate.Get("b", b, "/").Merge().Optional())
	rec = get(t, h, "GET /", "/")
	if rec.Code != 200 || rec.Body.String() != `{"id":1,"name":"x","_errors":{"b":"conflict"}}`+"\n" || rec.Header().Get("Pylon-Partial") != "b" {
		t.Fatalf("got %d %v %s", rec.Code, rec.Header(), rec.Body)
	}
	// A group key written after a merged member of the same name.
	rec = get(t, aggregate.MustNew(aggregate.Get("a", a, "/").Merge(), aggregate.Get("name", b, "/")), "GET /", "/")
	if rec.Code != 502 {
		t.Fatalf("got %d %s", rec.Code, rec.Body)
	}
	// No collision: deny the shared field.
	rec = get(t, aggregate.MustNew(aggregate.Get("a", a, "/").Merge(), aggregate.Get("b", b, "/").Merge().Deny("id")), "GET /", "/")
	if rec.Code != 200 || rec.Body.String() != `{"id":1,"name":"x","other":"y"}`+"\n" {
		t.Fatalf("got %d %s", rec.Code, rec.Body)
	}
}

// refusedAddr is a loopback address nothing listens on.
func refusedAddr(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}

func TestFailures(t *testing.T) {
	ok := upstream(t, "ok", jsonBody(`{"ok":true}`))
	dead, err := pylon.NewBackend("dead", pylon.BackendOptions{Targets: []string{refusedAddr(t)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dead.Close() })
	var internalHit atomic.Bool
	internal := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		internalHit.Store(true)
		jsonBody(`{"secret":1}`)(w, r)
	}))
	t.Cleanup(internal.Close)
	big := strings.Repeat("x", 20<<20)
	backends := map[string]http.HandlerFunc{
		"500": func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "boom at 10.0.0.9", http.StatusInternalServerError)
		},
		"404": func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) },
		"403": func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no", http.StatusForbidden) },
		"redirect": func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, internal.URL+"/admin", http.StatusFound)
		},
		"html":     func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "<html><body>hi</body></html>") },
		"trailing": jsonBody(`{"a":1} {"b":2}`),
		"big": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"x":"`+big+`"}`)
		},
		"bigcl": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "30000000")
			w.WriteHeader(200)
		},
		"hang": func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() },
	}
	tests := []struct {
		backend  string
		code     int    // when required
		reason   string // when optional
		notFound bool
	}{
		{"500", 502, "unavailable", false},
		{"404", 502, "not found", false},
		{"404", 404, "not found", true},
		{"403", 502, "rejected", false},
		{"redirect", 502, "redirect", false},
		{"html", 502, "invalid response", false},
		{"trailing", 502, "invalid response", false},
		{"big", 502, "too large", false},
		{"bigcl", 502, "too large", false},
		{"hang", 504, "timeout", false},
		{"dead", 502, "unavailable", false},
	}
	for _, tt := range tests {
		var target http.Handler = dead
		if tt.backend != "dead" {
			target = upstream(t, tt.backend, backends[tt.backend])
		}
		call := func() *aggregate.Call {
			c := aggregate.Get("thing", target, "/t")
			if tt.backend == "hang" {
				c.Timeout(100 * time.Millisecond)
			}
			if tt.notFound {
				c.PassNotFound()
			}
			return c
		}
		t.Run(tt.backend+"/required", func(t *testing.T) {
			rec := get(t, aggregate.MustNew(aggregate.Get("ok", ok, "/"), call()), "GET /", "/")
			if rec.Code != tt.code {
				t.Fatalf("got %d %s", rec.Code, rec.Body)
			}
			p := problem(t, rec)
			if p.Status != tt.code || (tt.code != 404 && !strings.Contains(p.Detail, `"thing"`)) {
				t.Errorf("problem %+v", p)
			}
			if body := rec.Body.String(); strings.Contains(body, "127.0.0.1") || strings.Contains(body, "10.0.0.9") || strings.Contains(body, "ok") {
				t.Errorf("problem leaks detail: %s", body)
			}
		})
		t.Run(tt.backend+"/optional", func(t *testing.T) {
			h := aggregate.MustNewWithOptions(aggregate.Options{ErrorsMember: "_errors"},
				aggregate.Get("ok", ok, "/"), call().Optional())
			rec := get(t, h, "GET /", "/")
			want := `{"ok":{"ok":true},"_errors":{"thing":"` + tt.reason + `"}}` + "\n"
			if rec.Code != 200 || rec.Body.String() != want || rec.Header().Get("Pylon-Partial") != "thing" {
				t.Fatalf("got %d %v %s", rec.Code, rec.Header(), rec.Body)
			}
		})
	}
	if internalHit.Load() {
		t.Error("a redirect was followed")
	}
}

func TestPartialWithoutErrorsMember(t *testing.T) {
	ok := upstream(t, "ok", jsonBody(`{"ok":true}`))
	bad := upstream(t, "bad", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) })
	h := aggregate.MustNewWithOptions(aggregate.Options{PartialHeader: "X-Partial"},
		aggregate.Get("a", bad, "/").Optional(), aggregate.Get("b", ok, "/"), aggregate.Get("c", bad, "/").Optional())
	rec := get(t, h, "GET /", "/")
	if rec.Code != 200 || rec.Body.String() != `{"b":{"ok":true}}`+"\n" || rec.Header().Get("X-Partial") != "a, c" {
		t.Fatalf("got %d %v %s", rec.Code, rec.Header(), rec.Body)
	}
	// Every call optional and failed: an empty, partial answer.
	h = aggregate.MustNewWithOptions(aggregate.Options{ErrorsMember: "errors"}, aggregate.Get("a", bad, "/").Optional())
	rec = get(t, h, "GET /", "/")
	if rec.Code != 200 || rec.Body.String() != `{"errors":{"a":"unavailable"}}`+"\n" {
		t.Fatalf("got %d %s", rec.Code, rec.Body)
	}
}

func TestSingleCallStatusPassThrough(t *testing.T) {
	for _, code := range []int{200, 201, 203, 400, 404, 409} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			b := upstream(t, "b", func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(code)
				io.WriteString(w, `{"a":1}`)
			})
			rec := get(t, aggregate.MustNew(aggregate.Get("b", b, "/")), "GET /", "/")
			if rec.Code != code {
				t.Fatalf("got %d %s", rec.Code, rec.Body)
			}
			if code < 300 && rec.Body.String() != `{"b":{"a":1}}`+"\n" {
				t.Fatalf("body %s", rec.Body)
			}
			if code >= 400 {
				problem(t, rec)
			}
		})
	}
}

// A single call's 204, 205 or 206 becomes 200 (the answer is a JSON
// document, which those statuses forbid or qualify), and its 401, 405 or
// 429 keeps the fields that make it valid or useful.
func TestSingleCallStatusesKeepTheirRules(t *testing.T) {
	for _, tc := range []struct {
		code   int
		header string
		value  string
		want   int
	}{
		{205, "", "", 200},
		{206, "Content-Range", "bytes 0-6/7", 200},
		{401, "Www-Authenticate", `Bearer realm="up"`, 401},
		{405, "Allow", "GET, HEAD", 405},
		{429, "Retry-After", "7", 429},
	} {
		t.Run(fmt.Sprint(tc.code), func(t *testing.T) {
			b := upstream(t, "b", func(w http.ResponseWriter, r *http.Request) {
				if tc.header != "" {
					w.Header().Set(tc.header, tc.value)
				}
				w.WriteHeader(tc.code)
				io.WriteString(w, `{"a":1}`)
			})
			rec := get(t, aggregate.MustNew(aggregate.Get("b", b, "/")), "GET /", "/")
			if rec.Code != tc.want {
				t.Fatalf("upstream %d: got %d %s", tc.code, rec.Code, rec.Body)
			}
			if tc.want >= 400 && rec.Header().Get(tc.header) != tc.value {
				t.Errorf("upstream %d: %s %q, want %q", tc.code, tc.header, rec.Header().Get(tc.header), tc.value)
			}
			if tc.want == 200 && rec.Header().Get("Content-Range") != "" {
				t.Errorf("a 200 with Content-Range")
			}
		})
	}
}

func TestInjection(t *testing.T) {
	var mu sync.Mutex
	var seen []*http.Request
	rec := func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r)
		mu.Unlock()
		jsonBody(`{}`)(w, r)
	}
	b := upstream(t, "b", rec)
	h := aggregate.MustNew(
		aggregate.Get("item", b, "/items/{id}/detail"),
		aggregate.Get("pay", b, "/payments?order={id}&page={?page}"),
	)
	tests := []struct {
		id, page string
		code     int
	}{
		{"1?admin=true", "", 200},
		{"1#frag", "", 200},
		{"1&admin=true", "2&admin=1", 200},
		{"1;admin", "", 200},
		{"%2e%2e", "", 200},
		{"a b+c", "x y", 200},
		{"..", "", 400},
		{".", "", 400},
		{"", "", 400},
		{"a/b", "", 400},
		{"../admin", "", 400},
		{`a\b`, "", 400},
		{"a\x00b", "", 400},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q", tt.id), func(t *testing.T) {
			mu.Lock()
			seen = nil
			mu.Unlock()
			req := httptest.NewRequest("GET", "/?page="+urlQueryEscape(tt.page), nil)
			req.SetPathValue("id", tt.id)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != tt.code {
				t.Fatalf("got %d %s", w.Code, w.Body)
			}
			if tt.code != 200 {
				mu.Lock()
				defer mu.Unlock()
				if len(seen) > 0 {
					// The payments call may have gone out before the bad
					// value was seen; it must never reach a different path.
					for _, r := range seen {
						if r.URL.Path != "/payments" {
							t.Errorf("upstream saw %s", r.URL)
						}
					}
				}
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if len(seen) != 2 {
				t.Fatalf("%d calls", len(seen))
			}
			for _, r := range seen {
				switch r.URL.Path {
				case "/items/" + tt.id + "/detail":
					if r.URL.RawQuery != "" {
						t.Errorf("query injected: %q", r.URL.RawQuery)
					}
				case "/payments":
					q := r.URL.Query()
					if len(q) != 2 || q.Get("order") != tt.id || q.Get("page") != tt.page {
						t.Errorf("query %q parsed as %v", r.URL.RawQuery, q)
					}
				default:
					t.Errorf("upstream path %q (raw %q)", r.URL.Path, r.URL.RawPath)
				}
			}
		})
	}
}

func urlQueryEscape(s string) string {
	r := strings.NewReplacer("%", "%25", "&", "%26", "=", "%3D", " ", "+", "#", "%23", "+", "%2B")
	return r.Replace(s)
}

func TestTimeoutLeavesNoGoroutine(t *testing.T) {
	released := make(chan struct{})
	hang := upstream(t, "hang", func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
		close(released)
	})
	ok := upstream(t, "ok", jsonBody(`{}`))
	gw := pylon.New(pylon.Options{})
	gw.Route("GET /x/{id}").Timeout(100 * time.Millisecond).Handler(aggregate.MustNew(
		aggregate.Get("ok", ok, "/"),
		aggregate.Get("slow", hang, "/slow/{id}"), // under the route deadline
	))
	if err := gw.Err(); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw)
	defer srv.Close()
	res, err := http.Get(srv.URL + "/x/1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 504 || !strings.Contains(string(body), `\"slow\"`) {
		t.Fatalf("got %d %s", res.StatusCode, body)
	}
	<-released // the upstream saw the call canceled
	srv.Close()
	http.DefaultClient.CloseIdleConnections()
	hang.Close()
	ok.Close()
	goleak.VerifyNone(t, goleak.IgnoreCurrent())
}

func TestThroughGateway(t *testing.T) {
	orders := upstream(t, "orders", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer t" || r.Header.Get("X-Secret") != "" || r.Header.Get("Accept") != "application/json" ||
			r.Header.Get("X-Forwarded-For") != "127.0.0.1" {
			http.Error(w, "headers", http.StatusBadRequest)
			return
		}
		jsonBody(`{"id":"`+strings.TrimPrefix(r.URL.Path, "/orders/")+`"}`)(w, r)
	})
	payments := upstream(t, "payments", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) })

	var mu sync.Mutex
	var results []aggregate.CallResult
	var infos []pylon.RequestInfo
	gw := pylon.New(pylon.Options{})
	gw.Use(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			next.ServeHTTP(w, r)
			mu.Lock()
			infos = append(infos, *pylon.Info(r.Context()))
			mu.Unlock()
		})
	})
	gw.Route("GET /orders/{id}/summary").Handler(aggregate.MustNewWithOptions(aggregate.Options{
		OnCall: func(r *http.Request, res aggregate.CallResult) {
			mu.Lock()
			results = append(results, res)
			mu.Unlock()
		},
	},
		aggregate.Get("order", orders, "/orders/{id}"),
		aggregate.Get("payment", payments, "/payments?order={id}").Optional(),
	))
	srv := httptest.NewServer(gw)
	defer srv.Close()

	// Concurrent requests, under -race.
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			req, _ := http.NewRequest("GET", fmt.Sprintf("%s/orders/%d/summary", srv.URL, i), nil)
			req.Header.Set("Authorization", "Bearer t")
			req.Header.Set("X-Secret", "s")
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != 200 || string(body) != fmt.Sprintf(`{"order":{"id":"%d"}}`+"\n", i) || res.Header.Get("Pylon-Partial") != "payment" {
				t.Errorf("got %d %s", res.StatusCode, body)
			}
		})
	}
	wg.Wait()
	http.DefaultClient.CloseIdleConnections()
	mu.Lock()
	defer mu.Unlock()
	if len(results) != 40 || len(infos) != 20 {
		t.Fatalf("%d results, %d infos", len(results), len(infos))
	}
	for _, res := range results {
		switch res.Key {
		case "order":
			if res.Err != nil || res.Status != 200 || res.Backend != "orders" || !strings.HasPrefix(res.Target, "http://127.0.0.1:") || res.Duration <= 0 || res.Optional {
				t.Errorf("order result %+v", res)
			}
		case "payment":
			if !errors.Is(res.Err, aggregate.ErrUnavailable) || res.Status != 500 || !res.Optional {
				t.Errorf("payment result %+v", res)
			}
		}
	}
	for _, info := range infos {
		if info.Backend != "aggregate" || !strings.HasPrefix(info.Error, "payment: aggregate: upstream unavailable") || info.Route != "GET /orders/{id}/summary" {
			t.Errorf("info %+v", info)
		}
	}
}

// TestForwardingHeadersLikeDirect: a call's upstream sees the forwarding
// headers a direct proxied request's upstream sees, behind a trusted proxy
// (the client's address from the chain it vouched for, the chain extended
// with the peer) and from an untrusted peer (its forgeries replaced).
func TestForwardingHeadersLikeDirect(t *testing.T) {
	forwarding := []string{"X-Forwarded-For", "Forwarded", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Real-Ip"}
	var mu sync.Mutex
	var seen http.Header
	b := upstream(t, "up", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = r.Header.Clone()
		mu.Unlock()
		jsonBody(`{"a":1}`)(w, r)
	})
	loopback := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	for _, tc := range []struct {
		name    string
		trust   pylon.Trust
		wantXFF string
	}{
		{"trusted X-Forwarded-For", pylon.Trust{Proxies: loopback}, "203.0.113.5, 127.0.0.1"},
		{"trusted Forwarded", pylon.Trust{Proxies: loopback, Header: pylon.Forwarded}, "203.0.113.5"},
		{"untrusted", pylon.Trust{}, "127.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gw := pylon.New(pylon.Options{Trust: tc.trust})
			gw.Route("GET /direct").To(b)
			gw.Route("GET /agg").Handler(aggregate.MustNew(aggregate.Get("x", b, "/x")))
			srv := httptest.NewServer(gw)
			defer srv.Close()
			got := map[string]http.Header{}
			for _, path := range []string{"/direct", "/agg"} {
				req, _ := http.NewRequest("GET", srv.URL+path, nil)
				if tc.trust.Header == pylon.Forwarded {
					req.Header.Set("Forwarded", "for=203.0.113.5;proto=https;host=shop.example")
					req.Header.Set("X-Forwarded-For", "6.6.6.6") // forged, passed on by the proxy
				} else {
					req.Header.Set("X-Forwarded-For", "203.0.113.5")
					req.Header.Set("X-Forwarded-Proto", "https")
					req.Header.Set("X-Forwarded-Host", "shop.example")
					req.Header.Set("Forwarded", "for=6.6.6.6") // forged, passed on by the proxy
				}
				req.Header.Set("X-Real-Ip", "6.6.6.6")
				res, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode != 200 {
					t.Fatalf("%s: status %d", path, res.StatusCode)
				}
				mu.Lock()
				got[path] = seen
				mu.Unlock()
			}
			for _, k := range forwarding {
				if d, a := got["/direct"].Values(k), got["/agg"].Values(k); !slices.Equal(d, a) {
					t.Errorf("%s: direct upstream got %q, aggregation call %q", k, d, a)
				}
			}
			if xff := got["/agg"].Get("X-Forwarded-For"); xff != tc.wantXFF {
				t.Errorf("aggregation call's X-Forwarded-For %q, want %q", xff, tc.wantXFF)
			}
		})
	}
}

func TestRoundTripperAndUnsafeMethod(t *testing.T) {
	var gotBody, gotMethod, gotCT string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		gotBody, gotMethod, gotCT = string(b), r.Method, r.Header.Get("Content-Type")
		jsonBody(`{"created":true}`)(w, r)
	}))
	defer srv.Close()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	h := aggregate.MustNewWithOptions(aggregate.Options{MaxRequestBytes: 64},
		aggregate.Request(http.MethodPost, "audit", aggregate.Remote(tr), srv.URL+"/audit/{id}").ForwardBody(),
		aggregate.Get("echo", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, `"`+r.Method+`"`)
		}), "/"),
	)
	mux := http.NewServeMux()
	mux.Handle("POST /x/{id}", h)
	w := httptest.NewRecorder()
	req := httptest.NewRequest("POST", "/x/9", strings.NewReader(`{"note":"hi"}`))
	req.Header.Set("Content-Type", "application/json")
	mux.ServeHTTP(w, req)
	if w.Code != 200 || w.Body.String() != `{"audit":{"created":true},"echo":"GET"}`+"\n" {
		t.Fatalf("got %d %s", w.Code, w.Body)
	}
	if gotMethod != "POST" || gotBody != `{"note":"hi"}` || gotCT != "application/json" {
		t.Errorf("upstream got %s %q %q", gotMethod, gotBody, gotCT)
	}
	w = httptest.NewRecorder()
	mux.ServeHTTP(w, httptest.NewRequest("POST", "/x/9", strings.NewReader(strings.Repeat("a", 65))))
	if w.Code != 413 {
		t.Fatalf("oversized body: %d", w.Code)
	}
}

func TestHandlerPanicFailsTheCall(t *testing.T) {
	h := aggregate.MustNewWithOptions(aggregate.Options{ErrorsMember: "_e"},
		aggregate.Get("p", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { panic("oops") }), "/").Optional(),
		aggregate.Get("a", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { panic(http.ErrAbortHandler) }), "/").Optional(),
	)
	rec := get(t, h, "GET /", "/")
	if rec.Code != 200 || rec.Body.String() != `{"_e":{"p":"unavailable","a":"unavailable"}}`+"\n" {
		t.Fatalf("got %d %s", rec.Code, rec.Body)
	}
}

func TestClientGone(t *testing.T) {
	started := make(chan struct{})
	h := aggregate.MustNew(aggregate.Get("a", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-r.Context().Done()
	}), "/"))
	ctx, cancel := context.WithCancel(context.Background())
	info := &pylon.RequestInfo{}
	req := httptest.NewRequest("GET", "/", nil).WithContext(pylon.NewContext(ctx, info))
	go func() { <-started; cancel() }()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Body.Len() != 0 || !info.ClientCanceled {
		t.Fatalf("wrote %q, info %+v", rec.Body, info)
	}
}

func TestHead(t *testing.T) {
	b := upstream(t, "b", jsonBody(`{"a":1}`))
	h := aggregate.MustNew(aggregate.Get("b", b, "/"))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("HEAD", "/", nil))
	if w.Code != 200 || w.Body.Len() != 0 || w.Header().Get("Content-Length") != "14" {
		t.Fatalf("got %d %v %q", w.Code, w.Header(), w.Body)
	}
}

func TestCallsRecordedInRequestInfo(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(`{"a":1}`)) })
	bad := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) })
	h := aggregate.MustNew(
		aggregate.Get("first", ok, "/first"),
		aggregate.Get("second", bad, "/second").Optional(),
	)
	info := &pylon.RequestInfo{}
	req := httptest.NewRequest("GET", "/x", nil)
	req = req.WithContext(pylon.NewContext(req.Context(), info))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 200 || len(info.Calls) != 2 {
		t.Fatalf("status %d, calls %+v", rec.Code, info.Calls)
	}
	first, second := info.Calls[0], info.Calls[1]
	if first.Key != "first" || first.Status != 200 || first.Error != "" {
		t.Errorf("first call recorded as %+v", first)
	}
	if second.Key != "second" || second.Status != 500 || second.Error == "" {
		t.Errorf("second call recorded as %+v", second)
	}
}
