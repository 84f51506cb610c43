package basicauth_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"golang.org/x/crypto/bcrypt"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/middleware/basicauth"
)

func Example() {
	// What `htpasswd -B -n ops` prints (a low cost keeps the example fast).
	h, _ := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	users, err := basicauth.Htpasswd(strings.NewReader("ops:" + string(h) + "\n"))
	if err != nil {
		panic(err)
	}
	gw := pylon.New(pylon.Options{})
	gw.Route("GET /admin").Use(basicauth.Require(users)).Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "hello ", pylon.Info(r.Context()).Subject)
	}))
	for _, pw := range []string{"s3cret", "guess"} {
		r := httptest.NewRequest("GET", "/admin", nil)
		r.SetBasicAuth("ops", pw)
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, r)
		fmt.Println(strings.TrimSpace(fmt.Sprint(w.Code, " ", w.Header().Get("WWW-Authenticate"))))
	}
	// Output:
	// 200
	// 401 Basic realm="api", charset="UTF-8"
}
