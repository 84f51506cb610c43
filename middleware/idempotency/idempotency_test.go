package idempotency_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/middleware/idempotency"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// authAs is a stand-in authentication recording the subject from X-User.
func authAs(next http.Handler) http.Handler {
	return pylon.WithStage(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if info := pylon.Info(r.Context()); info != nil {
			info.Subject, info.Auth = r.Header.Get("X-User"), "test"
		}
		next.ServeHTTP(w, r)
	}), pylon.Stage{Name: "auth", Roles: pylon.RoleAuthenticate})
}

type upstream struct {
	calls  atomic.Int64
	status atomic.Int64
	hold   chan struct{} // nil: answer at once
	in     chan struct{}
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := u.calls.Add(1)
	if u.in != nil {
		u.in <- struct{}{}
	}
	if u.hold != nil {
		<-u.hold
	}
	body, _ := io.ReadAll(r.Body)
	w.Header().Set("X-Call", string(rune('0'+n)))
	st := int(u.status.Load())
	if st == 0 {
		st = http.StatusCreated
	}
	w.WriteHeader(st)
	_, _ = io.WriteString(w, "created "+string(body))
}

func newGateway(t *testing.T, up http.Handler, opts idempotency.Options) string {
	gw := pylon.New(pylon.Options{})
	gw.Route("POST /orders").Use(authAs, idempotency.New(opts)).Handler(up)
	if err := gw.Err(); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw)
	t.Cleanup(srv.Close)
	return srv.URL + "/orders"
}

type answer struct {
	status int
	header http.Header
	body   string
}

func post(t *testing.T, url, user, key, body string) answer {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("X-User", user)
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return answer{res.StatusCode, res.Header, string(b)}
}

func TestReplayConflictMismatchMissing(t *testing.T) {
	up := &upstream{}
	url := newGateway(t, up, idempotency.Options{Required: true})

	first := post(t, url, "alice", `"k1"`, "a")
	if first.status != 201 || first.header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("first: %+v", first)
	}
	again := post(t, url, "alice", `"k1"`, "a")
	if again.status != 201 || again.body != first.body || again.header.Get("Idempotent-Replayed") != "true" || again.header.Get("X-Call") != "1" {
		t.Fatalf("replay: %+v", again)
	}
	if up.calls.Load() != 1 {
		t.Fatalf("upstream called %d times", up.calls.Load())
	}
	tests := []struct {
		name, user, key, body string
		want                  int
	}{
		{"different body", "alice", `"k1"`, "b", 422},
		{"missing key", "alice", "", "a", 400},
		{"invalid key", "alice", `"a"b"`, "a", 400},
		{"same key, other subject", "bob", `"k1"`, "a", 201},
		{"bare token key", "alice", "k2", "a", 201},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := post(t, url, tt.user, tt.key, tt.body); got.status != tt.want {
				t.Errorf("status = %d, want %d (%s)", got.status, tt.want, got.body)
			}
		})
	}
}

func TestConcurrentDuplicate409(t *testing.T) {
	up := &upstream{hold: make(chan struct{}), in: make(chan struct{}, 1)}
	url := newGateway(t, up, idempotency.Options{})
	done := make(chan answer, 1)
	go func() { done <- post(t, url, "alice", "k", "x") }()
	<-up.in // the first is upstream
	if got := post(t, url, "alice", "k", "x"); got.status != http.StatusConflict || got.header.Get("Retry-After") == "" {
		t.Errorf("duplicate: %+v", got)
	}
	close(up.hold)
	if got := <-done; got.status != 201 {
		t.Errorf("first: %+v", got)
	}
	up.in = nil
	if got := post(t, url, "alice", "k", "x"); got.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("after: %+v", got)
	}
}

func TestServerErrorsNotStored(t *testing.T) {
	up := &upstream{}
	up.status.Store(503)
	url := newGateway(t, up, idempotency.Options{})
	post(t, url, "alice", "k", "x")
	up.status.Store(0)
	if got := post(t, url, "alice", "k", "x"); got.status != 201 || got.header.Get("Idempotent-Replayed") != "" {
		t.Errorf("retry after a 503: %+v", got)
	}
	if up.calls.Load() != 2 {
		t.Errorf("upstream called %d times, want 2", up.calls.Load())
	}
}

func TestMemoryStoreTTLAndBytes(t *testing.T) {
	now := time.Unix(0, 0)
	s := idempotency.NewMemoryStore(idempotency.MemoryOptions{MaxBytes: 4096, Now: func() time.Time { return now }})
	ctx := t.Context()
	e := &idempotency.Entry{Fingerprint: "fp", Status: 200, Body: make([]byte, 1000)}
	for _, k := range []string{"a", "b", "c", "d", "e"} {
		if got, err := s.Begin(ctx, k, "t1", "fp", time.Minute); got != nil || err != nil {
			t.Fatalf("Begin %s: %v %v", k, got, err)
		}
		if _, err := s.Begin(ctx, k, "t2", "fp", time.Minute); err != idempotency.ErrInFlight {
			t.Fatalf("second Begin %s: %v", k, err)
		}
		_ = s.Complete(ctx, k, "t1", e, time.Hour)
	}
	if n, b := s.Len(); n != 3 || b > 4096 {
		t.Errorf("Len = %d entries, %d bytes; want 3 within 4096", n, b)
	}
	if got, _ := s.Begin(ctx, "e", "t3", "fp", time.Minute); got == nil {
		t.Error("recent entry dropped")
	}
	now = now.Add(2 * time.Hour)
	if got, err := s.Begin(ctx, "e", "t3", "fp", time.Minute); got != nil || err != nil {
		t.Errorf("expired entry replayed: %v %v", got, err)
	}
	now = now.Add(2 * time.Minute) // the claim's lock expired: claimable again
	if got, err := s.Begin(ctx, "e", "t4", "fp", time.Minute); got != nil || err != nil {
		t.Errorf("expired claim: %v %v", got, err)
	}
}

func TestBeforeAuthRefused(t *testing.T) {
	gw := pylon.New(pylon.Options{})
	gw.Route("POST /orders").Use(idempotency.New(idempotency.Options{}), authAs).Handler(http.NotFoundHandler())
	if gw.Err() == nil {
		t.Fatal("idempotency before auth accepted")
	}
}

// TestBetweenAuthenticationsRefused: idempotency replays stored answers, so
// it must come after every authentication of the route, not only the first.
func TestBetweenAuthenticationsRefused(t *testing.T) {
	gw := pylon.New(pylon.Options{})
	gw.Route("POST /orders").Use(authAs, idempotency.New(idempotency.Options{}), authAs).Handler(http.NotFoundHandler())
	if gw.Err() == nil {
		t.Fatal("idempotency between two authentications accepted")
	}
}

// TestAnonymousKeysPerClient: on a route without authentication a key is
// the client's own: another client sending the same key is not answered
// with the first client's response.
func TestAnonymousKeysPerClient(t *testing.T) {
	up := &upstream{}
	gw := pylon.New(pylon.Options{})
	gw.Route("POST /orders").Use(idempotency.New(idempotency.Options{})).Handler(up)
	require.NoError(t, gw.Err())
	send := func(addr, body string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodPost, "/orders", strings.NewReader(body))
		req.RemoteAddr = addr
		req.Header.Set("Idempotency-Key", `"k1"`)
		rec := httptest.NewRecorder()
		gw.ServeHTTP(rec, req)
		return rec
	}
	first := send("192.0.2.1:1000", "a")
	again := send("192.0.2.1:1001", "a")
	other := send("192.0.2.2:1000", "b")
	assert.Equal(t, http.StatusCreated, first.Code)
	assert.Equal(t, "true", again.Header().Get("Idempotent-Replayed"), "the same client's repeat is replayed")
	assert.Equal(t, http.StatusCreated, other.Code, "another client's key is its own, not a 422")
	assert.Empty(t, other.Header().Get("Idempotent-Replayed"))
	assert.Equal(t, "created b", other.Body.String())
	assert.Equal(t, int64(2), up.calls.Load())
}
