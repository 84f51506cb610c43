package main

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"time"
)

// nginxProc is nginx run as a reverse proxy to the upstream, for comparison.
type nginxProc struct {
	cmd *exec.Cmd
	dir string
	url string
}

// nginxConf proxies everything to the upstream over kept-alive HTTP/1.1
// connections, with logging off, as a tuned production nginx would.
const nginxConf = `%s
worker_processes %d;
daemon off;
master_process on;
pid %[3]s/nginx.pid;
error_log %[3]s/error.log warn;
events { worker_connections 4096; }
http {
	access_log off;
	client_body_temp_path %[3]s/body;
	proxy_temp_path %[3]s/proxy;
	fastcgi_temp_path %[3]s/fastcgi;
	uwsgi_temp_path %[3]s/uwsgi;
	scgi_temp_path %[3]s/scgi;
	keepalive_requests 1000000;
	upstream up {
		server %[4]s;
		keepalive 256;
		keepalive_requests 1000000;
	}
	server {
		listen %[5]s;
		location / {
			proxy_pass http://up;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
			proxy_set_header X-Forwarded-Proto $scheme;
		}
	}
}
`

// startNginx writes a configuration to a temporary directory and starts
// nginx in the foreground on a free loopback port, with that directory as
// its prefix.
func startNginx(upstream string) *nginxProc {
	u, err := url.Parse(upstream)
	if err != nil {
		fatal("nginx: %v", err)
	}
	dir, err := os.MkdirTemp("", "pylon-bench-nginx-")
	if err != nil {
		fatal("nginx: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fatal("nginx: %v", err)
	}
	addr := ln.Addr().String()
	ln.Close() // nginx binds it next; the window is small on a quiet loopback
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;" // workers read the temporary directory
	}
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, nginxConf, user, runtime.NumCPU(), dir, u.Host, addr), 0o644); err != nil {
		fatal("nginx: %v", err)
	}
	cmd := exec.Command("nginx", "-p", dir, "-c", conf, "-e", filepath.Join(dir, "error.log"))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		fatal("nginx: %v", err)
	}
	n := &nginxProc{cmd: cmd, dir: dir, url: "http://" + addr}
	children = append(children, &child{cmd: cmd})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return n
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			fatal("nginx did not start on %s: %v\n%s", addr, err, log)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (n *nginxProc) stop() {
	_ = n.cmd.Process.Signal(os.Interrupt) // SIGINT: fast shutdown
	_ = n.cmd.Wait()
	os.RemoveAll(n.dir)
}
