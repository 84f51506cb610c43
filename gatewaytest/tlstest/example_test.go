package tlstest_test

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/pylon-gateway/pylon/gatewaytest/tlstest"
)

func Example() {
	ca := tlstest.NewCA("test CA")
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "hello ", r.TLS.VerifiedChains[0][0].Subject.CommonName)
	}))
	srv.TLS = ca.Server()
	srv.TLS.ClientCAs = ca.Pool
	srv.TLS.ClientAuth = tls.RequireAndVerifyClientCert
	srv.StartTLS()
	defer srv.Close()

	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig: tlstest.Client(ca, ca.Issue(tlstest.Leaf{CommonName: "orders", Client: true})),
	}}
	defer client.CloseIdleConnections()
	resp, err := client.Get(srv.URL)
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	var b [64]byte
	n, _ := resp.Body.Read(b[:])
	fmt.Println(string(b[:n]))
	// Output: hello orders
}
