package gatewaytest_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/gatewaytest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestBackendScriptAndRecording(t *testing.T) {
	b := gatewaytest.NewBackend(t,
		gatewaytest.Response{Status: 503, Header: http.Header{"Retry-After": {"1"}}, Body: "busy"},
		gatewaytest.Response{Body: "ok"},
	)
	tests := []struct {
		status int
		body   string
		retry  string
	}{{503, "busy", "1"}, {200, "ok", ""}, {200, "ok", ""}} // the last response repeats
	for i, tt := range tests {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			req, _ := http.NewRequest("POST", b.URL+"/a%2Fb/c?x=1&x=2", strings.NewReader("payload"))
			req.Header.Set("X-Test", "yes")
			res := gatewaytest.ReadResult(t, mustDo(t, req))
			gatewaytest.AssertStatus(t, res, tt.status)
			gatewaytest.AssertBody(t, res, tt.body)
			gatewaytest.AssertHeader(t, res, "Retry-After", tt.retry)
		})
	}
	if b.Count() != 3 {
		t.Fatalf("Count %d, want 3", b.Count())
	}
	got := b.Requests()[0]
	if got.Method != "POST" || got.Path != "/a/b/c" || got.RawPath != "/a%2Fb/c" || got.RawQuery != "x=1&x=2" ||
		len(got.Query["x"]) != 2 || got.Header.Get("X-Test") != "yes" || string(got.Body) != "payload" {
		t.Errorf("recorded %+v", got)
	}
}

func TestBackendBodyCap(t *testing.T) {
	b := gatewaytest.NewBackend(t)
	big := strings.Repeat("x", gatewaytest.MaxRecordedBody+10)
	req, _ := http.NewRequest("POST", b.URL, strings.NewReader(big))
	gatewaytest.ReadResult(t, mustDo(t, req))
	if n := len(b.Last(t).Body); n != gatewaytest.MaxRecordedBody {
		t.Errorf("recorded %d bytes, want %d", n, gatewaytest.MaxRecordedBody)
	}
}

func TestBackendWaitAndDrop(t *testing.T) {
	release := make(chan struct{})
	b := gatewaytest.NewBackend(t,
		gatewaytest.Response{Wait: release, Body: "late"},
		gatewaytest.Response{Drop: true},
	)
	done := make(chan *gatewaytest.Result)
	go func() {
		req, _ := http.NewRequest("GET", b.URL, nil)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			done <- nil
			return
		}
		done <- gatewaytest.ReadResult(t, res)
	}()
	select {
	case <-done:
		t.Fatal("answered before Wait was released")
	default:
	}
	close(release)
	if res := <-done; res != nil {
		gatewaytest.AssertBody(t, res, "late")
	}
	_, err := http.Get(b.URL)
	if err == nil {
		t.Error("dropped connection gave a response")
	}
}

func TestBackendWaitEndsWithClient(t *testing.T) {
	b := gatewaytest.NewBackend(t, gatewaytest.Response{Wait: make(chan struct{})})
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", b.URL, nil)
	errc := make(chan error, 1)
	go func() {
		res, err := http.DefaultClient.Do(req)
		if err == nil {
			res.Body.Close()
		}
		errc <- err
	}()
	for b.Count() == 0 { // poll until the backend holds the request
		select {
		case err := <-errc:
			t.Fatalf("request ended early: %v", err)
		default:
		}
		runtime.Gosched()
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("error %v, want context.Canceled", err)
	}
	http.DefaultClient.CloseIdleConnections()
}

func TestBackendHandler(t *testing.T) {
	b := gatewaytest.NewBackendHandler(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		_, _ = w.Write(append([]byte("echo:"), body...))
	}))
	res := gatewaytest.ReadResult(t, mustPost(t, b.URL, "hi"))
	gatewaytest.AssertBody(t, res, "echo:hi")
	if string(b.Last(t).Body) != "hi" {
		t.Error("handler backend did not record the body")
	}
}

// recordingT captures failures instead of failing the test.
type recordingT struct {
	errors []string
	fatal  bool
}

func (r *recordingT) Helper()        {}
func (r *recordingT) Cleanup(func()) {}
func (r *recordingT) Errorf(f string, args ...any) {
	r.errors = append(r.errors, fmt.Sprintf(f, args...))
}
func (r *recordingT) Fatalf(f string, args ...any) { r.fatal = true; r.Errorf(f, args...) }

func TestAssertionsReportFailures(t *testing.T) {
	problem := gatewaytest.Do(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pylon.WriteProblem(w, r, pylon.Problem{Status: 429, Detail: "slow down", RequestID: "r1"})
	}), mustRequest(t, "GET", "/"))
	plain := gatewaytest.Get(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-A", "1")
		_, _ = w.Write([]byte("hello"))
	}), "/", "X-Ignored", "v")
	tests := []struct {
		name  string
		check func(t gatewaytest.TB)
		fails bool
	}{
		{"status ok", func(t gatewaytest.TB) { gatewaytest.AssertStatus(t, problem, 429) }, false},
		{"status wrong", func(t gatewaytest.TB) { gatewaytest.AssertStatus(t, problem, 200) }, true},
		{"problem fields ok", func(t gatewaytest.TB) {
			gatewaytest.AssertProblem(t, problem, pylon.Problem{Status: 429, Detail: "slow down", RequestID: "r1", Title: "Too Many Requests"})
		}, false},
		{"problem detail wrong", func(t gatewaytest.TB) { gatewaytest.AssertProblem(t, problem, pylon.Problem{Detail: "other"}) }, true},
		{"not a problem", func(t gatewaytest.TB) { gatewaytest.AssertProblem(t, plain, pylon.Problem{}) }, true},
		{"header ok", func(t gatewaytest.TB) { gatewaytest.AssertHeader(t, plain, "x-a", "1") }, false},
		{"header absent ok", func(t gatewaytest.TB) { gatewaytest.AssertHeader(t, plain, "X-B", "") }, false},
		{"header wrong", func(t gatewaytest.TB) { gatewaytest.AssertHeader(t, plain, "X-A", "2") }, true},
		{"header should be absent", func(t gatewaytest.TB) { gatewaytest.AssertHeader(t, plain, "X-A", "") }, true},
		{"body wrong", func(t gatewaytest.TB) { gatewaytest.AssertBody(t, plain, "bye") }, true},
		{"odd header list", func(t gatewaytest.TB) { gatewaytest.Get(t, plainHandler, "/", "X-A") }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &recordingT{}
			tt.check(r)
			if failed := len(r.errors) > 0; failed != tt.fails {
				t.Errorf("failed %v (%q), want %v", failed, r.errors, tt.fails)
			}
		})
	}
}

var plainHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})

func mustRequest(t *testing.T, method, target string) *http.Request {
	t.Helper()
	r, err := http.NewRequest(method, target, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func mustDo(t *testing.T, req *http.Request) *http.Response {
	t.Helper()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func mustPost(t *testing.T, url, body string) *http.Response {
	t.Helper()
	res, err := http.Post(url, "text/plain", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return res
}
