package grpc_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"

	pgrpc "github.com/pylon-gateway/pylon/grpc"
)

// BenchmarkWeb measures the translation alone: a unary gRPC-Web call to an
// in-process handler answering one message and its trailers.
func BenchmarkWeb(b *testing.B) {
	msg := []byte{0, 0, 0, 0, 3, 8, 1, 2}
	h := pgrpc.Web(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Trailer", "Grpc-Status, Grpc-Message")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(msg)
		w.Header().Set("Grpc-Status", "0")
		w.Header().Set("Grpc-Message", "")
	}))
	for _, ct := range []string{"application/grpc-web+proto", "application/grpc-web-text+proto"} {
		b.Run(ct, func(b *testing.B) {
			body := msg
			if ct == "application/grpc-web-text+proto" {
				body = []byte("AAAAAAMIAQI=")
			}
			b.ReportAllocs()
			for b.Loop() {
				r := httptest.NewRequest("POST", "/pkg.Svc/M", bytes.NewReader(body))
				r.Header.Set("Content-Type", ct)
				w := httptest.NewRecorder()
				h.ServeHTTP(w, r)
				if w.Code != 200 {
					b.Fatal(w.Code)
				}
			}
		})
	}
}
