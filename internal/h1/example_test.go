package h1_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"

	"github.com/pylon-gateway/pylon/internal/h1"
)

// A Transport is an http.RoundTripper: here behind an http.Client, talking
// to a loopback upstream over one kept-alive connection.
func Example() {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s", r.Method, r.URL.Path)
	}))
	defer up.Close()

	tr := h1.New(h1.Options{})
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	for _, path := range []string{"/a", "/b"} {
		res, err := client.Get(up.URL + path)
		if err != nil {
			fmt.Println(err)
			return
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		fmt.Println(res.StatusCode, string(b))
	}
	// Output:
	// 200 GET /a
	// 200 GET /b
}

// A Server serves what it can on its own loop and hands the rest (here an
// HTTP/1.0 request) to the *http.Server it was made from.
func ExampleServer() {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s", r.Proto)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	s := h1.NewServer(srv)
	go s.Serve(ln)
	defer s.Shutdown(context.Background())

	res, err := http.Get("http://" + ln.Addr().String() + "/")
	if err != nil {
		panic(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	fmt.Println(string(b))

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		panic(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.0\r\n\r\n")
	res, err = http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		panic(err)
	}
	b, _ = io.ReadAll(res.Body)
	fmt.Println(string(b))
	// Output:
	// HTTP/1.1
	// HTTP/1.0
}
