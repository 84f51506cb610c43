package mtls_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/gatewaytest/tlstest"
	"github.com/pylon-gateway/pylon/middleware/mtls"
)

func Example() {
	ca := tlstest.NewCA("clients CA") // in production: the pool of your client CA

	gw := pylon.New(pylon.Options{})
	gw.Route("GET /whoami").Use(mtls.Identify).Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info := pylon.Info(r.Context())
		fmt.Fprintf(w, "%s via %s; upstream would see %s", info.Subject, info.Auth, r.Header.Get(mtls.DefaultHeader)[:5])
	}))

	srv := httptest.NewUnstartedServer(gw)
	// With pylon.NewServer: srv.TLSConfig = pylon.ClientCertTLS(pylon.ClientCerts{CAs: pool, Base: srv.TLSConfig})
	srv.TLS = pylon.ClientCertTLS(pylon.ClientCerts{CAs: ca.Pool, Base: ca.Server()})
	srv.StartTLS()
	defer srv.Close()

	tr := &http.Transport{TLSClientConfig: tlstest.Client(ca, ca.Issue(tlstest.Leaf{
		CommonName: "orders", URIs: []string{"spiffe://example.org/orders"}, Client: true,
	}))}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get(srv.URL + "/whoami")
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	fmt.Println(string(b))
	// Output: spiffe://example.org/orders via mtls; upstream would see Hash=
}
