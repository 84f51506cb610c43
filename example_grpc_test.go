package pylon_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"

	"github.com/pylon-gateway/pylon"
)

// A Backend sends requests for h2c:// targets over plaintext HTTP/2, as
// gRPC services in a cluster expect; NewServer serves h2c itself.
func ExampleBackendOptions_h2c() {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	upstream := pylon.NewServer("", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, r.Proto)
	}))
	go func() { _ = upstream.Serve(ln) }()
	defer upstream.Close()

	svc := pylon.MustNewBackend("svc", pylon.BackendOptions{Targets: []string{"h2c://" + ln.Addr().String()}})
	defer svc.Close()
	gw := pylon.New(pylon.Options{})
	gw.Route("/").To(svc)
	front := httptest.NewServer(gw)
	defer front.Close()

	res, err := http.Get(front.URL)
	if err != nil {
		fmt.Println(err)
		return
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	fmt.Print(string(body))
	// Output: HTTP/2.0
}

// A gRPC call is answered in gRPC: every error the gateway makes itself
// is a trailers-only response with grpc-status.
func ExampleWriteProblem_grpc() {
	gw := pylon.New(pylon.Options{}) // no routes: every call is unimplemented
	r := httptest.NewRequest("POST", "/helloworld.Greeter/SayHello", nil)
	r.Header.Set("Content-Type", "application/grpc")
	rec := httptest.NewRecorder()
	gw.ServeHTTP(rec, r)
	fmt.Println(rec.Code, rec.Header().Get("Grpc-Status"), rec.Header().Get("Grpc-Message"))
	// Output: 200 12 No route matches this request.
}
