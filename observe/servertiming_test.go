package observe_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"testing"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/observe"
)

func TestServerTiming(t *testing.T) {
	up := upstream(t)
	b, err := pylon.NewBackend("orders", pylon.BackendOptions{Targets: []string{up.URL}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	gw := pylon.New(pylon.Options{})
	gw.Use(observe.ServerTiming)
	gw.Route("GET /orders/{id}").To(b)
	gw.Route("GET /local").Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "local") // implicit 200: the header is still added
	}))
	for _, tc := range []struct {
		path string
		want string
	}{
		{"/orders/1", `^gateway;dur=\d+\.\d{3}, upstream;dur=\d+\.\d{3}$`},
		{"/local", `^gateway;dur=\d+\.\d{3}$`},
		{"/nowhere", `^gateway;dur=\d+\.\d{3}$`},
	} {
		t.Run(tc.path, func(t *testing.T) {
			rec := httptest.NewRecorder()
			gw.ServeHTTP(rec, httptest.NewRequest("GET", tc.path, nil))
			got := rec.Result().Header.Values("Server-Timing")
			if len(got) != 1 || !regexp.MustCompile(tc.want).MatchString(got[0]) {
				t.Errorf("Server-Timing = %q, want %s", got, tc.want)
			}
		})
	}
}
