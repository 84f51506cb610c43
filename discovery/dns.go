package discovery

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pylon-gateway/pylon"
	"golang.org/x/net/dns/dnsmessage"
)

// DNSOptions configures the DNS resolvers [DNS] and [SRV]. The zero value
// resolves through the system's name servers into http targets.
type DNSOptions struct {
	// Server is the "host:port" of the name server to ask. Empty means the
	// system's (/etc/resolv.conf).
	Server string
	// Scheme is the targets' scheme: "http", "https", or "h2c"
	// ([pylon.SchemeH2C], plaintext HTTP/2 for gRPC services). Empty means
	// "http".
	Scheme string
	// Port is the targets' port for DNS (A/AAAA); SRV records carry their
	// own. Zero means the scheme's default port, left out of the URL.
	Port int
	// Path is the targets' base path ("/api"), as in
	// BackendOptions.Targets. Empty means none.
	Path string
	// Network is "ip" (A and AAAA records), "ip4" (A only) or "ip6" (AAAA
	// only). Empty means "ip".
	Network string
	// KeepHostnames makes SRV targets URLs of the records' host names,
	// resolved by the transport at each connection (for TLS names, say).
	// False means each SRV target is resolved here to its addresses, one
	// endpoint each, with the name server above. DNS ignores it.
	KeepHostnames bool
}

// DNSResolver is a [Resolver] of a name's A and AAAA records, each address
// a target; see [DNS].
type DNSResolver struct {
	name string
	opts DNSOptions
}

// DNS returns a Resolver of the A and AAAA records of name: each address
// is a target of weight 1 on opts.Port. The answer's TTL is the lowest of
// its records' (a TTL of 0 is reported as the shortest wait, which Poll
// raises to its MinInterval). A name that does not exist, or has no
// address, is an empty set.
func DNS(name string, opts DNSOptions) *DNSResolver {
	return &DNSResolver{name: name, opts: opts}
}

// Resolve implements [Resolver].
func (d *DNSResolver) Resolve(ctx context.Context) (Result, error) {
	q := newQuery(d.opts.Server)
	addrs, err := q.lookupIP(ctx, d.opts.Network, d.name)
	if err != nil {
		return Result{}, fmt.Errorf("discovery: DNS %s%s: %w", d.name, via(d.opts.Server), err)
	}
	eps := make([]pylon.Endpoint, len(addrs))
	for i, a := range addrs {
		eps[i] = pylon.Endpoint{URL: targetURL(d.opts, a.String(), d.opts.Port), Weight: 1}
	}
	return Result{Endpoints: eps, TTL: q.ttl()}, nil
}

// SRVResolver is a [Resolver] of a name's SRV records, targets with
// weights and priorities; see [SRV].
type SRVResolver struct {
	name string
	opts DNSOptions
}

// SRV returns a Resolver of the SRV records of name (the whole name, such
// as "_http._tcp.orders.internal"): each record is a target on the
// record's port with its priority (lower first, see
// [pylon.Endpoint.Priority]) and weight (a weight of 0 counts as 1). The
// record's host is resolved to its addresses with the same name server,
// one target each, unless opts.KeepHostnames. The TTL is the lowest of the
// records' (SRV and addresses). A name that does not exist is an empty
// set.
//
// A record's weight is the record's (RFC 2782), however many addresses its
// host has: its addresses share it. Within a priority, every weight is
// first multiplied by the smallest whole factor that gives each address at
// least 1 (1 unless a record has more addresses than weight: two records
// of weight 1, one of them with 4 addresses, become 4 and 1+1+1+1); then a
// record of weight w over n addresses gives each w/n, rounded down, and
// one more to each of the first w%n of them in URL order, so that they add
// up to w exactly (weight 10 over 4 addresses: 3, 3, 2, 2).

func SRV(name string, opts DNSOptions) *SRVResolver {
	return &SRVResolver{name: name, opts: opts}
}

// Resolve implements [Resolver].
func (s *SRVResolver) Resolve(ctx context.Context) (Result, error) {
	q := newQuery(s.opts.Server)
	_, srvs, err := q.r.LookupSRV(ctx, "", "", s.name)
	if err != nil && !isNotFound(err) {
		return Result{}, fmt.Errorf("discovery: SRV %s%s: %w", s.name, via(s.opts.Server), err)
	}
	var recs []srvRecord
	for _, rec := range srvs {
		host := strings.TrimSuffix(rec.Target, ".")
		if host == "" {
			continue // "." : the service is decidedly not available
		}
		r := srvRecord{weight: max(int(rec.Weight), 1), priority: int(rec.Priority)}
		if s.opts.KeepHostnames {
			r.urls = []string{targetURL(s.opts, host, int(rec.Port))}
		} else {
			addrs, err := q.lookupIP(ctx, s.opts.Network, rec.Target)
			if err != nil {
				return Result{}, fmt.Errorf("discovery: SRV %s%s: target %s: %w", s.name, via(s.opts.Server), host, err)
			}
			for _, a := range addrs {
				r.urls = append(r.urls, targetURL(s.opts, a.String(), int(rec.Port)))
			}
		}
		recs = append(recs, r)
	}
	return Result{Endpoints: srvEndpoints(recs), TTL: q.ttl()}, nil
}

// srvRecord is one SRV record with its targets' URLs.
type srvRecord struct {
	weight   int // at least 1
	priority int
	urls     []string
}

// srvEndpoints turns records into endpoints, each record's weight shared
// by its URLs as SRV's doc says.
func srvEndpoints(recs []srvRecord) []pylon.Endpoint {
	scale := map[int]int{} // by priority
	for _, r := range recs {
		if n := len(r.urls); n > 0 {
			scale[r.priority] = max(scale[r.priority], (n+r.weight-1)/r.weight)
		}
	}
	var eps []pylon.Endpoint
	for _, r := range recs {
		n, w := len(r.urls), r.weight*scale[r.priority]
		slices.Sort(r.urls) // the remainder goes to the same addresses whatever their order in the answer
		for i, u := range r.urls {
			ew := w / n
			if i < w%n {
				ew++
			}
			eps = append(eps, pylon.Endpoint{URL: u, Weight: ew, Priority: r.priority})
		}
	}
	return eps
}

// targetURL builds a target base URL for host and port.
func targetURL(o DNSOptions, host string, port int) string {
	scheme := o.Scheme
	if scheme == "" {
		scheme = "http"
	}
	hp := host
	if strings.Contains(host, ":") {
		hp = "[" + host + "]"
	}
	if port > 0 {
		hp = net.JoinHostPort(host, strconv.Itoa(port))
	}
	return scheme + "://" + hp + o.Path
}

// via names the configured name server in errors: the standard library's
// name the system's, which the query did not go to.
func via(server string) string {
	if server == "" {
		return ""
	}
	return " (asking " + server + ")"
}

func isNotFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}

// query is one resolution: a net.Resolver (the standard library's, with
// its retries and TCP fallback) whose connections go to the configured
// server, and read the answers that pass through them for their TTLs.
type query struct {
	r *net.Resolver

	mu     sync.Mutex
	minTTL uint32
	seen   bool
}

func newQuery(server string) *query {
	q := &query{minTTL: math.MaxUint32}
	var d net.Dialer
	q.r = &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
			if server != "" {
				address = server
			}
			c, err := d.DialContext(ctx, network, address)
			if err != nil {
				return nil, err
			}
			if pc, ok := c.(*net.UDPConn); ok {
				return &packetSniffer{UDPConn: pc, q: q}, nil
			}
			return &streamSniffer{Conn: c, q: q}, nil
		},
	}
	return q
}

func (q *query) lookupIP(ctx context.Context, network, name string) ([]netip.Addr, error) {
	if network == "" {
		network = "ip"
	}
	addrs, err := q.r.LookupNetIP(ctx, network, name)
	if err != nil {
		if isNotFound(err) {
			return nil, nil
		}
		return nil, err
	}
	for i, a := range addrs {
		addrs[i] = a.Unmap()
	}
	return addrs, nil
}

// ttl returns the lowest TTL of the answers seen: 0 when none had records
// (unknown), and 1ns for a TTL of 0 (the shortest wait).
func (q *query) ttl() time.Duration {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.seen {
		return 0
	}
	if q.minTTL == 0 {
		return time.Nanosecond
	}
	return time.Duration(q.minTTL) * time.Second
}

// record reads the TTLs of the answer records of one DNS message.
func (q *query) record(msg []byte) {
	var p dnsmessage.Parser
	if _, err := p.Start(msg); err != nil {
		return
	}
	if err := p.SkipAllQuestions(); err != nil {
		return
	}
	for {
		h, err := p.AnswerHeader()
		if err != nil {
			return
		}
		switch h.Type {
		case dnsmessage.TypeA, dnsmessage.TypeAAAA, dnsmessage.TypeSRV, dnsmessage.TypeCNAME:
			q.mu.Lock()
			q.seen = true
			q.minTTL = min(q.minTTL, h.TTL)
			q.mu.Unlock()
		}
		if err := p.SkipAnswer(); err != nil {
			return
		}
	}
}

// packetSniffer is a UDP connection of the resolver: each datagram read is
// one DNS message. It stays a net.PacketConn, as the resolver needs.
type packetSniffer struct {
	*net.UDPConn
	q *query
}

func (c *packetSniffer) Read(b []byte) (int, error) {
	n, err := c.UDPConn.Read(b)
	if n > 0 {
		c.q.record(b[:n])
	}
	return n, err
}

// streamSniffer is a TCP connection of the resolver: messages come with a
// two-byte length prefix (RFC 1035 4.2.2), reassembled here as read.
type streamSniffer struct {
	net.Conn
	q   *query
	buf []byte
}

// maxSniff bounds what a streamSniffer holds: one message at most.
const maxSniff = 64 << 10

func (c *streamSniffer) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 && len(c.buf)+n <= maxSniff+2 {
		c.buf = append(c.buf, b[:n]...)
		for len(c.buf) >= 2 {
			l := int(binary.BigEndian.Uint16(c.buf))
			if len(c.buf) < 2+l {
				break
			}
			c.q.record(c.buf[2 : 2+l])
			c.buf = c.buf[2+l:]
		}
	}
	return n, err
}
