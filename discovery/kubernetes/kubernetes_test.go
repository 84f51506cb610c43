package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/discovery"
)

type ep struct {
	addr                        string
	ready, serving, terminating *bool
	zones                       []string
}

var yes, no = ptr(true), ptr(false)

func ptr[T any](v T) *T { return &v }

// slice builds an EndpointSlice of service orders in namespace shop.
func slice(name, service string, port int32, eps ...ep) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop",
			Labels: map[string]string{discoveryv1.LabelServiceName: service}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports: []discoveryv1.EndpointPort{
			{Name: ptr("http"), Port: ptr(port), Protocol: ptr(corev1.ProtocolTCP)},
			{Name: ptr("metrics"), Port: ptr(int32(9090))},
		},
	}
	for _, e := range eps {
		x := discoveryv1.Endpoint{Addresses: []string{e.addr},
			Conditions: discoveryv1.EndpointConditions{Ready: e.ready, Serving: e.serving, Terminating: e.terminating}}
		if e.zones != nil {
			x.Hints = &discoveryv1.EndpointHints{}
			for _, z := range e.zones {
				x.Hints.ForZones = append(x.Hints.ForZones, discoveryv1.ForZone{Name: z})
			}
		}
		s.Endpoints = append(s.Endpoints, x)
	}
	return s
}

// targets returns the backend's target URLs, sorted.
func targets(b *pylon.Backend) []string {
	var s []string
	for _, t := range b.Targets() {
		s = append(s, t.String())
	}
	slices.Sort(s)
	return s
}

// waitFor polls cond until it holds or a deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		<-tick.C
	}
}

// eventually waits, with a deadline, until the backend's targets are want.
func eventually(t *testing.T, b *pylon.Backend, want ...string) {
	t.Helper()
	waitFor(t, fmt.Sprintf("targets %v (have %v)", want, targets(b)), func() bool { return slices.Equal(targets(b), want) })
}

func TestSourceFollowsSlices(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset(
		slice("orders-a", "orders", 8080, ep{addr: "10.1.0.1"}, ep{addr: "10.1.0.2", ready: yes}),
		slice("other", "payments", 8080, ep{addr: "10.9.0.1"}), // another service
	)
	src, err := New(client, Options{Namespace: "shop", Service: "orders", Port: "http"})
	if err != nil {
		t.Fatal(err)
	}
	b := pylon.MustNewBackend("orders", pylon.BackendOptions{}) // targets from the source
	defer b.Close()
	k := discovery.Keep(b, src, discovery.Options{})
	defer k.Stop()
	eventually(t, b, "http://10.1.0.1:8080", "http://10.1.0.2:8080")

	slices := client.DiscoveryV1().EndpointSlices("shop")
	t.Run("create", func(t *testing.T) {
		if _, err := slices.Create(ctx, slice("orders-b", "orders", 8080, ep{addr: "10.1.0.3"}), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, b, "http://10.1.0.1:8080", "http://10.1.0.2:8080", "http://10.1.0.3:8080")
	})
	t.Run("update: not ready, terminating", func(t *testing.T) {
		s := slice("orders-a", "orders", 8080,
			ep{addr: "10.1.0.1", ready: no, serving: yes, terminating: yes}, // draining
			ep{addr: "10.1.0.2", ready: no},                                 // failing readiness
			ep{addr: "10.1.0.4", ready: yes})                                // new pod
		if _, err := slices.Update(ctx, s, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, b, "http://10.1.0.3:8080", "http://10.1.0.4:8080")
	})
	t.Run("delete", func(t *testing.T) {
		if err := slices.Delete(ctx, "orders-b", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, b, "http://10.1.0.4:8080")
	})
	t.Run("relabelled away", func(t *testing.T) {
		if _, err := slices.Update(ctx, slice("orders-a", "payments", 8080, ep{addr: "10.1.0.4"}), metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		// No slice left: Keep keeps the last good set.
		waitFor(t, "Keeper.Err to be ErrEmpty", func() bool { return errors.Is(k.Err(), discovery.ErrEmpty) })
		eventually(t, b, "http://10.1.0.4:8080")
	})
}

func TestEndpointsRules(t *testing.T) {
	for _, tc := range []struct {
		name   string
		opts   Options
		slices []*discoveryv1.EndpointSlice
		want   []string
	}{
		{"ready nil means ready", Options{Port: "http"},
			[]*discoveryv1.EndpointSlice{slice("a", "orders", 80, ep{addr: "10.0.0.1"})},
			[]string{"http://10.0.0.1:80"}},
		{"port by name", Options{Port: "metrics"},
			[]*discoveryv1.EndpointSlice{slice("a", "orders", 80, ep{addr: "10.0.0.1"})},
			[]string{"http://10.0.0.1:9090"}},
		{"no such port", Options{Port: "grpc"},
			[]*discoveryv1.EndpointSlice{slice("a", "orders", 80, ep{addr: "10.0.0.1"})},
			nil},
		{"terminating serving used when none is ready", Options{Port: "http"},
			[]*discoveryv1.EndpointSlice{slice("a", "orders", 80,
				ep{addr: "10.0.0.1", ready: no, serving: yes, terminating: yes},
				ep{addr: "10.0.0.2", ready: no, serving: no, terminating: yes},
				ep{addr: "10.0.0.3", ready: no})},
			[]string{"http://10.0.0.1:80"}},
		{"terminating fallback off", Options{Port: "http", NoTerminatingFallback: true},
			[]*discoveryv1.EndpointSlice{slice("a", "orders", 80,
				ep{addr: "10.0.0.1", ready: no, serving: yes, terminating: yes})},
			nil},
		{"terminating ignored while some are ready", Options{Port: "http"},
			[]*discoveryv1.EndpointSlice{slice("a", "orders", 80,
				ep{addr: "10.0.0.1", ready: no, serving: yes, terminating: yes},
				ep{addr: "10.0.0.2"})},
			[]string{"http://10.0.0.2:80"}},
		{"one pod in two slices", Options{Port: "http"},
			[]*discoveryv1.EndpointSlice{
				slice("a", "orders", 80, ep{addr: "10.0.0.1", ready: no}),
				slice("b", "orders", 80, ep{addr: "10.0.0.1"})},
			[]string{"http://10.0.0.1:80"}},
		{"zone hints", Options{Port: "http", Zone: "eu-1a"},
			[]*discoveryv1.EndpointSlice{slice("a", "orders", 80,
				ep{addr: "10.0.0.1", zones: []string{"eu-1a"}},
				ep{addr: "10.0.0.2", zones: []string{"eu-1b"}})},
			[]string{"http://10.0.0.1:80"}},
		{"zone hints incomplete: ignored", Options{Port: "http", Zone: "eu-1a"},
			[]*discoveryv1.EndpointSlice{slice("a", "orders", 80,
				ep{addr: "10.0.0.1", zones: []string{"eu-1a"}},
				ep{addr: "10.0.0.2"})},
			[]string{"http://10.0.0.1:80", "http://10.0.0.2:80"}},
		{"zone with no hinted endpoint: all", Options{Port: "http", Zone: "eu-1c"},
			[]*discoveryv1.EndpointSlice{slice("a", "orders", 80,
				ep{addr: "10.0.0.1", zones: []string{"eu-1a"}})},
			[]string{"http://10.0.0.1:80"}},
		{"https and IPv6", Options{Port: "http", Scheme: "https"},
			func() []*discoveryv1.EndpointSlice {
				s := slice("a", "orders", 443, ep{addr: "fd00::1"})
				s.AddressType = discoveryv1.AddressTypeIPv6
				return []*discoveryv1.EndpointSlice{s}
			}(),
			[]string{"https://[fd00::1]:443"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Namespace, tc.opts.Service = "shop", "orders"
			src, err := New(fake.NewClientset(), tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, e := range src.endpoints(tc.slices) {
				got = append(got, e.URL)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("targets = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestNewInvalid(t *testing.T) {
	client := fake.NewClientset()
	for _, tc := range []struct {
		opts Options
		want string
	}{
		{Options{Service: "orders"}, "required"},
		{Options{Namespace: "shop", Service: "orders", Scheme: "ftp"}, "Scheme"},
		{Options{Namespace: "shop", Service: "orders", Scheme: "h2"}, "want http, https or h2c"},
		{Options{Namespace: "shop", Service: "orders", Resync: -1}, "Resync"},
	} {
		if _, err := New(client, tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want an error about %s", tc.opts, err, tc.want)
		}
	}
	if _, err := New(nil, Options{Namespace: "shop", Service: "orders"}); err == nil || !strings.Contains(err.Error(), "shop/orders") {
		t.Errorf("New(nil) = %v, want an error naming the service", err)
	}
}

// TestH2CTargets: an in-cluster gRPC service speaks plaintext HTTP/2. A
// Source with Scheme h2c gives the Backend h2c:// targets, and requests
// through a Gateway reach the pod over HTTP/2 with prior knowledge.
func TestH2CTargets(t *testing.T) {
	up := pylon.NewServer("", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Proto)
	}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = up.Serve(ln) }()
	t.Cleanup(func() { _ = up.Close() })
	addr := ln.Addr().(*net.TCPAddr)

	client := fake.NewClientset(slice("greeter-a", "greeter", int32(addr.Port), ep{addr: addr.IP.String()}))
	src, err := New(client, Options{Namespace: "shop", Service: "greeter", Port: "http", Scheme: pylon.SchemeH2C})
	if err != nil {
		t.Fatal(err)
	}
	b := pylon.MustNewBackend("greeter", pylon.BackendOptions{})
	defer b.Close()
	k := discovery.Keep(b, src, discovery.Options{})
	defer k.Stop()
	eventually(t, b, "h2c://"+addr.String())

	gw := pylon.New(pylon.Options{})
	gw.Route("/").To(b)
	if err := gw.Err(); err != nil {
		t.Fatal(err)
	}
	front := httptest.NewServer(gw)
	defer front.Close()
	res, err := http.Get(front.URL + "/greeter.Greeter/SayHello")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK || string(body) != "HTTP/2.0" {
		t.Fatalf("through the gateway: %d %q, want 200 from the pod over HTTP/2", res.StatusCode, body)
	}
}
