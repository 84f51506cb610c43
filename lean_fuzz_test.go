package pylon

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// fuzzAnswer writes data to a new connection to addr, half-closes it and
// names what came back first: a status code, no answer (the server closed
// the connection), or a timeout. Every step is bounded by a deadline.
func fuzzAnswer(addr string, data []byte) (answer, client string) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return "dial: " + err.Error(), ""
	}
	defer conn.Close()
	client = conn.LocalAddr().String()
	conn.SetDeadline(time.Now().Add(3 * time.Second))
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		if _, err := conn.Write(data); err == nil {
			conn.(*net.TCPConn).CloseWrite()
		}
	}()
	defer func() { <-wrote }()
	br := bufio.NewReader(conn)
	for {
		res, err := http.ReadResponse(br, nil)
		switch {
		case err == nil:
			res.Body.Close()
			if res.StatusCode < 200 && res.StatusCode != http.StatusSwitchingProtocols {
				continue // interim
			}
			return fmt.Sprintf("status %d", res.StatusCode), client
		case errors.Is(err, os.ErrDeadlineExceeded):
			return "timeout", client
		case closedErr(err):
			return "no answer", client
		default:
			// Bytes that are no HTTP/1 response (an HTTP/2 server
			// preface): compared as they are.
			// The error quotes the bytes read so far, which is
			// timing: only its kind counts.
			msg, _, _ := strings.Cut(normErr(err), " \"")
			return "unparsable answer: " + msg, client
		}
	}
}

// h2Answer folds the two answers net/http's HTTP/2 server gives a
// connection that starts with the client preface and then ends: its
// SETTINGS (not an HTTP/1 response), or nothing when it read the end first.
// Which one is timing (under load it can be either, three times over); both
// servers' answers are that server's.
func h2Answer(data []byte, ans string) string {
	if bytes.HasPrefix(data, []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")) &&
		(ans == "no answer" || strings.HasPrefix(ans, "unparsable answer")) {
		return "HTTP/2 SETTINGS or nothing"
	}
	return ans
}

// FuzzLeanServer feeds arbitrary bytes to a lean and a net/http server with
// the same handler: the lean one must not panic or hang, and must answer
// with net/http's status code, or close without an answer when it does.
func FuzzLeanServer(f *testing.F) {
	for _, tc := range leanCases() {
		f.Add([]byte(strings.Join(tc.steps, "")))
	}
	pairs := []*leanPair{startLeanPair(f, true), startLeanPair(f, false)}
	f.Fuzz(func(t *testing.T, data []byte) {
		for i, p := range pairs {
			variant := []string{"NewServer", "bare http.Server"}[i]
			// Some answers are timing (an HTTP/2 server that reads EOF
			// before it has sent its SETTINGS sends nothing): a
			// difference must hold over three tries.
			var std, lean string
			for range 3 {
				var stdClient, leanClient string
				std, stdClient = fuzzAnswer(p.std, data)
				lean, leanClient = fuzzAnswer(p.lean, data)
				std, lean = h2Answer(data, std), h2Answer(data, lean)
				p.stdH.takeNotes(stdClient)
				p.leanH.takeNotes(leanClient)
				p.stdLog.take()
				p.leanLog.take()
				if std == lean {
					break
				}
			}
			if std != lean {
				t.Errorf("%s: net/http: %s, lean: %s, for %q", variant, std, lean, data)
			}
			// The lean server still serves.
			if got, _ := fuzzAnswer(p.lean, []byte(get("/small"))); got != "status 200" {
				t.Fatalf("%s: after %q the lean server answers a plain GET with %s", variant, data, got)
			}
		}
	})
}
