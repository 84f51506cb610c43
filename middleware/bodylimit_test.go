package middleware_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/pylon-gateway/pylon/middleware"
)

func TestBodyLimit(t *testing.T) {
	const limit = 10
	// Handlers a user might write.
	strict := func(w http.ResponseWriter, r *http.Request) { // answers 400 on any read error
		if _, err := io.ReadAll(r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		_, _ = w.Write([]byte("read"))
	}
	silent := func(w http.ResponseWriter, r *http.Request) { // returns without writing
		_, _ = io.ReadAll(r.Body)
	}
	aware := func(w http.ResponseWriter, r *http.Request) { // sees the limit error
		_, err := io.ReadAll(r.Body)
		if !middleware.IsBodyTooLarge(err) {
			t.Errorf("read error %v is not a body-too-large error", err)
		}
		var mbe *http.MaxBytesError
		if !errors.As(err, &mbe) || mbe.Limit != limit {
			t.Errorf("read error %v, want *http.MaxBytesError with limit %d", err, limit)
		}
		w.WriteHeader(http.StatusAccepted)
	}
	tests := []struct {
		name       string
		body       string
		chunked    bool
		handler    http.HandlerFunc
		wantStatus int
		wantNext   bool
	}{
		{"under, with length", "12345", false, strict, 200, true},
		{"exactly, with length", "1234567890", false, strict, 200, true},
		{"over, with length: answered up front", "12345678901", false, strict, 413, false},
		{"under, chunked", "12345", true, strict, 200, true},
		{"exactly, chunked", "1234567890", true, strict, 200, true},
		{"over, chunked, handler answers 400", strings.Repeat("x", 100), true, strict, 413, true},
		{"over, chunked, handler writes nothing", strings.Repeat("x", 100), true, silent, 413, true},
		{"over, chunked, handler answers a success", strings.Repeat("x", 100), true, aware, 202, true},
		{"no body", "", false, strict, 200, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reached := false
			h := middleware.BodyLimit(limit)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				reached = true
				tt.handler(w, r)
			}))
			req := httptest.NewRequest("POST", "/", strings.NewReader(tt.body))
			if tt.chunked {
				req.ContentLength = -1
				req.Body = io.NopCloser(strings.NewReader(tt.body)) // no length known
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.wantStatus {
				t.Errorf("status %d, want %d (body %q)", rec.Code, tt.wantStatus, rec.Body.String())
			}
			if reached != tt.wantNext {
				t.Errorf("handler reached %v, want %v", reached, tt.wantNext)
			}
			if tt.wantStatus == 413 {
				p := problemOf(t, rec)
				if strings.Contains(rec.Body.String(), "http: request body too large") {
					t.Errorf("the handler's own error text reached the client: %s", rec.Body.String())
				}
				_ = p
			}
		})
	}
}

func TestBodyLimitOverRealServer(t *testing.T) {
	srv := httptest.NewServer(middleware.BodyLimit(1024)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			http.Error(w, "bad body", http.StatusBadRequest)
		}
	})))
	defer srv.Close()
	tests := []struct {
		name    string
		size    int
		chunked bool
		want    int
	}{
		{"small", 100, false, 200},
		{"large with length", 1 << 20, false, 413},
		{"large chunked", 1 << 20, true, 413},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body io.Reader = strings.NewReader(strings.Repeat("x", tt.size))
			if tt.chunked {
				body = io.MultiReader(body) // hides the length: sent chunked
			}
			req, _ := http.NewRequest("POST", srv.URL, body)
			res, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != tt.want {
				t.Errorf("status %d, want %d", res.StatusCode, tt.want)
			}
		})
	}
}

func TestBodyLimitRejectsNonPositive(t *testing.T) {
	defer func() {
		if v := recover(); v == nil {
			t.Error("BodyLimit(0) did not panic")
		}
	}()
	middleware.BodyLimit(0)
}
