package middleware_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/pylon-gateway/pylon/middleware"
)

type baseWriter struct {
	h      http.Header
	status int
	body   strings.Builder
	calls  []string
}

func (w *baseWriter) Header() http.Header { return w.h }
func (w *baseWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = 200
	}
	return w.body.Write(p)
}
func (w *baseWriter) WriteHeader(code int) {
	w.calls = append(w.calls, fmt.Sprint("WriteHeader ", code))
	if code >= 200 || code == 101 {
		w.status = code
	}
}

type flushW struct{ *baseWriter }

func (w flushW) Flush() { w.calls = append(w.calls, "Flush") }

type hijackW struct{ *baseWriter }

func (w hijackW) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.calls = append(w.calls, "Hijack")
	return nil, nil, nil
}

type readFromW struct{ *baseWriter }

func (w readFromW) ReadFrom(r io.Reader) (int64, error) {
	w.calls = append(w.calls, "ReadFrom")
	return io.Copy(&w.body, r)
}

type pushW struct{ *baseWriter }

func (w pushW) Push(string, *http.PushOptions) error {
	w.calls = append(w.calls, "Push")
	return nil
}

// combo builds a writer with exactly the optional interfaces in mask
// (1 Flusher, 2 Hijacker, 4 ReaderFrom, 8 Pusher).
func combo(mask int, b *baseWriter) http.ResponseWriter {
	type f = http.Flusher
	type h = http.Hijacker
	type r = io.ReaderFrom
	type p = http.Pusher
	fw, hw, rw, pw := flushW{b}, hijackW{b}, readFromW{b}, pushW{b}
	switch mask {
	case 0:
		return b
	case 1:
		return struct{ http.ResponseWriter; f }{b, fw}
	case 2:
		return struct{ http.ResponseWriter; h }{b, hw}
	case 3:
		return struct{ http.ResponseWriter; f; h }{b, fw, hw}
	case 4:
		return struct{ http.ResponseWriter; r }{b, rw}
	case 5:
		return struct{ http.ResponseWriter; f; r }{b, fw, rw}
	case 6:
		return struct{ http.ResponseWriter; h; r }{b, hw, rw}
	case 7:
		return struct{ http.ResponseWriter; f; h; r }{b, fw, hw, rw}
	case 8:
		return struct{ http.ResponseWriter; p }{b, pw}
	case 9:
		return struct{ http.ResponseWriter; f; p }{b, fw, pw}
	case 10:
		return struct{ http.ResponseWriter; h; p }{b, hw, pw}
	case 11:
		return struct{ http.ResponseWriter; f; h; p }{b, fw, hw, pw}
	case 12:
		return struct{ http.ResponseWriter; r; p }{b, rw, pw}
	case 13:
		return struct{ http.ResponseWriter; f; r; p }{b, fw, rw, pw}
	case 14:
		return struct{ http.ResponseWriter; h; r; p }{b, hw, rw, pw}
	default:
		return struct{ http.ResponseWriter; f; h; r; p }{b, fw, hw, rw, pw}
	}
}

func interfacesOf(w http.ResponseWriter) int {
	m := 0
	if _, ok := w.(http.Flusher); ok {
		m |= 1
	}
	if _, ok := w.(http.Hijacker); ok {
		m |= 2
	}
	if _, ok := w.(io.ReaderFrom); ok {
		m |= 4
	}
	if _, ok := w.(http.Pusher); ok {
		m |= 8
	}
	return m
}

func TestWrapWriterInterfaces(t *testing.T) {
	for mask := 0; mask < 16; mask++ {
		t.Run(fmt.Sprint(mask), func(t *testing.T) {
			b := &baseWriter{h: http.Header{}}
			inner := combo(mask, b)
			if got := interfacesOf(inner); got != mask {
				t.Fatalf("test writer has %b, want %b", got, mask)
			}
			ww := middleware.WrapWriter(inner)
			if got := interfacesOf(ww); got != mask {
				t.Fatalf("wrapped writer has interfaces %04b, want exactly %04b", got, mask)
			}
			if ww.Unwrap() != inner {
				t.Error("Unwrap does not return the wrapped writer")
			}
			// Each optional method reaches the writer underneath.
			if f, ok := ww.(http.Flusher); ok {
				f.Flush()
			}
			if h, ok := ww.(http.Hijacker); ok {
				_, _, _ = h.Hijack()
				if !ww.Hijacked() {
					t.Error("Hijacked() false after Hijack")
				}
			}
			if rf, ok := ww.(io.ReaderFrom); ok && !ww.Hijacked() {
				n, _ := rf.ReadFrom(strings.NewReader("abc"))
				if n != 3 || ww.BytesWritten() != 3 {
					t.Errorf("ReadFrom n=%d BytesWritten=%d, want 3", n, ww.BytesWritten())
				}
			}
			if p, ok := ww.(http.Pusher); ok {
				_ = p.Push("/x", nil)
			}
			want := []string{}
			if mask&1 != 0 {
				want = append(want, "WriteHeader 200", "Flush")
			}
			if mask&2 != 0 {
				want = append(want, "Hijack")
			}
			if mask&4 != 0 && mask&2 == 0 {
				if mask&1 == 0 {
					want = append(want, "WriteHeader 200")
				}
				want = append(want, "ReadFrom")
			}
			if mask&8 != 0 {
				want = append(want, "Push")
			}
			if fmt.Sprint(b.calls) != fmt.Sprint(want) {
				t.Errorf("calls %v, want %v", b.calls, want)
			}
		})
	}
}

func TestWrapWriterRecords(t *testing.T) {
	tests := []struct {
		name       string
		handler    func(w http.ResponseWriter)
		wantStatus int
		wantBytes  int64
		wantWrote  bool
	}{
		{"nothing", func(w http.ResponseWriter) {}, 0, 0, false},
		{"implicit 200", func(w http.ResponseWriter) { _, _ = w.Write([]byte("hello")) }, 200, 5, true},
		{"explicit", func(w http.ResponseWriter) { w.WriteHeader(404); _, _ = w.Write([]byte("no")) }, 404, 2, true},
		{"first status wins", func(w http.ResponseWriter) { w.WriteHeader(201); w.WriteHeader(500) }, 201, 0, true},
		{"1xx not final", func(w http.ResponseWriter) { w.WriteHeader(103); w.WriteHeader(204) }, 204, 0, true},
		{"101 is final", func(w http.ResponseWriter) { w.WriteHeader(101) }, 101, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ww := middleware.WrapWriter(httptest.NewRecorder())
			tt.handler(ww)
			if ww.Status() != tt.wantStatus || ww.BytesWritten() != tt.wantBytes || ww.WroteHeader() != tt.wantWrote {
				t.Errorf("Status %d BytesWritten %d WroteHeader %v, want %d %d %v",
					ww.Status(), ww.BytesWritten(), ww.WroteHeader(), tt.wantStatus, tt.wantBytes, tt.wantWrote)
			}
		})
	}
}

func TestWrapWriterHookRunsOnceBeforeHeader(t *testing.T) {
	rec := httptest.NewRecorder()
	calls := 0
	ww := middleware.WrapWriterWithOptions(rec, middleware.WriterOptions{
		BeforeWriteHeader: func(status int, h http.Header) {
			calls++
			h.Set("X-Status", fmt.Sprint(status))
		},
	})
	_, _ = ww.Write([]byte("a"))
	ww.(http.Flusher).Flush()
	_, _ = ww.Write([]byte("b"))
	if calls != 1 {
		t.Errorf("hook ran %d times, want 1", calls)
	}
	if got := rec.Result().Header.Get("X-Status"); got != "200" {
		t.Errorf("X-Status = %q, want 200 (set before the header was written)", got)
	}
}

func TestWrapWriterResponseController(t *testing.T) {
	// http.ResponseController reaches SetWriteDeadline through Unwrap.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ww := middleware.WrapWriter(w)
		rc := http.NewResponseController(ww)
		if err := rc.SetWriteDeadline(timeZero); err != nil {
			t.Errorf("SetWriteDeadline through the wrapper: %v", err)
		}
		if err := rc.Flush(); err != nil {
			t.Errorf("Flush through the wrapper: %v", err)
		}
	}))
	defer srv.Close()
	res, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
}
