package ratelimit_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/ratelimit"
)

// A Compose that includes BySubject needs a subject whatever its other
// parts: ByHeader finding no header in the probe must not hide that, or a
// request without a subject is pooled in one shared bucket instead of 401.
func TestComposeWithHeaderAndSubjectNeedsSubject(t *testing.T) {
	key := ratelimit.Compose(ratelimit.ByHeader("X-Tenant", ratelimit.CaseSensitive), ratelimit.BySubject)
	if !ratelimit.NeedsSubject(key) {
		t.Fatal("Compose(ByHeader, BySubject) does not need a subject")
	}
	for _, k := range []ratelimit.KeyFunc{ratelimit.ByIP, ratelimit.ByRoute, ratelimit.ByHeader("X-Tenant", ratelimit.CaseSensitive)} {
		if ratelimit.NeedsSubject(k) {
			t.Error("a key without the subject needs one")
		}
	}
	mw := ratelimit.MustNewWithOptions(ratelimit.Options{Key: key, Limits: []ratelimit.Limit{ratelimit.PerMinute(2)}})
	h := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	for i := range 3 {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set("X-Tenant", "acme")
		r = r.WithContext(pylon.NewContext(r.Context(), &pylon.RequestInfo{}))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusUnauthorized || w.Header().Get("WWW-Authenticate") == "" {
			t.Fatalf("request %d without a subject: %d, challenge %q; want 401 with one", i, w.Code, w.Header().Get("WWW-Authenticate"))
		}
	}
}
