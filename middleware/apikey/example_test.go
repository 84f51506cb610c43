package apikey_test

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"

	"github.com/pylon-gateway/pylon/middleware/apikey"
)

func Example() {
	keys := apikey.Static(map[string]string{"k-7f3a9c": "billing-service"})
	h := apikey.RequireWithOptions(apikey.Options{
		Lookup: keys,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		owner, _ := apikey.Owner(r.Context())
		fmt.Fprintf(w, "hello %s, key forwarded: %q", owner, r.Header.Get("X-API-Key"))
	}))

	for _, key := range []string{"k-7f3a9c", "guess"} {
		r := httptest.NewRequest("GET", "/invoices", nil)
		r.Header.Set("X-API-Key", key)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		fmt.Println(w.Code, w.Body.String())
	}
	// Output:
	// 200 hello billing-service, key forwarded: ""
	// 401 {"title":"Unauthorized","status":401}
}
