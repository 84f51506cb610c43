package introspect_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/middleware/introspect"
	"github.com/pylon-gateway/pylon/middleware/jwtauth"
)

func Example() {
	// The authorization server's introspection endpoint (RFC 7662).
	as := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if id, _, _ := r.BasicAuth(); id != "gateway" || r.PostFormValue("token") != "opaque-123" {
			_, _ = io.WriteString(w, `{"active":false}`)
			return
		}
		_, _ = io.WriteString(w, `{"active":true,"sub":"alice","scope":"orders:read"}`)
	}))
	defer as.Close()

	tokens, err := introspect.New(introspect.Options{URL: as.URL, ClientID: "gateway", ClientSecret: "secret"})
	if err != nil {
		panic(err)
	}
	defer tokens.Close()

	gw := pylon.New(pylon.Options{})
	// The same middleware, rules and claim forwarding as for JWTs.
	gw.Route("GET /orders").Use(jwtauth.RequireWithOptions(tokens, jwtauth.RequireOptions{
		Rules:         []jwtauth.Rule{jwtauth.Scopes("orders:read")},
		ForwardClaims: map[string]string{"X-User-Id": "sub"},
	})).Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "orders of %s (%s)", r.Header.Get("X-User-Id"), pylon.Info(r.Context()).Auth)
	}))
	front := httptest.NewServer(gw)
	defer front.Close()

	for _, tok := range []string{"opaque-123", "stolen"} {
		req, _ := http.NewRequest("GET", front.URL+"/orders", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			panic(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			body = nil
		}
		fmt.Println(resp.StatusCode, string(body))
	}
	// Output:
	// 200 orders of alice (introspection)
	// 401
}
