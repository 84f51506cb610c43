package extauthz_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/middleware/extauthz"
)

func Example() {
	// The authorization service: admits the "ok" session, names its user.
	auth := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, err := r.Cookie("session"); err == nil && c.Value == "ok" {
			w.Header().Set("X-User-Id", "alice")
			return
		}
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, "log in first")
	}))
	defer auth.Close()

	check, err := extauthz.New(extauthz.Options{
		URL:             auth.URL,
		ResponseHeaders: []string{"X-User-Id"},
		SubjectHeader:   "X-User-Id",
		CacheKey: func(r *http.Request) string {
			c, _ := r.Cookie("session")
			if c == nil {
				return ""
			}
			return c.Value
		},
	})
	if err != nil {
		panic(err)
	}
	gw := pylon.New(pylon.Options{})
	gw.Route("GET /reports").Use(check).Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "reports for ", r.Header.Get("X-User-Id"))
	}))
	front := httptest.NewServer(gw)
	defer front.Close()

	for _, session := range []string{"ok", "stale"} {
		req, _ := http.NewRequest("GET", front.URL+"/reports", nil)
		req.AddCookie(&http.Cookie{Name: "session", Value: session})
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			panic(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Println(resp.StatusCode, string(body))
	}
	// Output:
	// 200 reports for alice
	// 401 log in first
}
