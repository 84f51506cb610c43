package browsertest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/admin"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// refresh is the page's live-refresh interval in this test.
const refresh = 500 * time.Millisecond

// chromium returns the path of the browser, failing the test without it.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("chromium is not installed (apt-get install -y chromium); the browser test needs it")
	return ""
}

// browse runs headless Chromium on url with extra flags and returns its
// standard output. budget is the virtual time the page may run (its
// scripts' timers included) before Chromium dumps or shoots it.
func browse(t *testing.T, url string, budget time.Duration, flags ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	args := append([]string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--no-first-run", "--no-default-browser-check", "--disable-extensions",
		"--user-data-dir=" + t.TempDir(),
		fmt.Sprintf("--virtual-time-budget=%d", budget.Milliseconds()),
	}, flags...)
	args = append(args, url)
	cmd := exec.CommandContext(ctx, chromium(t), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium: %v\n%s", err, tail(errb.String()))
	}
	return out.String()
}

func tail(s string) string {
	if len(s) > 2000 {
		return s[len(s)-2000:]
	}
	return s
}

// upstream is a service whose health check can be made to fail.
type upstream struct {
	srv  *httptest.Server
	down atomic.Bool
}

func newUpstream(t *testing.T) *upstream {
	u := &upstream{}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func TestPageShowsUnhealthyTargetAfterRefresh(t *testing.T) {
	good, flaky := newUpstream(t), newUpstream(t)
	orders := pylon.MustNewBackend("orders", pylon.BackendOptions{
		Targets:     []string{good.srv.URL, flaky.srv.URL},
		HealthCheck: pylon.HealthCheck{Path: "/healthz", Interval: 20 * time.Millisecond, UnhealthyThreshold: 1, HealthyThreshold: 1},
	})
	defer orders.Close()
	stats := admin.NewStats(admin.StatsOptions{})
	gw := pylon.New(pylon.Options{})
	gw.Use(stats.Middleware)
	gw.Route("GET /orders/{id}").Name("orders").To(orders)
	gw.Route("GET /broken").Name("broken").Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pylon.Error(w, r, http.StatusBadGateway, "Upstream failed.")
	}))
	if err := gw.Err(); err != nil {
		t.Fatal(err)
	}

	// The running gateway, with some traffic.
	gwSrv := httptest.NewServer(gw)
	defer gwSrv.Close()
	for i := range 20 {
		path := "/orders/" + fmt.Sprint(i)
		if i%5 == 0 {
			path = "/broken"
		}
		res, err := http.Get(gwSrv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
	}

	h, err := admin.New(admin.Options{Gateway: gw, Stats: stats, Refresh: refresh, Title: "Browser test"})
	if err != nil {
		t.Fatal(err)
	}
	flakyTarget := orders.Targets()[1]
	// The first page load is served healthy; then the target goes down,
	// and each later load waits (with a deadline) until health checks have
	// seen it, so that what the browser shows after a refresh is decided.
	var mu sync.Mutex
	var loads []bool // flaky target healthy, per page load
	page := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/" {
			mu.Lock()
			n := len(loads)
			mu.Unlock()
			if n > 0 {
				flaky.down.Store(true)
				deadline := time.Now().Add(5 * time.Second)
				for flakyTarget.Healthy() && time.Now().Before(deadline) {
					time.Sleep(5 * time.Millisecond) // a poll with a deadline, on the server's side
				}
			}
			mu.Lock()
			loads = append(loads, flakyTarget.Healthy())
			mu.Unlock()
		}
		h.ServeHTTP(w, r)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	adminSrv := &http.Server{Handler: page, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- adminSrv.Serve(ln) }()
	defer func() {
		_ = adminSrv.Close()
		<-served
	}()
	url := "http://" + ln.Addr().String() + "/"

	// One browser run: the page loads, its script refreshes it once the
	// interval is over, and the DOM is dumped. The virtual time budget is
	// the refresh interval plus a margin under it: the page must show the
	// change within one refresh.
	start := time.Now()
	dom := browse(t, url, refresh+refresh*3/4, "--dump-dom")
	mu.Lock()
	got := append([]bool(nil), loads...)
	mu.Unlock()
	t.Logf("chromium took %v; page loads (flaky target healthy?): %v", time.Since(start).Round(time.Millisecond), got)
	if len(got) < 2 || !got[0] || got[len(got)-1] {
		t.Fatalf("page loads %v: want a first load with the target healthy and a refresh with it down", got)
	}
	row := targetRow(dom, flakyTarget.String())
	if row == "" {
		t.Fatalf("the page has no row for %s:\n%s", flakyTarget, dom)
	}
	if !strings.Contains(row, `data-health="unhealthy"`) || !strings.Contains(row, ">unhealthy<") {
		t.Fatalf("after a refresh the page shows the target as:\n%s", row)
	}
	if good := targetRow(dom, orders.Targets()[0].String()); !strings.Contains(good, `data-health="healthy"`) {
		t.Errorf("the healthy target shows as:\n%s", good)
	}
	for _, want := range []string{"Browser test", "GET /orders/{id}", `<svg class="spark"`, "Recent errors", "502"} {
		if !strings.Contains(dom, want) {
			t.Errorf("the page lacks %q", want)
		}
	}

	// One screenshot, to look at.
	shot := filepath.Join(t.TempDir(), "status.png")
	if dir := os.Getenv("ADMIN_SCREENSHOT_DIR"); dir != "" {
		shot = filepath.Join(dir, "status.png")
	}
	browse(t, url, refresh/2, "--screenshot="+shot, "--window-size=1400,1000", "--hide-scrollbars")
	if fi, err := os.Stat(shot); err != nil || fi.Size() < 10_000 {
		t.Fatalf("screenshot %s: %v", shot, err)
	}
	t.Logf("screenshot: %s", shot)
}

// targetRow returns the <tr> of the page's target table for target.
func targetRow(dom, target string) string {
	i := strings.Index(dom, `data-target="`+target+`"`)
	if i < 0 {
		return ""
	}
	j := strings.Index(dom[i:], "</tr>")
	if j < 0 {
		return dom[i:]
	}
	return dom[i : i+j]
}
