package middleware_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/middleware"
)

func TestTimeout(t *testing.T) {
	tests := []struct {
		name       string
		d          time.Duration
		handler    func(t *testing.T, w http.ResponseWriter, r *http.Request)
		wantStatus int
		wantBody   string // exact, unless a problem is expected
	}{
		{"fast handler", time.Minute, func(t *testing.T, w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Handler", "1")
			_, _ = w.Write([]byte("done"))
		}, 200, "done"},
		{"overrun: 504, later writes dropped", 5 * time.Millisecond, func(t *testing.T, w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Handler", "1") // must not reach the client
			<-r.Context().Done()
			if !errors.Is(r.Context().Err(), context.DeadlineExceeded) {
				t.Errorf("handler context: %v", r.Context().Err())
			}
			w.WriteHeader(200)
			if _, err := w.Write([]byte("too late")); !errors.Is(err, http.ErrHandlerTimeout) {
				t.Errorf("late Write error %v, want http.ErrHandlerTimeout", err)
			}
			if _, _, err := w.(http.Hijacker).Hijack(); !errors.Is(err, http.ErrHandlerTimeout) {
				t.Errorf("late Hijack error %v, want http.ErrHandlerTimeout", err)
			}
		}, 504, ""},
		{"stream started before the deadline", 5 * time.Millisecond, func(t *testing.T, w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte("part"))
			<-r.Context().Done()
			_, _ = w.Write([]byte("ial"))
		}, 200, "partial"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info := &pylon.RequestInfo{RequestID: "req-t"}
			h := middleware.Timeout(tt.d)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				tt.handler(t, w, r)
			}))
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				h.ServeHTTP(w, r.WithContext(pylon.NewContext(r.Context(), info)))
			}))
			defer srv.Close()
			res, err := srv.Client().Get(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d", res.StatusCode, tt.wantStatus)
			}
			if tt.wantStatus == 504 {
				if res.Header.Get("Content-Type") != pylon.ProblemContentType || res.Header.Get("X-Handler") != "" {
					t.Errorf("504 headers %v", res.Header)
				}
				if want := `{"title":"Gateway Timeout","status":504,"detail":"the request took too long","request_id":"req-t"}` + "\n"; string(body) != want {
					t.Errorf("body %s, want %s", body, want)
				}
			} else if string(body) != tt.wantBody {
				t.Errorf("body %q, want %q", body, tt.wantBody)
			}
		})
	}
}

func TestTimeoutAnswersBeforeAStuckHandlerReturns(t *testing.T) {
	release := make(chan struct{})
	returned := make(chan struct{})
	h := middleware.Timeout(5 * time.Millisecond)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(returned)
		<-release // ignores its context
	}))
	srv := httptest.NewServer(h)
	defer srv.Close()
	res, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.ReadAll(res.Body) // complete: the 504 has a Content-Length
	res.Body.Close()
	if res.StatusCode != 504 {
		t.Errorf("status %d, want 504", res.StatusCode)
	}
	select {
	case <-returned:
		t.Error("handler returned before it was released")
	default:
	}
	close(release)
	<-returned
}

func TestTimeoutFromContextDeadline(t *testing.T) {
	tests := []struct {
		name   string
		d      time.Duration
		parent time.Duration // 0 means no deadline on the incoming context
		want   int
	}{
		{"zero d, no deadline: no timeout", 0, 0, 200},
		{"zero d, context deadline applies", 0, 5 * time.Millisecond, 504},
		{"earlier context deadline wins", time.Hour, 5 * time.Millisecond, 504},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := middleware.Timeout(tt.d)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if _, ok := r.Context().Deadline(); ok {
					<-r.Context().Done()
				}
			}))
			req := httptest.NewRequest("GET", "/", nil)
			if tt.parent > 0 {
				ctx, cancel := context.WithTimeout(req.Context(), tt.parent)
				defer cancel()
				req = req.WithContext(ctx)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.want {
				t.Errorf("status %d, want %d", rec.Code, tt.want)
			}
		})
	}
}

func TestTimeoutClientCancelIsNotATimeout(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	h := middleware.Timeout(time.Hour)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cancel()
		<-r.Context().Done()
	}))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil).WithContext(ctx))
	if rec.Flushed || rec.Body.Len() != 0 || rec.Header().Get("Content-Type") != "" {
		t.Errorf("a response was written for a client that went away: %d %q", rec.Code, rec.Body.String())
	}
}

func TestTimeoutRecordsError(t *testing.T) {
	info := &pylon.RequestInfo{}
	h := middleware.Timeout(time.Millisecond)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	req := httptest.NewRequest("GET", "/", nil)
	h.ServeHTTP(httptest.NewRecorder(), req.WithContext(pylon.NewContext(req.Context(), info)))
	if info.Error != "timeout" {
		t.Errorf("info.Error %q, want timeout", info.Error)
	}
}
