package grpc_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"

	"github.com/pylon-gateway/pylon"
	pgrpc "github.com/pylon-gateway/pylon/grpc"
	"github.com/pylon-gateway/pylon/middleware"
	ggrpc "google.golang.org/grpc"
	testpb "google.golang.org/grpc/interop/grpc_testing"
)

// A browser's gRPC-Web call reaches a plain gRPC service (h2c) through the
// gateway: CORS first, then Web, then the route to the Backend.
func ExampleWeb() {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	upstream := ggrpc.NewServer()
	testpb.RegisterTestServiceServer(upstream, &testServer{})
	go func() { _ = upstream.Serve(ln) }()
	defer upstream.Stop()

	svc := pylon.MustNewBackend("test", pylon.BackendOptions{Targets: []string{"h2c://" + ln.Addr().String()}})
	defer svc.Close()
	gw := pylon.New(pylon.Options{})
	gw.Use(middleware.CORS(middleware.CORSOptions{
		AllowedOrigins: []string{"https://app.example"},
		AllowedHeaders: pgrpc.CORSHeaders,
		ExposedHeaders: pgrpc.CORSExposedHeaders,
	}), pgrpc.Web)
	gw.Route("/grpc.testing.TestService/").To(svc)
	front := httptest.NewServer(gw)
	defer front.Close()

	// An EmptyCall: one empty message, framed as gRPC-Web.
	res, err := http.Post(front.URL+"/grpc.testing.TestService/EmptyCall", "application/grpc-web+proto",
		bytes.NewReader([]byte{0, 0, 0, 0, 0}))
	if err != nil {
		fmt.Println(err)
		return
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	fmt.Println(res.Header.Get("Content-Type"))
	fmt.Printf("message: % x\n", body[:5])
	fmt.Printf("trailers: %q\n", body[10:])
	// Output:
	// application/grpc-web+proto
	// message: 00 00 00 00 00
	// trailers: "grpc-message: \r\ngrpc-status: 0\r\n"
}
