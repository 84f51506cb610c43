package pylon

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"testing"
)

// TestBackendRelaysEarlyHints: a 103 Early Hints (RFC 8297) from the
// upstream reaches the client with its Link field, which the final
// response does not carry: on Pylon's transport, which relays it itself,
// and on a Transport of the user's, through a ClientTrace.
func TestBackendRelaysEarlyHints(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</a.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		_, _ = io.WriteString(w, "page")
	}))
	defer up.Close()
	own := &http.Transport{}
	defer own.CloseIdleConnections()
	for name, tr := range map[string]http.RoundTripper{"pylon's transport": nil, "own transport": own} {
		t.Run(name, func(t *testing.T) {
			b := MustNewBackend("up", BackendOptions{Targets: []string{up.URL}, Transport: tr})
			defer b.Close()
			front := httptest.NewServer(b)
			defer front.Close()
			var links []string
			trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
				if code == http.StatusEarlyHints {
					links = append(links, h.Get("Link"))
				}
				return nil
			}}
			req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(t.Context(), trace), "GET", front.URL+"/", nil)
			res, err := front.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if len(links) != 1 || links[0] != "</a.css>; rel=preload" || string(body) != "page" || res.Header.Get("Link") != "" {
				t.Fatalf("103 Links %q, body %q, final Link %q", links, body, res.Header.Get("Link"))
			}
		})
	}
}
