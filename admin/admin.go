package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/breaker"
	"github.com/pylon-gateway/pylon/cache"
	"github.com/pylon-gateway/pylon/ratelimit"
)

// Options configures the status page and admin API. Only Gateway is
// required; every other field's zero value is a safe default.
type Options struct {
	// Gateway is the gateway whose routes and routed backends are shown.
	Gateway *pylon.Gateway
	// Stats collects the traffic shown per route and per target; put its
	// Middleware first in the Gateway's chain. Nil means no traffic
	// figures, sparklines or recent errors are shown.
	Stats *Stats
	// Backends are shown besides the Gateway's routed ones (those an
	// aggregation calls, say). Nil means only the routed ones.
	Backends []*pylon.Backend
	// Guards are the breaker guards of backends, by backend name: what
	// BackendOptions.Guard holds (*breaker.TargetGuard shows a state per
	// target, *breaker.BackendGuard one per backend). Others are ignored.
	Guards map[string]pylon.Guard
	// Breakers are breakers used as middleware or around a transport.
	Breakers []*breaker.Breaker
	// Caches are the response caches, by a name of your choosing, for their
	// entries and bytes (when the store reports them, as
	// cache.MemoryStore does) and for the purge action.
	Caches map[string]*cache.Cache
	// RateLimitStores are rate-limit memory stores, by name, for the number
	// of client keys they hold.
	RateLimitStores map[string]*ratelimit.MemoryStore
	// Authorizer decides who may run actions. Nil means no action is
	// allowed (each is refused with 403), and the page is served only to
	// requests that arrived on a loopback address. With an Authorizer,
	// requests that arrived on any other address must pass it to see the
	// page too. A request forwarded by a proxy (with X-Forwarded-For,
	// Forwarded or X-Real-IP) never counts as arrived on loopback, so a
	// proxy on the same host does not open the page to everyone.
	Authorizer Authorizer
	// Logger receives one line per action, with who asked. Nil means
	// slog.Default().
	Logger *slog.Logger
	// Refresh is how often the page's script refreshes it. Zero means 2s.
	Refresh time.Duration
	// Title heads the page. Empty means "Pylon".
	Title string
	// Now returns the current time, for the page's clock. Nil means
	// time.Now.
	Now func() time.Time
}

// Authorizer decides whether r may use the admin endpoints. It returns who
// asked, for the action log, or an error that refuses the request: an error
// wrapping ErrUnauthenticated is answered 401 (with the WWW-Authenticate
// header set by the Authorizer), any other 403.
type Authorizer func(w http.ResponseWriter, r *http.Request) (who string, err error)

// ErrUnauthenticated is returned by an Authorizer when the request carries
// no or wrong credentials.
var ErrUnauthenticated = errors.New("admin: not authenticated")

// ErrNoAuthorizer is returned by Listen for a non-loopback address when
// Options.Authorizer is nil.
var ErrNoAuthorizer = errors.New("admin: refusing to listen on a non-loopback address without an Authorizer")

// BasicAuth returns an Authorizer that admits the users of the map
// (name → password) with HTTP Basic authentication, which browsers prompt
// for, so the page's forms work without any script. Passwords are compared
// in constant time; the user's name is who asked.
func BasicAuth(realm string, users map[string]string) Authorizer {
	sums := make(map[string][32]byte, len(users))
	for u, p := range users {
		sums[u] = sha256.Sum256([]byte(p))
	}
	return func(w http.ResponseWriter, r *http.Request) (string, error) {
		u, p, ok := r.BasicAuth()
		want, known := sums[u]
		got := sha256.Sum256([]byte(p))
		if !ok || subtle.ConstantTimeCompare(want[:], got[:]) != 1 || !known {
			w.Header().Set("WWW-Authenticate", fmt.Sprintf("Basic realm=%q, charset=\"UTF-8\"", realm))
			return "", ErrUnauthenticated
		}
		return u, nil
	}
}

// LoopbackOnly returns an Authorizer that admits requests whose peer is a
// loopback address, naming them "loopback". It suits a development machine
// or a sidecar; on a shared host every local user is admitted.
func LoopbackOnly() Authorizer {
	return func(w http.ResponseWriter, r *http.Request) (string, error) {
		if isLoopbackAddr(r.RemoteAddr) && loopbackHost(r.Host) {
			return "loopback", nil
		}
		return "", errors.New("admin: peer is not a loopback address")
	}
}

//go:embed assets
var assets embed.FS

var page = template.Must(template.New("status.html").Funcs(template.FuncMap{
	"spark":   sparkline,
	"pct":     pct,
	"ms":      func(f float64) string { return fmt.Sprintf("%.1f ms", f) },
	"rate":    func(f float64) string { return fmt.Sprintf("%.2f/s", f) },
	"bytes":   humanBytes,
	"clock":   func(t time.Time) string { return t.Format("15:04:05") },
	"refresh": func(d time.Duration) int { return int(d / time.Millisecond) },
	"secs":    func(d time.Duration) int { return max(int(d/time.Second), 1) },
}).ParseFS(assets, "assets/status.html"))

// Handler serves the status page, the JSON API and the actions. Build it
// with New (to mount on a listener of your own) or Listen.
//
// Endpoints, relative to where it is mounted:
//
//	GET  /                          the HTML page
//	GET  /api/v1/status             the same data as JSON (see [Status])
//	POST /api/v1/actions/drain      backend, target: take a target out of rotation
//	POST /api/v1/actions/undrain    backend, target: put it back
//	POST /api/v1/actions/readiness  fail=true|false: fail readiness (manual drain)
//	POST /api/v1/actions/purge      cache, and key or prefix: purge cached responses
//	POST /api/v1/actions/reset      breaker, or backend and optional target: close a breaker
//
// Actions take form or query parameters, answer JSON (or, for a form posted
// with return=page, redirect back to the page), and are refused with 403
// problem+json without an Authorizer. They are POST only and protected
// against cross-site requests (http.CrossOriginProtection).
type Handler struct {
	opts    Options
	mux     *http.ServeMux
	logger  *slog.Logger
	now     func() time.Time
	csrf    *http.CrossOriginProtection
	actMu   sync.Mutex
	actions []ActionRecord // newest last, at most maxActions
}

const maxActions = 20

// New returns the handler for opts. It fails when opts.Gateway is nil. It
// does not know the address it will be served on: serve it on a loopback
// listener, or set an Authorizer (see Listen, which checks). Without an
// Authorizer it serves only requests that arrived on a loopback address.
func New(opts Options) (*Handler, error) {
	if opts.Gateway == nil {
		return nil, errors.New("admin: Options.Gateway is nil")
	}
	if opts.Refresh <= 0 {
		opts.Refresh = 2 * time.Second
	}
	if opts.Title == "" {
		opts.Title = "Pylon"
	}
	h := &Handler{opts: opts, logger: opts.Logger, now: opts.Now, csrf: http.NewCrossOriginProtection()}
	if h.logger == nil {
		h.logger = slog.Default()
	}
	if h.now == nil {
		h.now = time.Now
	}
	static, _ := fs.Sub(assets, "assets")
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", h.servePage)
	mux.HandleFunc("GET /api/v1/status", h.serveStatus)
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	mux.HandleFunc("POST /api/v1/actions/{action}", h.serveAction)
	mux.HandleFunc("/api/v1/actions/{action}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", http.MethodPost)
		pylon.Error(w, r, http.StatusMethodNotAllowed, "Actions are POST only.")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		pylon.Error(w, r, http.StatusNotFound, "No such admin endpoint.")
	})
	h.mux = mux
	return h, nil
}

// ServeHTTP serves the page, the API and the actions.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("Referrer-Policy", "no-referrer")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	if !arrivedOnLoopback(r) {
		if h.opts.Authorizer == nil {
			pylon.Error(w, r, http.StatusForbidden, "The status page is served on loopback addresses only unless an Authorizer is set.")
			return
		}
		if _, err := h.opts.Authorizer(w, r); err != nil {
			refuse(w, r, err)
			return
		}
	}
	h.mux.ServeHTTP(w, r)
}

func refuse(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, ErrUnauthenticated) {
		pylon.Error(w, r, http.StatusUnauthorized, "Authentication is required.")
		return
	}
	pylon.Error(w, r, http.StatusForbidden, "You may not do this.")
}

// arrivedOnLoopback reports whether r came in on a loopback local address;
// requests without one (tests calling ServeHTTP directly) count as loopback
// when their peer is. A request that came through a proxy (it names a
// client in X-Forwarded-For, Forwarded or X-Real-IP) does not: a proxy on
// the same host forwards everyone's requests over loopback.
func arrivedOnLoopback(r *http.Request) bool {
	for _, k := range [...]string{"X-Forwarded-For", "Forwarded", "X-Real-Ip"} {
		if len(r.Header[k]) > 0 {
			return false
		}
	}
	if !loopbackHost(r.Host) {
		return false
	}
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		return isLoopbackAddr(a.String())
	}
	return isLoopbackAddr(r.RemoteAddr)
}

// loopbackHost reports whether a request's Host names this machine: a
// loopback address or "localhost" (with any port), or is empty. A page that
// another site's name resolves to 127.0.0.1 (DNS rebinding) is asked for
// under that name: such a request is not a local one, whatever its peer.
func loopbackHost(host string) bool {
	if host == "" {
		return true
	}
	h, _, err := net.SplitHostPort(host)
	if err != nil {
		h = host
	}
	h = strings.TrimSuffix(strings.ToLower(h), ".")
	return h == "localhost" || strings.HasSuffix(h, ".localhost") || isLoopbackAddr(h)
}

func isLoopbackAddr(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Server is a status page on a listener of its own, from Listen.
type Server struct {
	// Handler is the status page's handler.
	Handler *Handler
	ln      net.Listener
	srv     *http.Server
}

// Listen listens on addr ("127.0.0.1:0" picks a free port) and returns a
// Server for opts. It refuses, with ErrNoAuthorizer, an address that is not
// a loopback one (including "" and ":port", which listen on every
// interface) when opts.Authorizer is nil.
func Listen(addr string, opts Options) (*Server, error) {
	h, err := New(opts)
	if err != nil {
		return nil, err
	}
	if opts.Authorizer == nil && !loopbackListenAddr(addr) {
		return nil, fmt.Errorf("%w: %q", ErrNoAuthorizer, addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	if opts.Authorizer == nil && !isLoopbackAddr(ln.Addr().String()) {
		_ = ln.Close()
		return nil, fmt.Errorf("%w: %q", ErrNoAuthorizer, addr)
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
	}
	return &Server{Handler: h, ln: ln, srv: srv}, nil
}

// loopbackListenAddr reports whether addr names a loopback IP or
// "localhost" (which the listener's address is checked against again).
func loopbackListenAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// URL returns the page's URL, "http://127.0.0.1:PORT/".
func (s *Server) URL() string { return "http://" + s.ln.Addr().String() + "/" }

// Addr returns the listener's address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve serves until ctx ends, then shuts down, waiting up to 5 seconds
// for requests under way. It returns nil after a shutdown.
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.srv.Shutdown(sctx)
	<-errc
	return err
}

// Close closes the listener and every connection at once.
func (s *Server) Close() error {
	err := s.srv.Close()
	if lerr := s.ln.Close(); err == nil && !errors.Is(lerr, net.ErrClosed) {
		err = lerr
	}
	return err
}

// Serve listens on addr as Listen does and serves opts until ctx ends.
func Serve(ctx context.Context, addr string, opts Options) error {
	s, err := Listen(addr, opts)
	if err != nil {
		return err
	}
	return s.Serve(ctx)
}

func (h *Handler) backends() []*pylon.Backend {
	bs := h.opts.Gateway.Backends()
	for _, b := range h.opts.Backends {
		if !slices.Contains(bs, b) {
			bs = append(bs, b)
		}
	}
	return bs
}

func (h *Handler) backend(name string) *pylon.Backend {
	for _, b := range h.backends() {
		if b.Name() == name {
			return b
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
