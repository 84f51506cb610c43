package idempotency_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/middleware/idempotency"
)

// discardWriter keeps nothing but a header map, so that the benchmarks
// measure the middleware and not a recorder.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(int)             {}

// benchIdempotency serves a 64-byte POST through the middleware (memory
// store) per iteration, from an authenticated subject, with the key that
// key(i) returns for iteration i.
func benchIdempotency(b *testing.B, key func(i int) string) {
	created := []byte(`{"id":"o-1","status":"created"}`)
	h := idempotency.New(idempotency.Options{})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write(created)
	}))
	payload := bytes.Repeat([]byte("x"), 64)
	body := bytes.NewReader(payload)
	req := httptest.NewRequest("POST", "http://api.example.com/orders", nil)
	req.Pattern = "POST /orders"
	info := &pylon.RequestInfo{}
	req = req.WithContext(pylon.NewContext(req.Context(), info))
	w := &discardWriter{h: http.Header{}}
	rc := io.NopCloser(body)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		*info = pylon.RequestInfo{Subject: "u1", Auth: "bench", Route: "orders"}
		body.Reset(payload)
		req.Body, req.ContentLength = rc, int64(len(payload))
		req.Header["Idempotency-Key"] = []string{key(i)}
		clear(w.h)
		h.ServeHTTP(w, req)
		i++
	}
}

// BenchmarkIdempotency: "replay" repeats one key, answered from the store;
// "first" sends a new key each time (one allocation of it is the
// benchmark's own key string), so that the request runs and its answer is
// stored.
func BenchmarkIdempotency(b *testing.B) {
	b.Run("replay", func(b *testing.B) { benchIdempotency(b, func(int) string { return `"k-1"` }) })
	b.Run("first", func(b *testing.B) { benchIdempotency(b, func(i int) string { return strconv.Itoa(i) }) })
}
