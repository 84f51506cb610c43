package cache

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pylon-gateway/pylon"
)

// TestStaleIfErrorWithoutAnswer checks stale-if-error (RFC 5861 §4, the
// extension RFC 9111 §4.2.4 allows) when the origin gives no answer at
// all: it closes the connection, or the request's deadline passes.
func TestStaleIfErrorWithoutAnswer(t *testing.T) {
	closes := func(w http.ResponseWriter, r *http.Request) { panic(http.ErrAbortHandler) }
	hangs := func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }
	tests := []struct {
		name     string
		cc       string
		origin   func(http.ResponseWriter, *http.Request)
		deadline bool
		stale    bool
		code     int // without stale: the status, or 0 for the panic going on
	}{
		{"closed connection, stale-if-error", "max-age=1, stale-if-error=600", closes, false, true, 0},
		{"closed connection, no stale-if-error", "max-age=1", closes, false, false, 0},
		{"closed connection, must-revalidate", "max-age=1, stale-if-error=600, must-revalidate", closes, false, false, 0},
		{"deadline, stale-if-error", "max-age=1, stale-if-error=600", hangs, true, true, 0},
		{"deadline, no stale-if-error", "max-age=1", hangs, true, false, 504},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			c := newTestCache(t, Options{Now: clk.Now})
			o := &origin{}
			o.set(static(200, "good", "Cache-Control: "+tt.cc, `Etag: "1"`))
			h := c.Middleware(o)
			get(h, "GET", "/a")
			clk.Advance(10 * time.Second)
			o.set(tt.origin)
			r := httptest.NewRequest("GET", "/a", nil)
			if tt.deadline {
				ctx, cancel := context.WithDeadline(r.Context(), time.Now().Add(-time.Second))
				defer cancel()
				r = r.WithContext(ctx)
			}
			w := httptest.NewRecorder()
			var p any
			func() {
				defer func() { p = recover() }()
				h.ServeHTTP(w, r)
			}()
			switch {
			case tt.stale:
				if p != nil || w.Code != 200 || w.Body.String() != "good" || !strings.Contains(status(w), "detail=stale-if-error") {
					t.Fatalf("panic %v, %d %q, Cache-Status %q", p, w.Code, w.Body, status(w))
				}
			case tt.code == 0:
				if p != http.ErrAbortHandler {
					t.Fatalf("panic %v, want http.ErrAbortHandler to go on (%d %q)", p, w.Code, w.Body)
				}
			default:
				if p != nil || w.Code != tt.code || w.Header().Get("Content-Type") != pylon.ProblemContentType {
					t.Fatalf("panic %v, %d %q", p, w.Code, w.Header().Get("Content-Type"))
				}
			}
		})
	}
}

// TestStaleIfErrorThroughGateway: a Backend whose upstream closes the
// connection, or does not answer before the route's timeout, lets the
// cache serve a stale response that allows it.
func TestStaleIfErrorThroughGateway(t *testing.T) {
	for _, mode := range []string{"close", "timeout"} {
		t.Run(mode, func(t *testing.T) {
			var mu sync.Mutex
			failing := false
			up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				f := failing
				mu.Unlock()
				if !f {
					w.Header().Set("Cache-Control", "max-age=1, stale-if-error=600")
					_, _ = io.WriteString(w, "good")
					return
				}
				if mode == "close" {
					conn, _, _ := http.NewResponseController(w).Hijack()
					_ = conn.Close()
					return
				}
				<-r.Context().Done()
			}))
			defer up.Close()
			b := pylon.MustNewBackend("up", pylon.BackendOptions{Targets: []string{up.URL}})
			defer b.Close()
			clk := newClock()
			c := newTestCache(t, Options{Now: clk.Now})
			gw := pylon.New(pylon.Options{})
			gw.Route("/").Use(c.Middleware).Timeout(200 * time.Millisecond).To(b)
			if err := gw.Err(); err != nil {
				t.Fatal(err)
			}
			front := httptest.NewServer(gw)
			defer front.Close()
			fetch := func() (int, string, string) {
				res, err := http.Get(front.URL + "/a")
				if err != nil {
					t.Fatal(err)
				}
				defer res.Body.Close()
				body, _ := io.ReadAll(res.Body)
				return res.StatusCode, string(body), res.Header.Get("Cache-Status")
			}
			fetch()
			clk.Advance(10 * time.Second)
			mu.Lock()
			failing = true
			mu.Unlock()
			code, body, cs := fetch()
			if code != 200 || body != "good" || !strings.Contains(cs, "detail=stale-if-error") {
				t.Fatalf("%d %q, Cache-Status %q", code, body, cs)
			}
		})
	}
}
