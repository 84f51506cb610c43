package idempotency_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/middleware/extauthz"
	"github.com/pylon-gateway/pylon/middleware/idempotency"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// logRecords is a slog.Handler keeping every record, at every level.
type logRecords struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (l *logRecords) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecords) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecords) WithGroup(string) slog.Handler            { return l }
func (l *logRecords) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	l.recs = append(l.recs, r.Clone())
	l.mu.Unlock()
	return nil
}

// all returns each record's level, message and attributes.
func (l *logRecords) all() []map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]string
	for _, r := range l.recs {
		m := map[string]string{"level": r.Level.String(), "msg": r.Message}
		r.Attrs(func(a slog.Attr) bool { m[a.Key] = a.Value.String(); return true })
		out = append(out, m)
	}
	return out
}

// TestAuthenticatedWithoutSubjectNotKeyed: extauthz admits by session
// cookie and names no subject (no SubjectHeader). The middleware cannot
// tell alice from bob, so it neither replays nor stores: bob sending
// alice's key runs his own payment and gets his own receipt (before, he
// was replayed alice's), alice's repeat runs again as it would without
// the middleware, and the route is logged once at Debug level.
func TestAuthenticatedWithoutSubjectNotKeyed(t *testing.T) {
	authz := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.Contains(r.Header.Get("Cookie"), "session=") {
			w.WriteHeader(http.StatusUnauthorized)
		}
	}))
	t.Cleanup(authz.Close)
	ez, err := extauthz.New(extauthz.Options{URL: authz.URL})
	require.NoError(t, err)
	var payments atomic.Int64
	logs := &logRecords{}
	gw := pylon.New(pylon.Options{})
	gw.Route("POST /pay").Use(ez, idempotency.New(idempotency.Options{Logger: slog.New(logs)})).
		Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			payments.Add(1)
			c, _ := r.Cookie("session")
			w.WriteHeader(http.StatusCreated)
			_, _ = io.WriteString(w, "receipt for "+c.Value)
		}))
	require.NoError(t, gw.Err())
	srv := httptest.NewServer(gw)
	t.Cleanup(srv.Close)
	pay := func(session string) answer {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/pay", strings.NewReader(`{"eur":10}`))
		req.Header.Set("Cookie", "session="+session)
		req.Header.Set("Idempotency-Key", `"1"`)
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return answer{res.StatusCode, res.Header, string(b)}
	}
	alice, bob, again := pay("alice"), pay("bob"), pay("alice")
	assert.Equal(t, "receipt for alice", alice.body)
	assert.Equal(t, http.StatusCreated, bob.status)
	assert.Equal(t, "receipt for bob", bob.body, "bob was replayed alice's answer")
	assert.Equal(t, "receipt for alice", again.body)
	for _, a := range []answer{alice, bob, again} {
		assert.Empty(t, a.header.Get("Idempotent-Replayed"))
	}
	assert.Equal(t, int64(3), payments.Load(), "every payment ran, as without the middleware")

	recs := logs.all()
	require.Len(t, recs, 1, "logged once per route: %v", recs)
	assert.Equal(t, "DEBUG", recs[0]["level"])
	assert.Equal(t, "POST /pay", recs[0]["route"])
	assert.Equal(t, "extauthz", recs[0]["auth"])
}

// authNoSubject is a stand-in authentication that admits every request
// without naming a subject, as jwtauth does for a token without "sub" and
// mtls for a certificate with an empty subject.
func authNoSubject(next http.Handler) http.Handler {
	return pylon.WithStage(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if info := pylon.Info(r.Context()); info != nil {
			info.Auth = "test"
		}
		next.ServeHTTP(w, r)
	}), pylon.Stage{Name: "auth", Roles: pylon.RoleAuthenticate})
}

// TestWithoutSubjectRequired: on a route that requires a key, a request
// authenticated without a subject is still answered 400 without one; with
// one it is passed on, never replayed, and its key is not checked (the
// middleware is not there for it).
func TestWithoutSubjectRequired(t *testing.T) {
	up := &upstream{}
	gw := pylon.New(pylon.Options{})
	gw.Route("POST /orders").Use(authNoSubject, idempotency.New(idempotency.Options{
		Required: true, Logger: slog.New(slog.DiscardHandler),
	})).Handler(up)
	require.NoError(t, gw.Err())
	srv := httptest.NewServer(gw)
	t.Cleanup(srv.Close)
	url := srv.URL + "/orders"

	assert.Equal(t, http.StatusBadRequest, post(t, url, "", "", "a").status, "missing key")
	assert.Zero(t, up.calls.Load())
	for range 2 {
		a := post(t, url, "", `"k1"`, "a")
		assert.Equal(t, http.StatusCreated, a.status)
		assert.Empty(t, a.header.Get("Idempotent-Replayed"))
	}
	assert.Equal(t, http.StatusCreated, post(t, url, "", `"k1"`, "other body").status, "no 422: nothing stored")
	assert.Equal(t, int64(3), up.calls.Load())
}
