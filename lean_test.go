package pylon

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// This file tests RunOptions.LeanHTTP1 against net/http: a differential
// harness (the same raw bytes to a lean and a net/http server with the same
// handler, answers compared), and behaviour tests of the lean server with
// real clients, each run against net/http too (bothServers), so that a test
// that fails only in its "lean" subtest is a divergence of the lean server.
// FuzzLeanServer, in lean_fuzz_test.go, feeds both servers arbitrary bytes.
//
// One difference is documented rather than tested: the lean loop cannot see
// srv.SetKeepAlivesEnabled(false) (net/http keeps that flag unexported).

// runLean serves srv with RunWithOptions (LeanHTTP1 as lean) on a fresh
// loopback listener until the test ends, and returns the address.
func runLean(t testing.TB, srv *http.Server, lean bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- RunWithOptions(ctx, srv, RunOptions{Listener: ln, LeanHTTP1: lean, DrainTimeout: 2 * time.Second})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("RunWithOptions (lean %v): %v", lean, err)
		}
	})
	return ln.Addr().String()
}

// syncBuffer is a bytes.Buffer safe for concurrent use, for srv.ErrorLog.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) take() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.b.String()
	s.b.Reset()
	return out
}

// diffHandler is the handler of the differential tests. Its path chooses a
// behaviour (see ServeHTTP); it notes what it saw of each request and what
// the ResponseWriter's methods returned, so that the two servers' handler
// views can be compared too.
type diffHandler struct {
	srv  *http.Server
	addr string // the listener's address

	mu       sync.Mutex
	notes    map[string][]string // by the client's address
	inflight atomic.Int32
}

func (h *diffHandler) note(r *http.Request, format string, args ...any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.notes == nil {
		h.notes = make(map[string][]string)
	}
	h.notes[r.RemoteAddr] = append(h.notes[r.RemoteAddr], fmt.Sprintf(format, args...))
}

// takeNotes waits (bounded) for running handlers to return, then returns
// the notes of the connection from client, and forgets all notes.
func (h *diffHandler) takeNotes(client string) []string {
	deadline := time.Now().Add(5 * time.Second)
	for h.inflight.Load() > 0 && time.Now().Before(deadline) {
		pollPause()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	n := h.notes[client]
	h.notes = nil
	if h.inflight.Load() > 0 {
		n = append(n, "handler still running after 5s")
	}
	return n
}

func (h *diffHandler) noteRequest(r *http.Request) {
	keys := make([]string, 0, len(r.Header))
	for k, v := range r.Header {
		keys = append(keys, k+"="+strings.Join(v, "|"))
	}
	sort.Strings(keys)
	la, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	_, rerr := netipAddrPort(r.RemoteAddr)
	h.note(r, "req %s uri=%q url=%q proto=%s(%d.%d) host=%q cl=%d te=%q close=%v hdr=%v trailer=%v body=%T srvctx=%v laddr=%v remote=%v",
		r.Method, r.RequestURI, r.URL.String(), r.Proto, r.ProtoMajor, r.ProtoMinor, r.Host, r.ContentLength,
		r.TransferEncoding, r.Close, keys, r.Trailer, r.Body == http.NoBody,
		r.Context().Value(http.ServerContextKey) == h.srv, la != nil && la.String() == h.addr, rerr == nil)
}

func netipAddrPort(s string) (string, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", err
	}
	if _, err := strconv.Atoi(port); err != nil {
		return "", err
	}
	return host, nil
}

// intParam is the query parameter name as an int in [0, 1 MiB] (a fuzzed
// request must not make the handler allocate without bound), or def.
func intParam(r *http.Request, name string, def int) int {
	if v, err := strconv.Atoi(r.URL.Query().Get(name)); err == nil {
		return min(max(v, 0), 1<<20)
	}
	return def
}

// writeN writes n bytes of 'a' in k writes and notes the results.
func (h *diffHandler) writeN(w http.ResponseWriter, r *http.Request, n, k int) {
	if k < 1 {
		k = 1
	}
	var res []string
	for i := range k {
		part := n / k
		if i == k-1 {
			part = n - part*(k-1)
		}
		m, err := w.Write(bytes.Repeat([]byte("a"), part))
		res = append(res, fmt.Sprintf("%d/%d:%v", m, part, err))
	}
	h.note(r, "writes %v", res)
}

func (h *diffHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.inflight.Add(1)
	defer h.inflight.Add(-1)
	hdr := w.Header()
	if r.URL.Path == "/probe" { // not noted: it may outlive an exchange that failed
		io.WriteString(w, "probe")
		return
	}
	h.noteRequest(r)
	switch r.URL.Path {
	case "/small", "/":
		io.WriteString(w, "hello")
	case "/size": // ?n=bytes&k=writes
		h.writeN(w, r, intParam(r, "n", 0), intParam(r, "k", 1))
	case "/echo":
		b, err := io.ReadAll(r.Body)
		h.note(r, "read %d %v", len(b), err)
		w.Write(b)
	case "/readn": // reads n bytes of the body, then answers
		b, err := io.ReadFull(r.Body, make([]byte, intParam(r, "n", 0)))
		h.note(r, "read %d %v", b, err)
		io.WriteString(w, "ok")
	case "/unread":
		io.WriteString(w, "ok")
	case "/cl": // ?declared=N&n=bytes&k=writes
		if v := r.URL.Query().Get("declared"); v != "" { // an empty one is /cl-empty
			hdr.Set("Content-Length", v)
		}
		h.writeN(w, r, intParam(r, "n", 0), intParam(r, "k", 1))
	case "/te": // ?v=chunked|identity&n=bytes
		// Without v no field is set: net/http sends a handler's empty
		// Transfer-Encoding beside its own "chunked", an answer no
		// client parses, which the lean loop does not copy.
		if v := r.URL.Query().Get("v"); v != "" {
			hdr.Set("Transfer-Encoding", v)
		}
		h.writeN(w, r, intParam(r, "n", 5), 1)
	case "/cl-empty":
		hdr["Content-Length"] = []string{""}
		h.writeN(w, r, intParam(r, "n", 5), 1)
	case "/maxbytes": // the body limited to 10 bytes
		r.Body = http.MaxBytesReader(w, r.Body, 10)
		_, err := io.ReadAll(r.Body)
		h.note(r, "read %v", err)
		if err != nil {
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			return
		}
		io.WriteString(w, "ok")
	case "/conn-header": // Connection: ?v
		hdr.Set("Connection", r.URL.Query().Get("v"))
		io.WriteString(w, "x")
	case "/write-then-read": // the response started (?n bytes), then the body read
		h.writeN(w, r, intParam(r, "n", 3000), 1)
		if intParam(r, "flush", 0) == 1 {
			w.(http.Flusher).Flush()
		}
		b, err := io.ReadAll(r.Body)
		h.note(r, "read after write %d %v", len(b), err)
	case "/cl-and-te":
		hdr.Set("Content-Length", "5")
		hdr.Set("Transfer-Encoding", "chunked")
		io.WriteString(w, "hello")
	case "/trailer-declared":
		hdr.Set("Trailer", "X-T, X-U")
		h.writeN(w, r, intParam(r, "n", 5), 1)
		hdr.Set("X-T", "tv")
		hdr.Set("X-Undeclared", "nope")
	case "/trailer-declared-unset":
		hdr.Set("Trailer", "X-T")
		io.WriteString(w, "hello")
	case "/trailer-prefix-before":
		hdr.Set(http.TrailerPrefix+"X-T", "tv")
		h.writeN(w, r, intParam(r, "n", 5), 1)
	case "/trailer-prefix-after":
		h.writeN(w, r, intParam(r, "n", 5), 1)
		hdr.Set(http.TrailerPrefix+"X-T", "tv")
	case "/trailer-undeclared":
		io.WriteString(w, "hello")
		hdr.Set("X-T", "tv")
	case "/early-hints":
		hdr.Set("Link", "</a.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		hdr.Set("X-After", "1")
		w.WriteHeader(http.StatusEarlyHints)
		io.WriteString(w, "body")
	case "/status": // ?code=N: WriteHeader(N), then a body write
		hdr.Set("X-Pre", "1")
		w.WriteHeader(intParam(r, "code", 200))
		n, err := io.WriteString(w, "body")
		h.note(r, "write %d %v", n, err)
	case "/status-headers": // a bodiless status with body headers set
		hdr.Set("Content-Type", "text/html")
		hdr.Set("Content-Length", "4")
		hdr.Set("ETag", `"e"`)
		w.WriteHeader(intParam(r, "code", 204))
		n, err := io.WriteString(w, "body")
		h.note(r, "write %d %v", n, err)
	case "/superfluous":
		w.WriteHeader(201)
		w.WriteHeader(202)
		io.WriteString(w, "x")
	case "/close-handler":
		hdr.Set("Connection", "close")
		io.WriteString(w, "bye")
	case "/keepalive-handler":
		hdr.Set("Connection", "keep-alive")
		io.WriteString(w, "hi")
	case "/sniff": // ?s=a|b: the parts as separate writes
		for _, p := range strings.Split(r.URL.Query().Get("s"), "|") {
			io.WriteString(w, p)
		}
	case "/gzip":
		hdr.Set("Content-Encoding", "gzip")
		w.Write([]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	case "/ct-nil":
		hdr["Content-Type"] = nil
		io.WriteString(w, "<html>")
	case "/date-set":
		hdr.Set("Date", "Mon, 01 Jan 2001 00:00:00 GMT")
		io.WriteString(w, "x")
	case "/date-nil":
		hdr["Date"] = nil
		io.WriteString(w, "x")
	case "/empty":
	case "/empty-write":
		w.Write(nil)
	case "/mutate-after-write":
		io.WriteString(w, "hi")
		hdr.Set("X-Late", "1")
	case "/mutate-after-writeheader":
		w.WriteHeader(200)
		hdr.Set("X-Late", "1")
		io.WriteString(w, "hi")
	case "/header-crlf":
		hdr.Set("X-Evil", "a\r\nInjected: yes")
		hdr["X-Lf"] = []string{"b\nAlso: yes"}
		io.WriteString(w, "x")
	case "/header-badkey":
		hdr["Bad Key"] = []string{"v"}
		hdr["X-Ok"] = []string{"v"}
		io.WriteString(w, "x")
	case "/header-multi":
		hdr["X-M"] = []string{"a", "b"}
		hdr["x-lower"] = []string{"raw"}
		io.WriteString(w, "x")
	case "/cl-invalid":
		hdr.Set("Content-Length", "abc")
		io.WriteString(w, "hello")
	case "/flush":
		io.WriteString(w, "a")
		w.(http.Flusher).Flush()
		io.WriteString(w, "b")
	case "/flush-empty":
		w.(http.Flusher).Flush()
		io.WriteString(w, "hi")
	case "/flush-rc":
		io.WriteString(w, "a")
		h.note(r, "flush %v", http.NewResponseController(w).Flush())
	case "/panic":
		panic("boom")
	case "/panic-after-write":
		io.WriteString(w, "partial")
		panic("boom")
	case "/panic-after-flush":
		io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		panic("boom")
	case "/abort":
		panic(http.ErrAbortHandler)
	case "/abort-after-flush":
		io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	case "/wh-invalid":
		w.WriteHeader(42)
	case "/hijack", "/hijack-after-write":
		if r.URL.Path == "/hijack-after-write" {
			io.WriteString(w, "early")
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			h.note(r, "hijack %v", err)
			return
		}
		defer conn.Close()
		b, _ := brw.Reader.Peek(brw.Reader.Buffered())
		h.note(r, "hijacked, buffered %q", b)
		brw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Hijacked: 1\r\n\r\nhi")
		brw.Flush()
		_, err = w.Write([]byte("x"))
		h.note(r, "write after hijack %v", err)
	case "/rc":
		rc := http.NewResponseController(w)
		h.note(r, "rd %v wd %v fd %v", rc.SetReadDeadline(time.Now().Add(time.Minute)),
			rc.SetWriteDeadline(time.Now().Add(time.Minute)), rc.EnableFullDuplex())
		io.WriteString(w, "ok")
	case "/duplex-echo":
		rc := http.NewResponseController(w)
		h.note(r, "fd %v", rc.EnableFullDuplex())
		io.WriteString(w, "start;")
		h.note(r, "flush %v", rc.Flush())
		b, err := io.ReadAll(r.Body)
		h.note(r, "read %d %v", len(b), err)
		w.Write(b)
	case "/interfaces":
		_, f := w.(http.Flusher)
		_, hj := w.(http.Hijacker)
		_, sw := w.(io.StringWriter)
		_, rf := w.(io.ReaderFrom)
		_, cn := w.(interface{ CloseNotify() <-chan bool })
		h.note(r, "flusher %v hijacker %v stringwriter %v readerfrom %v closenotifier %v", f, hj, sw, rf, cn)
		io.WriteString(w, "ok")
	case "/readfrom":
		n, err := io.Copy(w, strings.NewReader(strings.Repeat("r", intParam(r, "n", 10))))
		h.note(r, "copy %d %v", n, err)
	case "/body-close-early":
		buf := make([]byte, 10)
		n, _ := r.Body.Read(buf)
		h.note(r, "read %d close %v", n, r.Body.Close())
		io.WriteString(w, "ok")
	default:
		http.NotFound(w, r)
	}
}

// leanPair is a lean and a net/http server serving the same behaviours.
type leanPair struct {
	std, lean       string // addresses
	stdH, leanH     *diffHandler
	stdLog, leanLog *syncBuffer
}

// startLeanPair starts the two servers; guard chooses NewServer (the guard
// handler in front) over a bare http.Server.
func startLeanPair(t testing.TB, guard bool) *leanPair {
	t.Helper()
	p := &leanPair{stdH: &diffHandler{}, leanH: &diffHandler{}, stdLog: &syncBuffer{}, leanLog: &syncBuffer{}}
	start := func(h *diffHandler, lg *syncBuffer, lean bool) string {
		var srv *http.Server
		if guard {
			srv = NewServer("", h)
		} else {
			srv = &http.Server{Handler: h}
		}
		srv.ErrorLog = log.New(lg, "", 0)
		h.srv = srv
		// The address is known only once listening; runLean listens first
		// and the first request comes after it returns.
		addr := runLean(t, srv, lean)
		h.addr = addr
		return addr
	}
	p.std = start(p.stdH, p.stdLog, false)
	p.lean = start(p.leanH, p.leanLog, true)
	return p
}

// The outcome of one exchange: the responses as read, normalized, and what
// the connection did after the last one.
type leanOutcome struct {
	responses []string
	after     string // "open" (a probe request was answered), "closed", "hung"
	raw       string // every byte read, Date values masked
	client    string // the connection's local address
}

var dateLine = regexp.MustCompile(`(?m)^Date: [^\r\n]*`)

// requestMethods parses raw as a sequence of requests and returns their
// methods: the number of answers to expect and which are to HEAD. A request
// that does not parse counts as one (a 400), then parsing stops; so does a
// request that asks to close the connection.
func requestMethods(raw string) []string {
	br := bufio.NewReader(strings.NewReader(raw))
	var methods []string
	for {
		if _, err := br.Peek(1); err != nil {
			return methods
		}
		req, err := http.ReadRequest(br)
		if err != nil {
			return append(methods, "GET")
		}
		methods = append(methods, req.Method)
		if _, err := io.Copy(io.Discard, req.Body); err != nil {
			return methods
		}
		if req.Close || req.Header.Get("Upgrade") != "" || req.Method == "CONNECT" {
			return methods
		}
	}
}

func closedErr(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

func describeResponse(res *http.Response, body []byte, berr error) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s\n", res.Proto, res.Status)
	keys := make([]string, 0, len(res.Header))
	for k := range res.Header {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := strings.Join(res.Header[k], " | ")
		if k == "Date" && v != "Mon, 01 Jan 2001 00:00:00 GMT" {
			v = "<present>"
		}
		fmt.Fprintf(&b, "%s: %s\n", k, v)
	}
	fmt.Fprintf(&b, "framing: cl=%d te=%v close=%v\n", res.ContentLength, res.TransferEncoding, res.Close)
	if len(body) > 256 {
		fmt.Fprintf(&b, "body: %d bytes %q...%q\n", len(body), body[:32], body[len(body)-32:])
	} else {
		fmt.Fprintf(&b, "body: %q\n", body)
	}
	// A reset that ends a body delimited by the connection's close is
	// the server closing with unread bytes in its receive buffer, which
	// is timing: a body cut short by it shows in the body.
	if berr != nil && !(res.ContentLength < 0 && len(res.TransferEncoding) == 0 && errors.Is(berr, syscall.ECONNRESET)) {
		fmt.Fprintf(&b, "body error: %v\n", normErr(berr))
	}
	if len(res.Trailer) > 0 {
		tk := make([]string, 0, len(res.Trailer))
		for k, v := range res.Trailer {
			tk = append(tk, k+"="+strings.Join(v, "|"))
		}
		sort.Strings(tk)
		fmt.Fprintf(&b, "trailer: %v\n", tk)
	}
	return b.String()
}

// normErr names an error without the addresses in it.
func normErr(err error) string {
	switch {
	case err == nil:
		return "nil"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "unexpected EOF"
	case errors.Is(err, io.EOF):
		return "EOF"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.EPIPE):
		return "broken pipe"
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	}
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 && strings.Contains(s, "127.0.0.1") {
		s = s[i+2:]
	}
	return s
}

// leanExchange dials addr and, for each step, writes its bytes and reads
// the answers requestMethods expects. Then it sends a probe request to see
// whether the connection is still served.
func leanExchange(addr string, steps []string) (out leanOutcome) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		out.after = "dial: " + err.Error()
		return out
	}
	defer conn.Close()
	out.client = conn.LocalAddr().String()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	var raw bytes.Buffer
	br := bufio.NewReader(io.TeeReader(conn, &raw))
	defer func() { out.raw = dateLine.ReplaceAllString(raw.String(), "Date: <masked>") }()

	readAnswers := func(methods []string) bool {
		for _, m := range methods {
			for {
				res, err := http.ReadResponse(br, &http.Request{Method: m})
				if err != nil {
					out.responses = append(out.responses, "read error: "+normErr(err))
					return false
				}
				body, berr := io.ReadAll(res.Body)
				res.Body.Close()
				out.responses = append(out.responses, describeResponse(res, body, berr))
				if berr != nil {
					return false
				}
				if res.StatusCode == http.StatusSwitchingProtocols {
					return false
				}
				if res.StatusCode >= 200 {
					break
				}
			}
		}
		return true
	}
	for _, step := range steps {
		wrote := make(chan struct{})
		go func() {
			defer close(wrote)
			io.WriteString(conn, step)
		}()
		ok := readAnswers(requestMethods(step))
		<-wrote
		if !ok {
			break
		}
	}
	// Is the connection still served?
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(conn, "GET /probe HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		out.after = "closed"
		return out
	}
	res, err := http.ReadResponse(br, nil)
	switch {
	case err == nil:
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		out.after = "open"
	case errors.Is(err, os.ErrDeadlineExceeded):
		out.after = "hung"
	case closedErr(err):
		out.after = "closed"
	default:
		out.after = "probe answer unreadable: " + normErr(err)
	}
	return out
}

// logKinds reduces an ErrorLog's text to its "http: ..." lines, addresses
// masked, without stacks.
func logKinds(s string) []string {
	addr := regexp.MustCompile(`127\.0\.0\.1:\d+`)
	var kinds []string
	for line := range strings.Lines(s) {
		if strings.HasPrefix(line, "goroutine ") || strings.HasPrefix(line, "\t") || strings.TrimSpace(line) == "" {
			continue
		}
		if strings.HasPrefix(line, "http:") || strings.Contains(line, "panic") {
			kinds = append(kinds, addr.ReplaceAllString(strings.TrimSpace(line), "ADDR"))
		}
	}
	return kinds
}

// compare runs steps against both servers and reports every difference.
func (p *leanPair) compare(t *testing.T, steps []string) {
	t.Helper()
	var stdOut, leanOut leanOutcome
	var wg sync.WaitGroup
	wg.Go(func() { stdOut = leanExchange(p.std, steps) })
	wg.Go(func() { leanOut = leanExchange(p.lean, steps) })
	wg.Wait()
	stdNotes, leanNotes := p.stdH.takeNotes(stdOut.client), p.leanH.takeNotes(leanOut.client)
	stdLog, leanLog := p.stdLog.take(), p.leanLog.take()

	assert.Equal(t, stdOut.responses, leanOut.responses, "responses (net/http, then lean)")
	assert.Equal(t, stdOut.after, leanOut.after, "connection after the answers (net/http, then lean)")
	assert.Equal(t, stdNotes, leanNotes, "the handler's view (net/http, then lean)")
	stdKinds, leanKinds := logKinds(stdLog), logKinds(leanLog)
	assert.Equal(t, countContaining(stdKinds, "panic"), countContaining(leanKinds, "panic"),
		"panics logged: net/http %q, lean %q", stdKinds, leanKinds)
	if !slices.Equal(stdKinds, leanKinds) {
		t.Logf("ErrorLog differs (not a failure):\nnet/http: %q\nlean:     %q", stdKinds, leanKinds)
	}
	if stdOut.raw != leanOut.raw && !t.Failed() {
		t.Logf("raw bytes differ (header order or chunk sizes; not a failure):\nnet/http: %q\nlean:     %q", stdOut.raw, leanOut.raw)
	}
	if t.Failed() {
		t.Logf("raw net/http: %q", stdOut.raw)
		t.Logf("raw lean:     %q", leanOut.raw)
	}
}

func countContaining(ss []string, sub string) int {
	n := 0
	for _, s := range ss {
		if strings.Contains(s, sub) {
			n++
		}
	}
	return n
}

func get(path string) string { return "GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n" }
func head(path string) string {
	return "HEAD " + path + " HTTP/1.1\r\nHost: x\r\n\r\n"
}
func post(path, body string) string {
	return "POST " + path + " HTTP/1.1\r\nHost: x\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
}

// headOfSize is a GET /small whose head (through the empty line) is n
// bytes long.
func headOfSize(n int) string {
	const pre, post = "GET /small HTTP/1.1\r\nHost: x\r\nX-Pad: ", "\r\n\r\n"
	return pre + strings.Repeat("p", n-len(pre)-len(post)) + post
}

type leanCase struct {
	name  string
	steps []string // each written, then its answers read
}

// leanCases is the table of the differential tests and the fuzz seeds.
func leanCases() []leanCase {
	kib := strings.Repeat("k", 1<<10)
	big := strings.Repeat("b", 300<<10)
	c := func(name string, steps ...string) leanCase { return leanCase{name, steps} }
	cases := []leanCase{
		c("GET small", get("/small")),
		c("HEAD small", head("/small")),
		c("GET 404", get("/nothing-here")),
		c("POST echo", post("/echo", "hello body")),
		c("POST empty body", post("/echo", "")),
		c("GET with body unread", "GET /small HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"),
		c("keep-alive sequence", get("/small"), post("/echo", "one"), head("/small"), get("/size?n=3000")),
		c("pipelined", get("/small")+post("/echo", "two")+head("/size?n=10")+get("/size?n=5000")),
		c("pipelined after close", "GET /small HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"+get("/small")),
		c("absolute URI", "GET http://other.example/small?q=1 HTTP/1.1\r\nHost: x\r\n\r\n"),
		c("query and escapes", get("/small?a=1&b=%20x#frag")),
		c("asterisk GET", "GET * HTTP/1.1\r\nHost: x\r\n\r\n"),
		c("lowercase method", "get /small HTTP/1.1\r\nHost: x\r\n\r\n"),
		c("empty Host", "GET /small HTTP/1.1\r\nHost: \r\n\r\n"),
		c("Host with port", "GET /small HTTP/1.1\r\nHost: x:8080\r\n\r\n"),
		c("multiple headers", "GET /small HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nX-A: 2\r\nx-lower: y\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n"),
		c("obs-fold", "GET /small HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n"),
		c("Pragma no-cache", "GET /small HTTP/1.1\r\nHost: x\r\nPragma: no-cache\r\n\r\n"),
		c("duplicate equal CL", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"),
		c("Connection keep-alive 1.1", "GET /small HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n"),
		c("HTTP/1.2", "GET /small HTTP/1.2\r\nHost: x\r\n\r\n"),

		// Sizes around the 2048-byte buffer.
		c("size 0", get("/size?n=0")),
		c("size 1", get("/size?n=1")),
		c("size 2047", get("/size?n=2047")),
		c("size 2048", get("/size?n=2048")),
		c("size 2049", get("/size?n=2049")),
		c("size 2048 in 2 writes", get("/size?n=2048&k=2")),
		c("size 2049 in 2 writes", get("/size?n=2049&k=2")),
		c("size 4096", get("/size?n=4096")),
		c("size 5000 in 5 writes", get("/size?n=5000&k=5")),
		c("size 100000", get("/size?n=100000&k=7")),
		c("HEAD size 0", head("/size?n=0")),
		c("HEAD size 2048", head("/size?n=2048")),
		c("HEAD size 2049", head("/size?n=2049")),
		c("HEAD size 5000 in 3 writes", head("/size?n=5000&k=3")),
		c("readfrom small", get("/readfrom?n=10")),
		c("readfrom large", get("/readfrom?n=70000")),

		// Content-Length from the handler.
		c("CL right", get("/cl?declared=5&n=5")),
		c("CL right in 2 writes", get("/cl?declared=4000&n=4000&k=2")),
		c("CL body too short", get("/cl?declared=10&n=5")),
		c("CL body too long", get("/cl?declared=3&n=5")),
		c("CL body too long in 2 writes", get("/cl?declared=3&n=4&k=2")),
		c("CL zero", get("/cl?declared=0&n=0")),
		c("CL invalid", get("/cl-invalid")),
		c("CL negative", get("/cl?declared=-1&n=3")),
		c("HEAD CL declared", head("/cl?declared=10&n=0")),
		c("HEAD CL declared with body", head("/cl?declared=5&n=5")),
		c("CL too short then next request", get("/cl?declared=10&n=5"), get("/small")),
		c("TE chunked", get("/te?v=chunked")),
		c("TE chunked large", get("/te?v=chunked&n=3000")),
		c("TE identity", get("/te?v=identity")),
		c("TE gzip", get("/te?v=gzip")),
		c("CL and TE", get("/cl-and-te")),
		c("CL empty", get("/cl-empty")),
		c("HEAD CL empty", head("/cl-empty?n=0")),

		// Trailers.
		c("trailer declared", get("/trailer-declared")),
		c("trailer declared large", get("/trailer-declared?n=3000")),
		c("trailer declared unset", get("/trailer-declared-unset")),
		c("HEAD trailer declared", head("/trailer-declared")),
		c("trailer prefix before", get("/trailer-prefix-before")),
		c("trailer prefix before large", get("/trailer-prefix-before?n=3000")),
		c("trailer prefix after small", get("/trailer-prefix-after")),
		c("trailer prefix after large", get("/trailer-prefix-after?n=3000")),
		c("trailer undeclared", get("/trailer-undeclared")),

		// Status codes.
		c("103 early hints", get("/early-hints")),
		c("HEAD 103 early hints", head("/early-hints")),
		c("102 then 200", get("/status?code=102")),
		c("100 from handler", get("/status?code=100")),
		c("101 from handler", get("/status?code=101")),
		c("204 with body", get("/status?code=204")),
		c("304 with body", get("/status?code=304")),
		c("205 with body", get("/status?code=205")),
		c("204 with body headers", get("/status-headers?code=204")),
		c("304 with body headers", get("/status-headers?code=304")),
		c("HEAD 304", head("/status-headers?code=304")),
		c("404 from WriteHeader", get("/status?code=404")),
		c("unknown status 499", get("/status?code=499")),
		c("status 299", get("/status?code=299")),
		c("status 600", get("/status?code=600")),
		c("status 999", get("/status?code=999")),
		c("invalid status 42", get("/wh-invalid")),
		c("superfluous WriteHeader", get("/superfluous")),
		c("204 keep-alive then next", get("/status?code=204"), get("/small")),
		c("304 keep-alive then next", get("/status?code=304"), get("/small")),

		// Headers the server adds or suppresses.
		c("sniff html", get("/sniff?s=%3Chtml%3E%3Cbody%3Ehi")),
		c("sniff split writes", get("/sniff?s=%3Chtm|l%3E%3Cbody%3Ehi")),
		c("sniff png", get("/sniff?s=%89PNG%0D%0A%1A%0A")),
		c("sniff empty", get("/empty")),
		c("empty write", get("/empty-write")),
		c("content-encoding no sniff", get("/gzip")),
		c("content-type nil", get("/ct-nil")),
		c("date set", get("/date-set")),
		c("date nil", get("/date-nil")),
		c("header set after write", get("/mutate-after-write")),
		c("header set after WriteHeader", get("/mutate-after-writeheader")),
		c("header value with CRLF", get("/header-crlf")),
		c("header bad key", get("/header-badkey")),
		c("header multi and raw case", get("/header-multi")),

		// Connection management.
		c("request Connection: close", "GET /small HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
		c("request Connection: Close mixed", "GET /small HTTP/1.1\r\nHost: x\r\nConnection: foo, Close\r\n\r\n"),
		c("handler Connection: close", get("/close-handler")),
		c("handler Connection: keep-alive", get("/keepalive-handler")),
		c("handler Connection: Close", get("/conn-header?v=Close")),
		c("handler Connection: close, foo", get("/conn-header?v=close,%20foo")),
		c("handler Connection: upgrade", get("/conn-header?v=upgrade")),
		c("MaxBytesReader over the limit", post("/maxbytes", kib)),
		c("MaxBytesReader under the limit", post("/maxbytes", "small")),
		c("POST then CRLF then GET", post("/echo", "abc")+"\r\n"+get("/small")),
		c("GET then CRLF then GET", get("/small")+"\r\n"+get("/small")),
		c("unread body 1 KiB", post("/unread", kib)),
		c("unread body 1 KiB then next", post("/unread", kib), get("/small")),
		c("unread body 300 KiB", post("/unread", big)),
		c("unread body 256 KiB - 1", post("/unread", big[:256<<10-1])),
		c("unread body 256 KiB", post("/unread", big[:256<<10])),
		c("unread body 256 KiB + 1", post("/unread", big[:256<<10+1])),
		c("body partly read of 300 KiB", post("/readn?n=100", big)),
		c("body closed early", post("/body-close-early", kib)),
		c("body read after 3000 bytes written", post("/write-then-read", kib)),
		c("body read after a flush", post("/write-then-read?n=5&flush=1", kib)),
		c("body read after small write", post("/write-then-read?n=5", kib)),
		c("echo 300 KiB", post("/echo", big)),
		c("flush", get("/flush")),
		c("flush empty", get("/flush-empty")),
		c("flush via controller", get("/flush-rc")),
		c("HEAD flush", head("/flush")),
		c("panic", get("/panic")),
		c("panic after write", get("/panic-after-write")),
		c("panic after flush", get("/panic-after-flush")),
		c("abort handler", get("/abort")),
		c("abort after flush", get("/abort-after-flush")),
		c("hijack", get("/hijack")),
		c("hijack with pipelined bytes", get("/hijack")+"EXTRA BYTES"),
		c("hijack after write", get("/hijack-after-write")),
		c("response controller", get("/rc")),
		c("interfaces", get("/interfaces")),
		c("full duplex echo", post("/duplex-echo", "duplex")),

		// Handed over to net/http.
		c("HTTP/1.0", "GET /small HTTP/1.0\r\nHost: x\r\n\r\n"),
		c("HTTP/1.0 keep-alive", "GET /small HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n", "GET /small HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"),
		c("HTTP/1.0 no Host", "GET /small HTTP/1.0\r\n\r\n"),
		c("HTTP/1.1 after HTTP/1.0 keep-alive", "GET /small HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", get("/small")),
		c("keep-alive then HTTP/1.0", get("/small"), "GET /size?n=3000 HTTP/1.0\r\n\r\n"),
		// Shorter than the h2c preface (24 bytes), after a request.
		c("keep-alive then short HTTP/1.0", get("/small"), "GET / HTTP/1.0\r\n\r\n"),
		c("keep-alive then short garbage", get("/small"), "garbage\r\n\r\n"),
		c("keep-alive then short missing Host", get("/small"), "GET / HTTP/1.1\r\n\r\n"),
		c("chunked request", "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
		c("chunked request with trailer", "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n3\r\nabc\r\n0\r\nX-T: v\r\n\r\n"),
		c("keep-alive then chunked", get("/small"), "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
		c("TE identity request", "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\nContent-Length: 3\r\n\r\nabc"),
		c("TE gzip, chunked request", "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
		c("CL+TE smuggling", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"+get("/admin")),
		c("TE+CL smuggling", "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n3\r\nabc\r\n0\r\n\r\n"+get("/admin")),
		c("obs-folded TE", "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"+get("/admin")),
		c("Expect 100-continue", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello"),
		c("Expect 100-continue unread", "POST /unread HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello"),
		c("Expect unknown", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: bogus\r\n\r\nhello"),
		c("Upgrade websocket", "GET /small HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"),
		c("Upgrade h2c", "GET /small HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"),
		c("CONNECT", "CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n"),
		c("OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n"),
		c("OPTIONS * with body", "OPTIONS * HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"),
		c("OPTIONS path", "OPTIONS /small HTTP/1.1\r\nHost: x\r\n\r\n"),
		c("h2c preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
		c("duplicate Host", "GET /small HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n"),
		c("missing Host", "GET /small HTTP/1.1\r\n\r\n"),
		c("invalid Host", "GET /small HTTP/1.1\r\nHost: a b\r\n\r\n"),
		c("Host with slash", "GET /small HTTP/1.1\r\nHost: a/b\r\n\r\n"),
		c("bare LF", "GET /small HTTP/1.1\nHost: x\n\n"),
		c("bare LF in headers only", "GET /small HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n"),
		c("bare CR", "GET /small HTTP/1.1\rHost: x\r\n\r\n"),
		c("header line over 4 KiB", "GET /small HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("a", 5000)+"\r\n\r\n"),
		c("head just under 4 KiB", "GET /small HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("a", 4000)+"\r\n\r\n"),
		c("many headers over 4 KiB", "GET /small HTTP/1.1\r\nHost: x\r\n"+strings.Repeat("X-Many: aaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n", 200)+"\r\n"),
		c("URI over 4 KiB", get("/small?"+strings.Repeat("q", 5000))),
		c("head of 4095 bytes, pipelined", headOfSize(4095)+get("/small")),
		c("head of 4096 bytes, pipelined", headOfSize(4096)+get("/small")),
		c("head of 4097 bytes, pipelined", headOfSize(4097)+get("/small")),
		c("head of 4096 bytes after a request", get("/small"), headOfSize(4096)),
		c("head of 4097 bytes after a request", get("/small"), headOfSize(4097)),
		c("head over 64 KiB", "GET /small HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("a", 70<<10)+"\r\n\r\n"),
		c("invalid header name", "GET /small HTTP/1.1\r\nHost: x\r\nBad Header: v\r\n\r\n"),
		c("invalid header name byte", "GET /small HTTP/1.1\r\nHost: x\r\nX-A\x01: v\r\n\r\n"),
		c("invalid header value CTL", "GET /small HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n"),
		c("invalid header value NUL", "GET /small HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n"),
		c("invalid header value DEL", "GET /small HTTP/1.1\r\nHost: x\r\nX-A: a\x7fb\r\n\r\n"),
		c("header value obs-text", "GET /small HTTP/1.1\r\nHost: x\r\nX-A: caf\xe9\r\n\r\n"),
		c("header value tab", "GET /small HTTP/1.1\r\nHost: x\r\nX-A: a\tb\r\n\r\n"),
		c("space before colon", "GET /small HTTP/1.1\r\nHost: x\r\nX-A : v\r\n\r\n"),
		c("no colon", "GET /small HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n"),
		c("leading space header", "GET /small HTTP/1.1\r\n Host: x\r\n\r\n"),
		c("two CLs differing", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
		c("CL list", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc"),
		c("CL negative request", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"),
		c("CL plus sign", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc"),
		c("CL huge", "POST /unread HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n"),
		c("CL body truncated", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc"),
		c("HTTP/2.0 request line", "GET /small HTTP/2.0\r\nHost: x\r\n\r\n"),
		c("HTTP/0.9", "GET /small HTTP/0.9\r\nHost: x\r\n\r\n"),
		c("HTTP/1.1 lowercase", "GET /small http/1.1\r\nHost: x\r\n\r\n"),
		c("no version", "GET /small\r\nHost: x\r\n\r\n"),
		c("double space", "GET  /small HTTP/1.1\r\nHost: x\r\n\r\n"),
		c("leading CRLF", "\r\n"+get("/small")),
		c("bad method", "G(T /small HTTP/1.1\r\nHost: x\r\n\r\n"),
		c("bad URI", "GET small HTTP/1.1\r\nHost: x\r\n\r\n"),
		c("URI with space", "GET /a b HTTP/1.1\r\nHost: x\r\n\r\n"),
		c("URI bad escape", "GET /small%zz HTTP/1.1\r\nHost: x\r\n\r\n"),
		c("URI raw UTF-8", "GET /caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n"),
		c("URI control byte", "GET /a\x01b HTTP/1.1\r\nHost: x\r\n\r\n"),
		c("Host IPv6", "GET /small HTTP/1.1\r\nHost: [::1]:80\r\n\r\n"),
		c("HEAD with body", "HEAD /small HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"),
		c("CL leading zeros", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 003\r\n\r\nabc"),
		c("CL with spaces", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length:  3 \r\n\r\nabc"),
		c("garbage", "\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03garbage\r\n\r\n"),
		c("garbage text", "hello world\r\n\r\n"),
		c("keep-alive then garbage", get("/small"), "garbage\r\n\r\n"),
		c("good then bad pipelined", get("/small")+"GET /x HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n"),
	}
	return cases
}

// pollPause yields briefly while polling for handlers to finish.
func pollPause() { <-time.After(time.Millisecond) }

func TestLeanDifferential(t *testing.T) {
	for _, guard := range []bool{true, false} {
		name := "NewServer"
		if !guard {
			name = "bare"
		}
		t.Run(name, func(t *testing.T) {
			p := startLeanPair(t, guard)
			for _, tc := range leanCases() {
				t.Run(tc.name, func(t *testing.T) { p.compare(t, tc.steps) })
			}
		})
	}
}

// leanRun serves srv with RunWithOptions on a fresh loopback listener and
// returns the address, the cancel that starts the shutdown, and the channel
// RunWithOptions's result arrives on. The test's end cancels and waits too.
func leanRun(t *testing.T, srv *http.Server, opts RunOptions) (addr string, cancel context.CancelFunc, done <-chan error) {
	t.Helper()
	ln := listen(t)
	opts.Listener = ln
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	finished := make(chan struct{})
	var result error
	go func() {
		result = RunWithOptions(ctx, srv, opts)
		errc <- result
		close(finished)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-finished:
		case <-time.After(10 * time.Second):
			t.Errorf("RunWithOptions did not return 10s after its context ended")
		}
	})
	return ln.Addr().String(), cancel, errc
}

// bothServers runs f as two subtests, against net/http and the lean server,
// so that every behaviour test is checked against net/http too.
func bothServers(t *testing.T, f func(t *testing.T, lean bool)) {
	t.Run("net-http", func(t *testing.T) { f(t, false) })
	t.Run("lean", func(t *testing.T) { f(t, true) })
}

// leanWait polls cond every millisecond until it holds or d passes.
func leanWait(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		pollPause()
	}
}

// readClosed reports whether the server closed conn within d: it reads
// what is left until EOF (or a reset) and fails if the connection is still
// open at the deadline. What was read is returned.
func readClosed(conn net.Conn, br *bufio.Reader, d time.Duration) (string, error) {
	conn.SetReadDeadline(time.Now().Add(d))
	b, err := io.ReadAll(br)
	if err == nil || closedErr(err) {
		return string(b), nil
	}
	return string(b), fmt.Errorf("connection not closed (read %q): %w", b, err)
}

// describeRaw is raw, responses read from it, as describeResponse puts
// them, so that header order does not count.
func describeRaw(raw string) string {
	br := bufio.NewReader(strings.NewReader(raw))
	var out []string
	for {
		if _, err := br.Peek(1); err != nil {
			break
		}
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			rest, _ := io.ReadAll(br)
			out = append(out, fmt.Sprintf("unparsed: %v %q", err, rest))
			break
		}
		body, berr := io.ReadAll(res.Body)
		out = append(out, describeResponse(res, body, berr))
	}
	return strings.Join(out, "---\n")
}

// assertClosed asserts that the server closed conn within 5s with nothing
// more sent.
func assertClosed(t *testing.T, conn net.Conn, br *bufio.Reader, msgAndArgs ...any) {
	t.Helper()
	rest, err := readClosed(conn, br, 5*time.Second)
	assert.NoError(t, err, msgAndArgs...)
	assert.Empty(t, rest, msgAndArgs...)
}

func rawConn(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	require.NoError(t, conn.SetDeadline(time.Now().Add(10*time.Second)))
	return conn, bufio.NewReader(conn)
}

func readBody(t *testing.T, br *bufio.Reader, method string) (*http.Response, string) {
	t.Helper()
	res, err := http.ReadResponse(br, &http.Request{Method: method})
	require.NoError(t, err)
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	res.Body.Close()
	return res, string(b)
}

func TestLeanClientKeepAliveReuse(t *testing.T) {
	bothServers(t, func(t *testing.T, lean bool) {
		var conns atomic.Int32
		srv := NewServer("", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			fmt.Fprintf(w, "%s %s %d", r.Method, r.URL.Path, len(b))
		}))
		srv.ConnState = func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				conns.Add(1)
			}
		}
		addr, _, _ := leanRun(t, srv, RunOptions{LeanHTTP1: lean})
		tr := &http.Transport{}
		defer tr.CloseIdleConnections()
		client := &http.Client{Transport: tr}
		for i := range 20 {
			var res *http.Response
			var err error
			switch i % 3 {
			case 0:
				res, err = client.Get("http://" + addr + "/g")
			case 1:
				res, err = client.Post("http://"+addr+"/p", "text/plain", strings.NewReader(strings.Repeat("x", i*100)))
			default:
				res, err = client.Head("http://" + addr + "/h")
			}
			require.NoError(t, err)
			b, err := io.ReadAll(res.Body)
			require.NoError(t, err)
			res.Body.Close()
			assert.Equal(t, 200, res.StatusCode)
			switch i % 3 {
			case 0:
				assert.Equal(t, "GET /g 0", string(b))
			case 1:
				assert.Equal(t, fmt.Sprintf("POST /p %d", i*100), string(b))
			default:
				assert.Empty(t, b)
			}
		}
		assert.Equal(t, int32(1), conns.Load(), "one connection reused for every request")
	})
}

func TestLeanGatewayProxy(t *testing.T) {
	bothServers(t, func(t *testing.T, lean bool) {
		up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			w.Header().Set("X-Up", r.Method+" "+r.URL.Path)
			w.Header().Set("Trailer", "X-Up-Trailer")
			if r.URL.Path == "/big" {
				w.Write(bytes.Repeat([]byte("z"), 200<<10))
			} else {
				w.Write(b)
			}
			w.Header().Set("X-Up-Trailer", "t")
		})
		g := New(Options{})
		g.Route("/").To(backend(t, BackendOptions{Targets: []string{up.URL}}))
		addr, _, _ := leanRun(t, NewServer("", g), RunOptions{LeanHTTP1: lean})
		tr := &http.Transport{}
		defer tr.CloseIdleConnections()
		client := &http.Client{Transport: tr}

		res, err := client.Post("http://"+addr+"/echo", "text/plain", strings.NewReader("through the gateway"))
		require.NoError(t, err)
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		assert.Equal(t, 200, res.StatusCode)
		assert.Equal(t, "through the gateway", string(b))
		assert.Equal(t, "POST /echo", res.Header.Get("X-Up"))
		assert.Equal(t, "t", res.Trailer.Get("X-Up-Trailer"))

		res, err = client.Get("http://" + addr + "/big")
		require.NoError(t, err)
		b, _ = io.ReadAll(res.Body)
		res.Body.Close()
		assert.Equal(t, 200<<10, len(b))

		// A route that is not there is the gateway's own answer.
		g2 := New(Options{})
		g2.Route("/only").To(backend(t, BackendOptions{Targets: []string{up.URL}}))
		addr2, _, _ := leanRun(t, NewServer("", g2), RunOptions{LeanHTTP1: lean})
		res, err = client.Get("http://" + addr2 + "/elsewhere")
		require.NoError(t, err)
		res.Body.Close()
		assert.Equal(t, 404, res.StatusCode)
	})
}

func TestLeanWebSocketThroughGateway(t *testing.T) {
	bothServers(t, func(t *testing.T, lean bool) {
		up := wsUpstream(t, func(brw *bufio.ReadWriter) {
			for {
				line, err := brw.ReadString('\n')
				if err != nil {
					return
				}
				brw.WriteString("echo:" + line)
				brw.Flush()
			}
		})
		g := New(Options{})
		g.Route("/").To(backend(t, BackendOptions{Targets: []string{up.URL}}))
		addr, cancel, done := leanRun(t, NewServer("", g), RunOptions{LeanHTTP1: lean, DrainTimeout: 200 * time.Millisecond})

		conn, br := rawConn(t, addr)
		// A plain request first: the upgrade comes on a kept-alive connection.
		io.WriteString(conn, get("/plain"))
		res, err := http.ReadResponse(br, nil)
		require.NoError(t, err)
		io.Copy(io.Discard, res.Body)
		res.Body.Close()

		io.WriteString(conn, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		res, err = http.ReadResponse(br, nil)
		require.NoError(t, err)
		require.Equal(t, 101, res.StatusCode)
		assert.Equal(t, "websocket", res.Header.Get("Upgrade"))
		for _, msg := range []string{"hello\n", "again\n"} {
			io.WriteString(conn, msg)
			line, err := br.ReadString('\n')
			require.NoError(t, err)
			assert.Equal(t, "echo:"+msg, line)
		}
		// The shutdown closes the tunnel at the drain deadline.
		cancel()
		require.NoError(t, <-done)
		assertClosed(t, conn, br)
	})
}

func TestLeanH2CPriorKnowledge(t *testing.T) {
	bothServers(t, func(t *testing.T, lean bool) {
		addr, _, _ := leanRun(t, NewServer("", protoEcho()), RunOptions{LeanHTTP1: lean})
		for _, tc := range []struct {
			name   string
			client *http.Client
			want   string
		}{
			{"h2c", h2cClient(t), "HTTP/2.0"},
			{"http1", &http.Client{Transport: &http.Transport{}}, "HTTP/1.1"},
			{"h2c again", h2cClient(t), "HTTP/2.0"},
		} {
			for range 3 {
				res, err := tc.client.Get("http://" + addr + "/")
				require.NoError(t, err, tc.name)
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				assert.Equal(t, tc.want, string(b), tc.name)
			}
			tc.client.CloseIdleConnections()
		}
	})
}

func TestLeanClientGoneCancelsContext(t *testing.T) {
	for _, tc := range []struct{ name, raw string }{
		{"GET", get("/wait")},
		{"POST read", post("/wait?read=1", "body")},
		{"second request on the connection", get("/quick") + get("/wait")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bothServers(t, func(t *testing.T, lean bool) {
				started := make(chan struct{}, 1)
				result := make(chan error, 1)
				h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if r.URL.Path == "/quick" {
						io.WriteString(w, "quick")
						return
					}
					if r.URL.Query().Get("read") != "" {
						io.ReadAll(r.Body)
					}
					started <- struct{}{}
					select {
					case <-r.Context().Done():
						result <- r.Context().Err()
					case <-time.After(5 * time.Second):
						result <- errors.New("context not cancelled 5s after the client left")
					}
				})
				addr, _, _ := leanRun(t, NewServer("", h), RunOptions{LeanHTTP1: lean})
				conn, err := net.Dial("tcp", addr)
				require.NoError(t, err)
				io.WriteString(conn, tc.raw)
				<-started
				conn.Close()
				assert.ErrorIs(t, <-result, context.Canceled)
			})
		})
	}
}

func TestLeanRequestContextEndsWithHandler(t *testing.T) {
	bothServers(t, func(t *testing.T, lean bool) {
		ctxs := make(chan context.Context, 1)
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ctxs <- r.Context()
			io.WriteString(w, "ok")
		})
		addr, _, _ := leanRun(t, NewServer("", h), RunOptions{LeanHTTP1: lean})
		conn, br := rawConn(t, addr)
		io.WriteString(conn, get("/"))
		readBody(t, br, "GET")
		ctx := <-ctxs
		leanWait(t, 5*time.Second, "request context cancelled after the handler returned", func() bool { return ctx.Err() != nil })
	})
}

func TestLeanGracefulDrain(t *testing.T) { testLeanDrain(t, get, false) }

// testLeanDrain: an idle keep-alive connection is closed when the shutdown
// starts, a request in flight finishes first; request writes the request
// for a path (handedOver: one the lean loop hands to net/http).
func testLeanDrain(t *testing.T, request func(path string) string, handedOver bool) {
	bothServers(t, func(t *testing.T, lean bool) {
		started := make(chan struct{})
		finish := make(chan struct{})
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/slow" {
				close(started)
				<-finish
			}
			io.WriteString(w, "done "+r.URL.Path)
		})
		addr, cancel, done := leanRun(t, NewServer("", h), RunOptions{LeanHTTP1: lean, DrainTimeout: 10 * time.Second})

		idle, idleBr := rawConn(t, addr)
		io.WriteString(idle, request("/first"))
		_, body := readBody(t, idleBr, "GET")
		assert.Equal(t, "done /first", body)

		busy, busyBr := rawConn(t, addr)
		io.WriteString(busy, request("/slow"))
		<-started
		cancel()

		// The idle keep-alive connection is closed.
		assertClosed(t, idle, idleBr, "idle connection")
		select {
		case err := <-done:
			t.Fatalf("RunWithOptions returned before the in-flight request finished: %v", err)
		default:
		}
		close(finish)
		res, body := readBody(t, busyBr, "GET")
		assert.Equal(t, "done /slow", body)
		if !handedOver {
			assert.True(t, res.Close, "the in-flight response says Connection: close")
		}
		assertClosed(t, busy, busyBr, "in-flight connection after its response")
		assert.NoError(t, <-done)
		if !handedOver {
			_, err := net.DialTimeout("tcp", addr, time.Second)
			assert.Error(t, err, "the listener is closed")
		}
	})
}

func TestLeanDrainDeadlineClosesStuckRequest(t *testing.T) {
	bothServers(t, func(t *testing.T, lean bool) {
		started := make(chan struct{})
		ended := make(chan error, 1)
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			close(started)
			select {
			case <-r.Context().Done():
				ended <- r.Context().Err()
			case <-time.After(10 * time.Second):
				ended <- errors.New("handler context never ended")
			}
		})
		addr, cancel, done := leanRun(t, NewServer("", h), RunOptions{LeanHTTP1: lean, DrainTimeout: 200 * time.Millisecond})
		conn, br := rawConn(t, addr)
		io.WriteString(conn, get("/stuck"))
		<-started
		cancel()
		assert.NoError(t, <-done)
		assertClosed(t, conn, br)
		assert.Error(t, <-ended)
	})
}

func TestLeanReadHeaderTimeout(t *testing.T) {
	for _, tc := range []struct{ name, raw string }{
		{"silent", ""},
		{"partial head", "GET / HTTP/1.1\r\nHost: x\r\n"},
		{"partial request line", "GET /"},
		{"after a request", get("/") + "GET /"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sent := map[bool]string{}
			bothServers(t, func(t *testing.T, lean bool) {
				srv := NewServer("", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
				srv.ReadHeaderTimeout = 200 * time.Millisecond
				addr, _, _ := leanRun(t, srv, RunOptions{LeanHTTP1: lean})
				conn, br := rawConn(t, addr)
				start := time.Now()
				io.WriteString(conn, tc.raw)
				if strings.HasPrefix(tc.raw, "GET / HTTP/1.1\r\nHost: x\r\n\r\n") {
					readBody(t, br, "GET")
				}
				rest, err := readClosed(conn, br, 5*time.Second)
				assert.NoError(t, err)
				sent[lean] = describeRaw(rest)
				assert.GreaterOrEqual(t, time.Since(start), 150*time.Millisecond)
			})
			assert.Equal(t, sent[false], sent[true], "what net/http, then the lean server, sent before closing")
		})
	}
}

func TestLeanIdleTimeout(t *testing.T) {
	bothServers(t, func(t *testing.T, lean bool) {
		srv := NewServer("", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
		srv.IdleTimeout = 200 * time.Millisecond
		srv.ReadHeaderTimeout = 5 * time.Second
		addr, _, _ := leanRun(t, srv, RunOptions{LeanHTTP1: lean})
		conn, br := rawConn(t, addr)
		io.WriteString(conn, get("/"))
		readBody(t, br, "GET")
		start := time.Now()
		assertClosed(t, conn, br)
		assert.GreaterOrEqual(t, time.Since(start), 150*time.Millisecond)
		assert.Less(t, time.Since(start), 4*time.Second, "closed by IdleTimeout, not ReadHeaderTimeout")
	})
}

func TestLeanReadTimeout(t *testing.T) {
	sent := map[bool]string{}
	bothServers(t, func(t *testing.T, lean bool) {
		readErr := make(chan error, 1)
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, err := io.ReadAll(r.Body)
			readErr <- err
		})}
		srv.ReadTimeout = 200 * time.Millisecond
		addr, _, _ := leanRun(t, srv, RunOptions{LeanHTTP1: lean})
		conn, br := rawConn(t, addr)
		io.WriteString(conn, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nsome")
		err := <-readErr
		assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
		rest, err := readClosed(conn, br, 5*time.Second)
		assert.NoError(t, err)
		sent[lean] = describeRaw(rest)
	})
	assert.Equal(t, sent[false], sent[true], "what net/http, then the lean server, sent before closing")
}

func TestLeanWriteTimeout(t *testing.T) {
	bothServers(t, func(t *testing.T, lean bool) {
		writeErr := make(chan error, 1)
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// A response far larger than the socket buffers, to a client
			// that does not read: the write deadline must end it.
			chunk := bytes.Repeat([]byte("w"), 64<<10)
			for {
				if _, err := w.Write(chunk); err != nil {
					writeErr <- err
					return
				}
			}
		})}
		srv.WriteTimeout = 300 * time.Millisecond
		addr, _, _ := leanRun(t, srv, RunOptions{LeanHTTP1: lean})
		conn, _ := rawConn(t, addr)
		io.WriteString(conn, get("/"))
		select {
		case err := <-writeErr:
			assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
		case <-time.After(10 * time.Second):
			t.Fatal("the handler's writes never failed")
		}
	})
}

func TestLeanResponseControllerDeadlines(t *testing.T) {
	bothServers(t, func(t *testing.T, lean bool) {
		readErr := make(chan error, 1)
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			rc := http.NewResponseController(w)
			if err := rc.SetReadDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
				readErr <- err
				return
			}
			_, err := io.ReadAll(r.Body)
			readErr <- err
			w.WriteHeader(http.StatusRequestTimeout)
		})
		addr, _, _ := leanRun(t, &http.Server{Handler: h}, RunOptions{LeanHTTP1: lean})
		conn, br := rawConn(t, addr)
		io.WriteString(conn, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nsome")
		assert.ErrorIs(t, <-readErr, os.ErrDeadlineExceeded)
		res, err := http.ReadResponse(br, nil)
		require.NoError(t, err)
		res.Body.Close()
		assert.Equal(t, http.StatusRequestTimeout, res.StatusCode)
		assertClosed(t, conn, br)
	})
}

// With EnableFullDuplex a handler reads the body while it writes: an
// interactive exchange on one request.
func TestLeanFullDuplexInteractive(t *testing.T) {
	bothServers(t, func(t *testing.T, lean bool) {
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			rc := http.NewResponseController(w)
			if err := rc.EnableFullDuplex(); err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			w.WriteHeader(200)
			rc.Flush()
			br := bufio.NewReader(r.Body)
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					return
				}
				io.WriteString(w, "got:"+line)
				rc.Flush()
			}
		})
		addr, _, _ := leanRun(t, NewServer("", h), RunOptions{LeanHTTP1: lean})
		conn, br := rawConn(t, addr)
		io.WriteString(conn, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n")
		res, err := http.ReadResponse(br, nil)
		require.NoError(t, err)
		require.Equal(t, 200, res.StatusCode)
		body := bufio.NewReader(res.Body)
		for _, msg := range []string{"one\n", "two\n", "six\n"} {
			io.WriteString(conn, msg)
			line, err := body.ReadString('\n')
			require.NoError(t, err)
			assert.Equal(t, "got:"+msg, line)
		}
		rest, err := io.ReadAll(body)
		assert.NoError(t, err)
		assert.Empty(t, rest)
		// The connection stays for the next request.
		io.WriteString(conn, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nend\n")
		_, b := readBody(t, br, "POST")
		assert.Equal(t, "got:end\n", b)
	})
}

func TestLeanHandlerPanic(t *testing.T) {
	bothServers(t, func(t *testing.T, lean bool) {
		var logs syncBuffer
		srv := NewServer("", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/panic":
				panic("boom in handler")
			case "/abort":
				panic(http.ErrAbortHandler)
			}
			io.WriteString(w, "fine")
		}))
		srv.ErrorLog = log.New(&logs, "", 0)
		addr, _, _ := leanRun(t, srv, RunOptions{LeanHTTP1: lean})

		other, otherBr := rawConn(t, addr)
		io.WriteString(other, get("/before"))
		_, b := readBody(t, otherBr, "GET")
		assert.Equal(t, "fine", b)

		conn, br := rawConn(t, addr)
		io.WriteString(conn, get("/fine")+get("/panic")+get("/fine"))
		_, b = readBody(t, br, "GET")
		assert.Equal(t, "fine", b)
		assertClosed(t, conn, br, "no answer after the panic; connection closed")
		leanWait(t, 5*time.Second, "panic logged", func() bool {
			logs.mu.Lock()
			defer logs.mu.Unlock()
			return strings.Contains(logs.b.String(), "boom in handler")
		})

		conn2, br2 := rawConn(t, addr)
		io.WriteString(conn2, get("/abort"))
		assertClosed(t, conn2, br2)

		// The server, and the other kept-alive connection, still serve.
		io.WriteString(other, get("/after"))
		_, b = readBody(t, otherBr, "GET")
		assert.Equal(t, "fine", b)
		conn3, br3 := rawConn(t, addr)
		io.WriteString(conn3, get("/fresh"))
		_, b = readBody(t, br3, "GET")
		assert.Equal(t, "fine", b)
		out := logs.take()
		assert.Equal(t, 1, strings.Count(out, "boom in handler"), "the panic is logged once: %s", out)
		assert.NotContains(t, out, "abort Handler", "ErrAbortHandler is not logged")
	})
}

// connStates records ConnState transitions per connection.
type connStates struct {
	mu     sync.Mutex
	states map[net.Conn][]http.ConnState
	order  []net.Conn
}

func (c *connStates) hook(conn net.Conn, s http.ConnState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.states == nil {
		c.states = make(map[net.Conn][]http.ConnState)
	}
	if _, ok := c.states[conn]; !ok {
		c.order = append(c.order, conn)
	}
	c.states[conn] = append(c.states[conn], s)
}

func (c *connStates) all() [][]http.ConnState {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out [][]http.ConnState
	for _, conn := range c.order {
		out = append(out, slices.Clone(c.states[conn]))
	}
	return out
}

func TestLeanConnState(t *testing.T) {
	New, Active, Idle, Closed, Hijacked := http.StateNew, http.StateActive, http.StateIdle, http.StateClosed, http.StateHijacked
	for _, tc := range []struct {
		name string
		raw  []string
		want []http.ConnState
	}{
		{"two requests", []string{get("/"), get("/")}, []http.ConnState{New, Active, Idle, Active, Idle, Closed}},
		{"connection close", []string{"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"}, []http.ConnState{New, Active, Closed}},
		{"pipelined", []string{get("/") + get("/")}, []http.ConnState{New, Active, Idle, Active, Idle, Closed}},
		{"hijack", []string{get("/hijack")}, []http.ConnState{New, Active, Hijacked}},
		{"panic", []string{get("/panic")}, []http.ConnState{New, Active, Closed}},
		{"no request", nil, []http.ConnState{New, Closed}},
		{"bad request", []string{"GARBAGE\r\n\r\n"}, []http.ConnState{New, Active, Closed}},
		{"served, then handed over", []string{get("/"), "GET / HTTP/1.0\r\n\r\n"}, []http.ConnState{New, Active, Idle, Active, Closed}},
		{"served, then chunked, then served", []string{get("/"), "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", get("/")},
			[]http.ConnState{New, Active, Idle, Active, Idle, Active, Idle, Closed}},
		{"handed-over hijack", []string{"GET /hijack HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"}, []http.ConnState{New, Active, Hijacked}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bothServers(t, func(t *testing.T, lean bool) {
				var cs connStates
				srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					switch r.URL.Path {
					case "/hijack":
						conn, _, err := http.NewResponseController(w).Hijack()
						if err == nil {
							conn.Close()
						}
						return
					case "/panic":
						panic(http.ErrAbortHandler)
					}
					io.WriteString(w, "ok")
				}), ConnState: cs.hook, ErrorLog: log.New(io.Discard, "", 0)}
				addr, _, _ := leanRun(t, srv, RunOptions{LeanHTTP1: lean})
				conn, br := rawConn(t, addr)
				for _, raw := range tc.raw {
					io.WriteString(conn, raw)
					for range requestMethods(raw) {
						res, err := http.ReadResponse(br, nil)
						if err != nil {
							break
						}
						io.Copy(io.Discard, res.Body)
						res.Body.Close()
					}
				}
				if len(tc.raw) == 0 {
					// Wait until the server has seen the connection.
					leanWait(t, 5*time.Second, "StateNew", func() bool { return len(cs.all()) == 1 })
				}
				conn.Close()
				// Wait until every connection the hook saw is done.
				leanWait(t, 5*time.Second, "the last state", func() bool {
					all := cs.all()
					for _, states := range all {
						if last := states[len(states)-1]; last != Closed && last != Hijacked {
							return false
						}
					}
					return len(all) > 0
				})
				assert.Equal(t, [][]http.ConnState{tc.want}, cs.all(), "one connection, these states")
			})
		})
	}
}

type ctxKeyA struct{}
type ctxKeyB struct{}

func TestLeanBaseAndConnContext(t *testing.T) {
	bothServers(t, func(t *testing.T, lean bool) {
		seen := make(chan string, 1)
		var connCtxConn atomic.Value
		srv := NewServer("", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ctx := r.Context()
			la, _ := ctx.Value(http.LocalAddrContextKey).(net.Addr)
			seen <- fmt.Sprintf("base=%v conn=%v tracker=%v server=%v laddr=%v",
				ctx.Value(ctxKeyA{}), ctx.Value(ctxKeyB{}), trackerFrom(ctx) != nil,
				ctx.Value(http.ServerContextKey) != nil, la != nil)
			io.WriteString(w, "ok")
		}))
		srv.BaseContext = func(net.Listener) context.Context {
			return context.WithValue(context.Background(), ctxKeyA{}, "a")
		}
		srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
			connCtxConn.Store(c.RemoteAddr().String())
			return context.WithValue(ctx, ctxKeyB{}, "b")
		}
		addr, _, _ := leanRun(t, srv, RunOptions{LeanHTTP1: lean})
		conn, br := rawConn(t, addr)
		io.WriteString(conn, get("/"))
		readBody(t, br, "GET")
		assert.Equal(t, "base=a conn=b tracker=true server=true laddr=true", <-seen)
		assert.Equal(t, conn.LocalAddr().String(), connCtxConn.Load())
	})
}

func TestLeanGuardBodyIdleTimeout(t *testing.T) {
	bothServers(t, func(t *testing.T, lean bool) {
		t.Run("handler reads", func(t *testing.T) {
			readErr := make(chan error, 1)
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, err := io.ReadAll(r.Body)
				readErr <- err
				w.WriteHeader(http.StatusRequestTimeout)
			})
			addr, _, _ := leanRun(t, NewServerWithOptions("", h, ServerOptions{BodyIdleTimeout: 200 * time.Millisecond}), RunOptions{LeanHTTP1: lean})
			conn, br := rawConn(t, addr)
			io.WriteString(conn, "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nfirst bytes")
			assert.ErrorIs(t, <-readErr, ErrBodyTimeout)
			res, err := http.ReadResponse(br, nil)
			require.NoError(t, err)
			res.Body.Close()
			assert.Equal(t, http.StatusRequestTimeout, res.StatusCode)
			assertClosed(t, conn, br)
		})
		t.Run("unread body", func(t *testing.T) {
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				Error(w, r, http.StatusUnauthorized, "no")
			})
			addr, _, _ := leanRun(t, NewServerWithOptions("", h, ServerOptions{BodyIdleTimeout: 200 * time.Millisecond}), RunOptions{LeanHTTP1: lean})
			conn, br := rawConn(t, addr)
			io.WriteString(conn, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nfirst bytes")
			res, _ := readBody(t, br, "POST")
			assert.Equal(t, http.StatusUnauthorized, res.StatusCode)
			assertClosed(t, conn, br)
		})
		t.Run("flowing upload then keep-alive", func(t *testing.T) {
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, err := io.ReadAll(r.Body)
				if err != nil {
					w.WriteHeader(http.StatusTeapot)
					return
				}
				io.WriteString(w, strconv.Itoa(len(b)))
			})
			addr, _, _ := leanRun(t, NewServerWithOptions("", h, ServerOptions{BodyIdleTimeout: 200 * time.Millisecond}), RunOptions{LeanHTTP1: lean})
			conn, br := rawConn(t, addr)
			io.WriteString(conn, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\n")
			require.NoError(t, trickle(conn, 8, 50*time.Millisecond))
			res, b := readBody(t, br, "POST")
			assert.Equal(t, "8", b)
			assert.False(t, res.Close)
			<-time.After(400 * time.Millisecond) // the client's think time, longer than the body limit
			io.WriteString(conn, post("/", "abc"))
			_, b = readBody(t, br, "POST")
			assert.Equal(t, "3", b)
		})
	})
}

func TestLeanGuardSmugglingClosesConnection(t *testing.T) {
	const smuggled = "GET /admin HTTP/1.1\r\nHost: x\r\n\r\n"
	for _, raw := range []string{
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" + smuggled,
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n\tchunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" + smuggled,
		"POST / HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc" + smuggled,
		// The same after a request the lean server served itself.
		post("/first", "hi") + "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" + smuggled,
	} {
		bothServers(t, func(t *testing.T, lean bool) {
			rec := &pathRecorder{}
			addr, _, _ := leanRun(t, NewServer("", rec), RunOptions{LeanHTTP1: lean})
			out := exchange(t, addr, raw)
			assert.NotContains(t, strings.Join(rec.seen(), ","), "/admin", "the smuggled request reached the handler")
			assert.Contains(t, out, "body=abc")
			assert.Contains(t, out, "Connection: close")
		})
	}
}

func TestLeanExpectContinueClient(t *testing.T) {
	bothServers(t, func(t *testing.T, lean bool) {
		addr, _, _ := leanRun(t, NewServer("", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			w.Write(b)
		})), RunOptions{LeanHTTP1: lean})
		tr := &http.Transport{ExpectContinueTimeout: 10 * time.Second}
		defer tr.CloseIdleConnections()
		for range 2 {
			req, _ := http.NewRequest("PUT", "http://"+addr+"/", strings.NewReader("payload"))
			req.Header.Set("Expect", "100-continue")
			res, err := (&http.Client{Transport: tr}).Do(req)
			require.NoError(t, err)
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			assert.Equal(t, "payload", string(b))
		}
	})
}

func TestLeanNoGoroutineLeak(t *testing.T) {
	bothServers(t, func(t *testing.T, lean bool) {
		base := runtime.NumGoroutine()
		func() {
			h := &diffHandler{}
			srv := NewServer("", h)
			srv.ErrorLog = log.New(io.Discard, "", 0)
			h.srv = srv
			ln := listen(t)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() {
				done <- RunWithOptions(ctx, srv, RunOptions{Listener: ln, LeanHTTP1: lean, DrainTimeout: 2 * time.Second})
			}()
			addr := ln.Addr().String()
			// Every kind of exchange of the differential table, then idle
			// keep-alive connections and a connection that sent nothing.
			for _, tc := range leanCases() {
				leanExchange(addr, tc.steps)
			}
			var open []net.Conn
			for range 3 {
				c, err := net.Dial("tcp", addr)
				require.NoError(t, err)
				io.WriteString(c, get("/small"))
				http.ReadResponse(bufio.NewReader(c), nil)
				open = append(open, c)
			}
			c, err := net.Dial("tcp", addr)
			require.NoError(t, err)
			open = append(open, c)
			cancel()
			assert.NoError(t, <-done)
			for _, c := range open {
				c.Close()
			}
		}()
		deadline := time.Now().Add(10 * time.Second)
		for runtime.NumGoroutine() > base && time.Now().Before(deadline) {
			pollPause()
		}
		if n := runtime.NumGoroutine(); n > base {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Errorf("%d goroutines after shutdown, %d before:\n%s", n, base, buf)
		}
	})
}

// The connection net/http serves, a handed-over one included, can be
// half-closed: net/http's closeWriteAndWait (after a 431, or an unread
// body it will not read) sends FIN and waits before closing, so that the
// client reads the answer instead of a reset.
func TestLeanHandedOverConnCanCloseWrite(t *testing.T) {
	for _, raw := range []string{
		"GET / HTTP/1.0\r\n\r\n",
		"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		"GET /small HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
		"GET /small HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 70<<10) + "\r\n\r\n",
	} {
		bothServers(t, func(t *testing.T, lean bool) {
			var mu sync.Mutex
			var types []string
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				io.WriteString(w, "ok")
			}), ConnState: func(c net.Conn, s http.ConnState) {
				if s != http.StateNew {
					return
				}
				_, ok := c.(interface{ CloseWrite() error })
				mu.Lock()
				types = append(types, fmt.Sprintf("%T closeWrite=%v", c, ok))
				mu.Unlock()
			}}
			addr, _, _ := leanRun(t, srv, RunOptions{LeanHTTP1: lean})
			conn, br := rawConn(t, addr)
			io.WriteString(conn, raw)
			res, err := http.ReadResponse(br, nil)
			require.NoError(t, err)
			res.Body.Close()
			mu.Lock()
			defer mu.Unlock()
			for _, typ := range types {
				assert.Contains(t, typ, "closeWrite=true", "%q: the conns ConnState saw: %v", raw[:min(len(raw), 24)], types)
			}
		})
	}
}

// A client that sends a head over MaxHeaderBytes gets its 431 and then the
// end of the connection (EOF), not a reset: net/http half-closes, then
// waits 500ms (closeWriteAndWait) before it closes.
func TestLeanOversizeHeadAnswered(t *testing.T) {
	bothServers(t, func(t *testing.T, lean bool) {
		addr, _, _ := leanRun(t, NewServer("", http.NotFoundHandler()), RunOptions{LeanHTTP1: lean})
		resets := 0
		var first error
		for range 5 {
			conn, br := rawConn(t, addr)
			io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("a", 70<<10)+"\r\n\r\n")
			res, err := http.ReadResponse(br, nil)
			if err == nil {
				assert.Equal(t, http.StatusRequestHeaderFieldsTooLarge, res.StatusCode)
				_, err = io.ReadAll(res.Body)
			}
			if err != nil {
				require.True(t, closedErr(err), "%v", err)
				if first == nil {
					first = err
				}
				resets++
			}
			conn.Close()
		}
		assert.Zero(t, resets, "answers (or their close-delimited bodies) cut by a reset, of 5; the first: %v", first)
	})
}

// A handed-over request whose large body the handler does not read: net/http
// answers, half-closes and waits (closeWriteAndWait), so that the client,
// still sending, reads the answer rather than a reset.
func TestLeanHandedOverUnreadBodyAnswered(t *testing.T) {
	for _, tc := range []struct{ name, head string }{
		{"chunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"},
		{"HTTP/1.0", "POST / HTTP/1.0\r\nContent-Length: 4194304\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bothServers(t, func(t *testing.T, lean bool) {
				srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					w.WriteHeader(http.StatusRequestEntityTooLarge)
				})}
				addr, _, _ := leanRun(t, srv, RunOptions{LeanHTTP1: lean})
				lost := 0
				for range 5 {
					conn, br := rawConn(t, addr)
					go func() {
						io.WriteString(conn, tc.head)
						chunk := strings.Repeat("x", 64<<10)
						for range 64 { // 4 MiB
							if strings.Contains(tc.head, "chunked") {
								if _, err := io.WriteString(conn, "10000\r\n"+chunk+"\r\n"); err != nil {
									return
								}
							} else if _, err := io.WriteString(conn, chunk); err != nil {
								return
							}
						}
					}()
					res, err := http.ReadResponse(br, nil)
					if err != nil {
						lost++
					} else {
						assert.Equal(t, http.StatusRequestEntityTooLarge, res.StatusCode)
						res.Body.Close()
					}
					conn.Close()
				}
				assert.Zero(t, lost, "answers lost to a reset, of 5")
			})
		})
	}
}

// ConnContext is called once per connection, with the connection the
// handler's requests come on, whatever the lean loop hands to net/http.
func TestLeanConnContextOncePerConnection(t *testing.T) {
	for _, raw := range []string{
		get("/"),
		"GET / HTTP/1.0\r\n\r\n",
		get("/") + "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	} {
		bothServers(t, func(t *testing.T, lean bool) {
			var calls atomic.Int32
			srv := NewServer("", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
			srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
				calls.Add(1)
				return ctx
			}
			addr, _, _ := leanRun(t, srv, RunOptions{LeanHTTP1: lean})
			conn, br := rawConn(t, addr)
			io.WriteString(conn, raw)
			for _, m := range requestMethods(raw) {
				readBody(t, br, m)
			}
			assert.Equal(t, int32(1), calls.Load(), "ConnContext calls for %q", raw)
		})
	}
}

// A request that arrives while a slow handler runs (so that the
// client-gone read has taken its first byte) is served whole, on the lean
// loop or handed to net/http.
func TestLeanRequestArrivingDuringSlowHandler(t *testing.T) {
	for _, tc := range []struct{ name, next, want string }{
		{"lean-served", get("/second"), "second /second HTTP/1.1"},
		{"POST", post("/second", "abc"), "second /second HTTP/1.1 abc"},
		{"handed over", "GET /second HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", "second /second HTTP/1.0"},
		{"chunked", "POST /second HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", "second /second HTTP/1.1 abc"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bothServers(t, func(t *testing.T, lean bool) {
				started := make(chan struct{})
				finish := make(chan struct{})
				h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if r.URL.Path == "/slow" {
						<-time.After(30 * time.Millisecond) // a slow handler: past the lean loop's client-gone delay
						close(started)
						<-finish
						io.WriteString(w, "slow done")
						return
					}
					b, _ := io.ReadAll(r.Body)
					fmt.Fprintf(w, "second %s %s", r.URL.Path, r.Proto)
					if len(b) > 0 {
						fmt.Fprintf(w, " %s", b)
					}
				})
				addr, _, _ := leanRun(t, NewServer("", h), RunOptions{LeanHTTP1: lean})
				conn, br := rawConn(t, addr)
				io.WriteString(conn, get("/slow"))
				<-started
				io.WriteString(conn, tc.next)
				close(finish)
				_, b := readBody(t, br, "GET")
				assert.Equal(t, "slow done", b)
				_, b = readBody(t, br, "GET")
				assert.Equal(t, tc.want, b)
			})
		})
	}
}

// A head that arrives a byte at a time is served as a whole one is.
func TestLeanTrickledHead(t *testing.T) {
	for _, raw := range []string{get("/trickle"), post("/trickle", "abc"), "GET /trickle HTTP/1.0\r\n\r\n"} {
		bothServers(t, func(t *testing.T, lean bool) {
			addr, _, _ := leanRun(t, NewServer("", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				fmt.Fprintf(w, "%s %s %s", r.URL.Path, r.Proto, b)
			})), RunOptions{LeanHTTP1: lean})
			conn, br := rawConn(t, addr)
			for i := range len(raw) {
				_, err := conn.Write([]byte{raw[i]})
				require.NoError(t, err)
			}
			_, b := readBody(t, br, "GET")
			want := "/trickle HTTP/1.1 "
			if strings.Contains(raw, "HTTP/1.0") {
				want = "/trickle HTTP/1.0 "
			}
			if strings.HasPrefix(raw, "POST") {
				want += "abc"
			}
			assert.Equal(t, want, b)
		})
	}
}

// A handed-over request in flight when the shutdown starts finishes too,
// and a handed-over idle connection is closed.
func TestLeanGracefulDrainHandedOver(t *testing.T) {
	testLeanDrain(t, func(path string) string { return "GET " + path + " HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" }, true)
}
