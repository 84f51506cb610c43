package h1_test

import (
	"fmt"
	"io"
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
