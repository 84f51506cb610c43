package gatewaytest

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"time"
)

// MaxRecordedBody is the most request body bytes a [Backend] records per
// request; the rest is read and dropped.
const MaxRecordedBody = 1 << 20

// Response is one scripted answer of a [Backend].
type Response struct {
	// Status is the status code. Zero means 200.
	Status int
	// Header is copied to the response.
	Header http.Header
	// Body is the response body.
	Body string
	// Wait, when set, holds the response back until the channel is closed
	// (or receives), or the request's context ends: a slow upstream whose
	// pace the test controls, without sleeping.
	Wait <-chan struct{}
	// Delay holds the response back for this long, or until the request's
	// context ends. Prefer Wait in tests that must not depend on the clock.
	Delay time.Duration
	// Drop closes the connection without answering (after Wait and Delay),
	// as a crashed upstream would.
	Drop bool
}

// Request is what a [Backend] received.
type Request struct {
	Method   string
	Host     string
	Path     string // the decoded path
	RawPath  string // the path as sent, when it differs from Path's encoding
	RawQuery string
	Query    url.Values
	Header   http.Header
	Body     []byte // at most MaxRecordedBody bytes
}

// Backend is a recording httptest upstream. Its methods are safe for
// concurrent use.
type Backend struct {
	// URL is the backend's base URL ("http://127.0.0.1:PORT").
	URL string
	// Server is the httptest server underneath.
	Server *httptest.Server

	mu        sync.Mutex
	requests  []Request
	responses []Response
	handler   http.Handler
}

// NewBackend starts a recording upstream, closed by t.Cleanup. The i-th
// request gets responses[i]; once the list is used up, the last response
// repeats. With no responses, every request gets 200 with an empty body.
func NewBackend(t TB, responses ...Response) *Backend {
	t.Helper()
	b := &Backend{responses: append([]Response(nil), responses...)}
	b.start(t)
	return b
}

// NewBackendHandler starts a recording upstream that answers with h, closed
// by t.Cleanup. h sees the request body in full (up to MaxRecordedBody
// bytes, as recorded).
func NewBackendHandler(t TB, h http.Handler) *Backend {
	t.Helper()
	b := &Backend{handler: h}
	b.start(t)
	return b
}

func (b *Backend) start(t TB) {
	b.Server = httptest.NewServer(http.HandlerFunc(b.serve))
	b.URL = b.Server.URL
	t.Cleanup(b.Server.Close)
}

func (b *Backend) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, MaxRecordedBody))
	_, _ = io.Copy(io.Discard, r.Body)
	rec := Request{
		Method: r.Method, Host: r.Host, Path: r.URL.Path, RawPath: r.URL.RawPath,
		RawQuery: r.URL.RawQuery, Query: r.URL.Query(), Header: r.Header.Clone(), Body: body,
	}
	b.mu.Lock()
	n := len(b.requests)
	b.requests = append(b.requests, rec)
	h := b.handler
	var resp Response
	if len(b.responses) > 0 {
		resp = b.responses[min(n, len(b.responses)-1)]
	}
	b.mu.Unlock()

	if h != nil {
		r.Body = io.NopCloser(bytes.NewReader(body))
		h.ServeHTTP(w, r)
		return
	}
	if resp.Wait != nil {
		select {
		case <-resp.Wait:
		case <-r.Context().Done():
			return
		}
	}
	if resp.Delay > 0 {
		t := time.NewTimer(resp.Delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	if resp.Drop {
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			_ = conn.Close()
		}
		return
	}
	for k, v := range resp.Header {
		w.Header()[k] = append([]string(nil), v...)
	}
	status := resp.Status
	if status == 0 {
		status = http.StatusOK
	}
	w.WriteHeader(status)
	_, _ = io.WriteString(w, resp.Body)
}

// Requests returns a copy of every request received so far, in order.
func (b *Backend) Requests() []Request {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]Request(nil), b.requests...)
}

// Count returns how many requests the backend received.
func (b *Backend) Count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.requests)
}

// Last returns the last request received, failing the test if there was
// none.
func (b *Backend) Last(t TB) Request {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.requests) == 0 {
		t.Fatalf("gatewaytest: backend %s received no request", b.URL)
		return Request{}
	}
	return b.requests[len(b.requests)-1]
}
