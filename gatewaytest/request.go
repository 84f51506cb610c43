package gatewaytest

import (
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/pylon-gateway/pylon"
)

// Result is a response recorded from a handler.
type Result struct {
	// Status is the status code.
	Status int
	// Header is the response header.
	Header http.Header
	// Body is the response body.
	Body []byte
}

// Do serves r with h through an httptest.ResponseRecorder and returns what
// h answered.
func Do(t TB, h http.Handler, r *http.Request) *Result {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	res := rec.Result()
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return &Result{Status: res.StatusCode, Header: res.Header, Body: body}
}

// Get serves a GET of target ("/orders/7" or a full URL) with h. Headers
// are given as name, value pairs.
func Get(t TB, h http.Handler, target string, header ...string) *Result {
	t.Helper()
	return Send(t, h, http.MethodGet, target, "", header...)
}

// Send serves a request with the given method, target, body and headers
// (name, value pairs) with h.
func Send(t TB, h http.Handler, method, target, body string, header ...string) *Result {
	t.Helper()
	if len(header)%2 != 0 {
		t.Fatalf("gatewaytest: headers must be name, value pairs, got %d strings", len(header))
		return nil
	}
	var rb io.Reader
	if body != "" {
		rb = strings.NewReader(body)
	}
	r := httptest.NewRequest(method, target, rb)
	for i := 0; i < len(header); i += 2 {
		r.Header.Add(header[i], header[i+1])
	}
	return Do(t, h, r)
}

// Problem decodes the result as an application/problem+json document,
// failing the test if it is not one.
func (res *Result) Problem(t TB) pylon.Problem {
	t.Helper()
	mt, _, _ := mime.ParseMediaType(res.Header.Get("Content-Type"))
	if mt != pylon.ProblemContentType {
		t.Fatalf("gatewaytest: Content-Type %q, want %s (body %.200q)", res.Header.Get("Content-Type"), pylon.ProblemContentType, res.Body)
		return pylon.Problem{}
	}
	var p pylon.Problem
	if err := json.Unmarshal(res.Body, &p); err != nil {
		t.Fatalf("gatewaytest: problem body %.200q: %v", res.Body, err)
	}
	return p
}

// AssertStatus checks the status code.
func AssertStatus(t TB, res *Result, want int) {
	t.Helper()
	if res.Status != want {
		t.Errorf("gatewaytest: status %d, want %d (body %.200q)", res.Status, want, res.Body)
	}
}

// AssertHeader checks that the response header name has the value want;
// want "" means the header must be absent.
func AssertHeader(t TB, res *Result, name, want string) {
	t.Helper()
	got, present := res.Header[http.CanonicalHeaderKey(name)]
	switch {
	case want == "" && present:
		t.Errorf("gatewaytest: header %s = %q, want it absent", name, got)
	case want != "" && (len(got) != 1 || got[0] != want):
		t.Errorf("gatewaytest: header %s = %q, want %q", name, got, want)
	}
}

// AssertBody checks the response body.
func AssertBody(t TB, res *Result, want string) {
	t.Helper()
	if string(res.Body) != want {
		t.Errorf("gatewaytest: body %.200q, want %.200q", res.Body, want)
	}
}

// AssertProblem checks that the result is a problem+json document whose
// status matches the response's and whose fields equal want's non-zero
// fields (Status, Title, Type, Detail, Instance, RequestID). It returns the
// decoded problem.
func AssertProblem(t TB, res *Result, want pylon.Problem) pylon.Problem {
	t.Helper()
	p := res.Problem(t)
	if p.Status != res.Status {
		t.Errorf("gatewaytest: problem status %d, response status %d", p.Status, res.Status)
	}
	check := func(field, got, want string) {
		if want != "" && got != want {
			t.Errorf("gatewaytest: problem %s %q, want %q", field, got, want)
		}
	}
	if want.Status != 0 && p.Status != want.Status {
		t.Errorf("gatewaytest: problem status %d, want %d", p.Status, want.Status)
	}
	check("title", p.Title, want.Title)
	check("type", p.Type, want.Type)
	check("detail", p.Detail, want.Detail)
	check("instance", p.Instance, want.Instance)
	check("request_id", p.RequestID, want.RequestID)
	return p
}

// ReadResult reads and closes res's body and returns it as a Result, for
// responses received over a real connection (an httptest.Server in front of
// the gateway).
func ReadResult(t TB, res *http.Response) *Result {
	t.Helper()
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("gatewaytest: reading response body: %v", err)
	}
	return &Result{Status: res.StatusCode, Header: res.Header, Body: body}
}
