package pylon_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"

	"github.com/pylon-gateway/pylon"
)

// Serving a gateway on the lean HTTP/1.1 loop: the same server, handler and
// drain, with HTTP/1.1 requests read and answered by Pylon's loop and
// everything else (here an HTTP/1.0 request) served by net/http.
func ExampleRunOptions_leanHTTP1() {
	gw := pylon.New(pylon.Options{})
	gw.Route("GET /hello").Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello over %s", r.Proto)
	}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- pylon.RunWithOptions(ctx, pylon.NewServer("", gw), pylon.RunOptions{Listener: ln, LeanHTTP1: true})
	}()

	addr := ln.Addr().String()
	res, err := http.Get("http://" + addr + "/hello")
	if err != nil {
		panic(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	fmt.Println(res.StatusCode, string(body))

	// An HTTP/1.0 request is net/http's to serve.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		panic(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /hello HTTP/1.0\r\nHost: example\r\n\r\n")
	res, err = http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		panic(err)
	}
	body, _ = io.ReadAll(res.Body)
	fmt.Println(res.StatusCode, string(body))

	stop()
	fmt.Println("stopped:", <-done)
	// Output:
	// 200 hello over HTTP/1.1
	// 200 hello over HTTP/1.0
	// stopped: <nil>
}
