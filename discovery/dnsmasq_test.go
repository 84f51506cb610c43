package discovery

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// dnsmasq is a real DNS server for the tests: dnsmasq in the foreground, a
// child of the test, on a free loopback port, answering from a hosts file
// and SRV records written to the test's temporary directory.
type dnsmasq struct {
	t     *testing.T
	hosts string // path of the hosts file
	port  int
	ttl   int
	srv   []string
	cmd   *exec.Cmd
	exit  chan error
}

// startDNSMasq starts dnsmasq answering hosts (a hosts file's lines) and
// srv (--srv-host values) with record TTL ttl. It fails the test, never
// skips it, when dnsmasq is not installed: .ci/run installs it.
func startDNSMasq(t *testing.T, hosts string, srv []string, ttl int) *dnsmasq {
	t.Helper()
	if _, err := exec.LookPath("dnsmasq"); err != nil {
		t.Fatal("dnsmasq is not installed; the DNS discovery tests need a real DNS server: apt-get install -y dnsmasq (.ci/run does it)")
	}
	d := &dnsmasq{t: t, hosts: filepath.Join(t.TempDir(), "hosts"), ttl: ttl, srv: srv}
	d.writeHosts(hosts)
	t.Cleanup(d.stop)
	for try := 0; ; try++ {
		d.port = freeUDPPort(t)
		if d.start() {
			return d
		}
		if try == 4 {
			t.Fatal("dnsmasq did not start")
		}
	}
}

// freeUDPPort returns a loopback UDP port that was free a moment ago.
func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// Addr returns the "host:port" to send queries to.
func (d *dnsmasq) Addr() string { return fmt.Sprintf("127.0.0.1:%d", d.port) }

// start runs dnsmasq and waits until it answers; false when it exited
// first (its port was taken meanwhile).
func (d *dnsmasq) start() bool {
	args := []string{
		"--no-daemon", "--port=" + fmt.Sprint(d.port), "--listen-address=127.0.0.1", "--bind-interfaces",
		"--no-resolv", "--no-hosts", "--addn-hosts=" + d.hosts, "--local-ttl=" + fmt.Sprint(d.ttl),
		"--user=root", "--pid-file=", "--cache-size=0", "--log-facility=-", "--conf-file=/dev/null",
		"--host-record=ready.test,127.0.0.1", "--local=/test/",
	}
	for _, s := range d.srv {
		args = append(args, "--srv-host="+s)
	}
	d.cmd = exec.Command("dnsmasq", args...)
	var out strings.Builder
	d.cmd.Stdout, d.cmd.Stderr = &out, &out
	if err := d.cmd.Start(); err != nil {
		d.t.Fatalf("dnsmasq: %v", err)
	}
	d.exit = make(chan error, 1)
	go func() { d.exit <- d.cmd.Wait() }()
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var dl net.Dialer
		return dl.DialContext(ctx, network, d.Addr())
	}}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-d.exit:
			d.cmd = nil
			d.t.Logf("dnsmasq exited: %s", out.String())
			return false
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		_, err := r.LookupNetIP(ctx, "ip4", "ready.test")
		cancel()
		if err == nil {
			return true
		}
	}
	d.t.Fatalf("dnsmasq does not answer: %s", out.String())
	return false
}

// stop ends dnsmasq and waits for it.
func (d *dnsmasq) stop() {
	if d.cmd == nil {
		return
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	<-d.exit
	d.cmd = nil
}

func (d *dnsmasq) writeHosts(hosts string) {
	tmp := d.hosts + ".tmp"
	if err := os.WriteFile(tmp, []byte(hosts), 0o644); err != nil {
		d.t.Fatal(err)
	}
	if err := os.Rename(tmp, d.hosts); err != nil {
		d.t.Fatal(err)
	}
}

// SetHosts replaces the hosts file and has dnsmasq read it again (SIGHUP).
func (d *dnsmasq) SetHosts(hosts string) {
	d.writeHosts(hosts)
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		d.t.Fatal(err)
	}
}

// SetSRV replaces the SRV records: dnsmasq reads them only at start, so it
// is restarted on the same port.
func (d *dnsmasq) SetSRV(srv []string) {
	d.stop()
	d.srv = srv
	if !d.start() {
		d.t.Fatal("dnsmasq could not restart on its port")
	}
}
