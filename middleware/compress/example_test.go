package compress_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/pylon-gateway/pylon/middleware/compress"
)

// A JSON API behind the middleware: a client that accepts brotli gets it,
// one that does not gets the identity body, and both responses say Vary.
func Example() {
	gz, err := compress.New(compress.Options{})
	if err != nil {
		panic(err)
	}
	api := gz(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"items":[`+strings.Repeat(`{"sku":"p1"},`, 200)+`{"sku":"p2"}]}`)
	}))
	for _, accept := range []string{"gzip;q=0.8, br", "identity"} {
		r := httptest.NewRequest("GET", "/items", nil)
		r.Header.Set("Accept-Encoding", accept)
		w := httptest.NewRecorder()
		api.ServeHTTP(w, r)
		fmt.Printf("%q: Content-Encoding %q, Vary %q\n", accept, w.Header().Get("Content-Encoding"), w.Header().Get("Vary"))
	}
	// Output:
	// "gzip;q=0.8, br": Content-Encoding "br", Vary "Accept-Encoding"
	// "identity": Content-Encoding "", Vary "Accept-Encoding"
}
