package basicauth_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
	"golang.org/x/crypto/bcrypt"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/middleware/basicauth"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func hash(t testing.TB, pw string) string {
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

func TestHtpasswdThroughGateway(t *testing.T) {
	path := filepath.Join(t.TempDir(), "htpasswd")
	doc := "# tools\nalice:" + hash(t, "wonderland") + "\n\nbob:" + hash(t, "pä:ss") + "\n"
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	v, err := basicauth.HtpasswdFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var subject, auth, fwd string
	gw := pylon.New(pylon.Options{})
	gw.Route("GET /tools/").Use(basicauth.RequireWithOptions(basicauth.Options{Verify: v, Realm: "tools", Logger: quiet})).
		Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			info := pylon.Info(r.Context())
			subject, auth, fwd = info.Subject, info.Auth, r.Header.Get("Authorization")
			w.WriteHeader(http.StatusNoContent)
		}))
	if err := gw.Err(); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw)
	t.Cleanup(srv.Close)
	tests := []struct {
		name string
		set  func(*http.Request)
		want int
	}{
		{"alice", func(r *http.Request) { r.SetBasicAuth("alice", "wonderland") }, 204},
		{"bob with a colon in his password", func(r *http.Request) { r.SetBasicAuth("bob", "pä:ss") }, 204},
		{"wrong password", func(r *http.Request) { r.SetBasicAuth("alice", "nope") }, 401},
		{"unknown user", func(r *http.Request) { r.SetBasicAuth("mallory", "wonderland") }, 401},
		{"empty password", func(r *http.Request) { r.SetBasicAuth("alice", "") }, 401},
		{"none", func(*http.Request) {}, 401},
		{"bearer", func(r *http.Request) { r.Header.Set("Authorization", "Bearer x") }, 401},
		{"garbage", func(r *http.Request) { r.Header.Set("Authorization", "Basic !!!") }, 401},
		{"huge", func(r *http.Request) { r.SetBasicAuth("alice", strings.Repeat("a", 4096)) }, 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			subject = ""
			req, _ := http.NewRequest("GET", srv.URL+"/tools/x", nil)
			tt.set(req)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.want)
			}
			if tt.want == 204 {
				user, _, _ := req.BasicAuth()
				if subject != user || auth != "basic" || fwd != "" {
					t.Errorf("subject %q auth %q forwarded %q", subject, auth, fwd)
				}
				return
			}
			if got := resp.Header.Get("WWW-Authenticate"); got != `Basic realm="tools", charset="UTF-8"` {
				t.Errorf("challenge %q", got)
			}
			if resp.Header.Get("Content-Type") != pylon.ProblemContentType || strings.Contains(string(body), "basicauth") {
				t.Errorf("body %q", body)
			}
		})
	}
}

func TestVerifierFailureIs503(t *testing.T) {
	h := basicauth.RequireWithOptions(basicauth.Options{Logger: quiet, Verify: func(context.Context, string, string) (bool, error) {
		return false, errors.New("ldap down")
	}})(http.NotFoundHandler())
	r := httptest.NewRequest("GET", "/", nil)
	r.SetBasicAuth("a", "b")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != 503 || w.Header().Get("WWW-Authenticate") != "" {
		t.Fatalf("status %d challenge %q", w.Code, w.Header().Get("WWW-Authenticate"))
	}
}

func TestHtpasswdRejectsWeakHashes(t *testing.T) {
	for _, doc := range []string{
		"alice:$apr1$abc$def\n",                     // MD5
		"alice:{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M=\n", // SHA-1
		"alice:plain\n",
		"no-colon\n",
		"alice:" + hash(t, "a") + "\nalice:" + hash(t, "b") + "\n",
	} {
		if _, err := basicauth.Htpasswd(strings.NewReader(doc)); !errors.Is(err, basicauth.ErrHtpasswd) {
			t.Errorf("Htpasswd(%q) = %v, want ErrHtpasswd", doc, err)
		}
	}
}

func BenchmarkHtpasswd(b *testing.B) {
	v, err := basicauth.Htpasswd(strings.NewReader("alice:" + hash(b, "pw") + "\n"))
	if err != nil {
		b.Fatal(err)
	}
	for _, user := range []string{"alice", "mallory"} {
		b.Run(user, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _ = v(context.Background(), user, "wrong")
			}
		})
	}
}

func TestHtpasswdRefusesCostsOverMax(t *testing.T) {
	// A well-formed bcrypt hash of cost 31 (never computed: the check is on
	// the cost field alone).
	line := "mallory:$2y$31$" + strings.Repeat("a", 53) + "\n"
	if _, err := basicauth.Htpasswd(strings.NewReader(line)); !errors.Is(err, basicauth.ErrHtpasswd) || !strings.Contains(err.Error(), "cost 31") {
		t.Fatalf("cost 31: %v, want it refused for its cost", err)
	}
}
