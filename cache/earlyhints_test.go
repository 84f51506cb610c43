package cache

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"testing"
)

// interimRecorder records the interim (1xx) responses written to it, with
// the header fields each was sent with.
type interimRecorder struct {
	*httptest.ResponseRecorder
	interim []int
	links   []string
}

func (r *interimRecorder) WriteHeader(code int) {
	if code >= 100 && code <= 199 {
		r.interim = append(r.interim, code)
		r.links = append(r.links, strings.Join(r.Header()["Link"], ", "))
		return
	}
	r.ResponseRecorder.WriteHeader(code)
}

func earlyHints(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Link", "</style.css>; rel=preload; as=style")
	w.WriteHeader(http.StatusEarlyHints)
	w.Header().Del("Link")
	w.Header().Set("Cache-Control", "max-age=60")
	w.WriteHeader(200)
	_, _ = io.WriteString(w, "page")
}

// TestEarlyHints checks RFC 8297: a 103 the backend sends before its final
// response reaches the client, with its Link fields; it is never stored,
// so a hit has none (RFC 9110 §15.2: 1xx responses are interim).
func TestEarlyHints(t *testing.T) {
	c := newTestCache(t, Options{Now: newClock().Now})
	o := &origin{}
	o.set(earlyHints)
	h := c.Middleware(o)
	w := &interimRecorder{ResponseRecorder: httptest.NewRecorder()}
	h.ServeHTTP(w, httptest.NewRequest("GET", "/a", nil))
	if len(w.interim) != 1 || w.interim[0] != 103 || w.links[0] != "</style.css>; rel=preload; as=style" {
		t.Fatalf("interim responses %v with Link %q", w.interim, w.links)
	}
	if w.Code != 200 || w.Body.String() != "page" || w.Header().Get("Link") != "" {
		t.Fatalf("final: %d %q, Link %q", w.Code, w.Body, w.Header().Get("Link"))
	}
	w = &interimRecorder{ResponseRecorder: httptest.NewRecorder()}
	h.ServeHTTP(w, httptest.NewRequest("GET", "/a", nil))
	if len(w.interim) != 0 || w.Code != 200 || !strings.Contains(status(w.ResponseRecorder), "hit") {
		t.Fatalf("hit: interim %v, %d, %q", w.interim, w.Code, status(w.ResponseRecorder))
	}
}

// TestEarlyHintsOverHTTP: through a real server, the client sees the 103.
func TestEarlyHintsOverHTTP(t *testing.T) {
	c := newTestCache(t, Options{Now: newClock().Now})
	srv := httptest.NewServer(c.Middleware(http.HandlerFunc(earlyHints)))
	defer srv.Close()
	var got []int
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		if h["Link"] != nil {
			got = append(got, code)
		}
		return nil
	}}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(t.Context(), trace), "GET", srv.URL+"/a", nil)
	res, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if len(got) != 1 || got[0] != 103 || string(body) != "page" {
		t.Fatalf("1xx %v, body %q", got, body)
	}
}
