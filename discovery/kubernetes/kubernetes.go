// Package kubernetes is a discovery source for pylon Backends that follows
// the EndpointSlices of a Kubernetes Service (discovery.k8s.io/v1), through
// a client-go informer: each ready endpoint is a target.
//
//	src, err := kubernetes.New(clientset, kubernetes.Options{Namespace: "shop", Service: "orders", Port: "http"})
//	k := discovery.Keep(orders, src, discovery.Options{Logger: logger})
//	defer k.Stop()
//
// It lives in a module of its own so that client-go stays out of the
// pylon module: only a program that imports this package compiles it.
//
// Which endpoints are targets, following the EndpointSlice API and
// kube-proxy:
//
//   - An endpoint is a target when its conditions.ready is true (or unset,
//     which the API says means true). Ready implies serving and not
//     terminating.
//   - A terminating endpoint (conditions.terminating) is not a target: it
//     leaves the set, and the Backend drains it (requests in flight
//     finish, no new one is sent). A not-ready endpoint that is not
//     terminating (starting up, failing its readiness probe) is not a
//     target either.
//   - When no endpoint of the Service is ready, the endpoints that are
//     terminating but still serving (conditions.serving) are used instead,
//     as kube-proxy does (KEP-1669), so that a rolling update of a Service
//     with one replica does not drop traffic; Options.NoTerminatingFallback
//     turns this off.
//   - The target's address is the endpoint's first address (the API says
//     its addresses are fungible, and kube-proxy uses the first); its port
//     is the slice's port named Options.Port with protocol TCP. Slices of
//     address type IPv4, IPv6 and FQDN are read.
//   - With Options.Zone set, topology hints are honoured as kube-proxy
//     does: when every target carries hints, only those hinted for the
//     zone are kept (all of them when none is); when any lacks hints, the
//     hints are ignored.
//
// The tests use client-go's fake clientset (k8s.io/client-go/kubernetes/fake)
// with the real informer machinery, creating, updating and deleting slices
// and checking a Backend's targets follow. No cluster is available to the
// tests; the fake clientset is the accepted test double for the API server
// here, so the behaviour of a real API server (resource versions, watch
// bookmarks, relists after a 410) is client-go's, not tested here.
package kubernetes

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/pylon-gateway/pylon"
)

// Options configures a [Source]. Namespace and Service are required; every
// other field's zero value is a safe default, written in its comment.
type Options struct {
	// Namespace is the Service's namespace.
	Namespace string
	// Service is the Service's name; its slices are those labelled
	// kubernetes.io/service-name=Service.
	Service string
	// Port is the name of the Service port to send requests to. Empty
	// means the unnamed port, which a Service with a single port has.
	Port string
	// Scheme is the targets' URL scheme: "http", "https", or "h2c"
	// ([pylon.SchemeH2C]: plaintext HTTP/2 with prior knowledge, the usual
	// gRPC service in a cluster). Empty means "http".
	Scheme string
	// Zone is the gateway's own zone, for topology hints. Empty means
	// hints are ignored.
	Zone string
	// NoTerminatingFallback turns off the use of serving, terminating
	// endpoints when no endpoint is ready. False means they are used then.
	NoTerminatingFallback bool
	// Resync makes the informer hand every slice again at this period, so
	// that the set is recomputed even without a change. Zero means never.
	Resync time.Duration
}

// Source is a [discovery.Source] of a Service's ready endpoints. Build it
// with [New]; it is safe to Watch more than once, one informer per Watch.
//
// [discovery.Source]: https://pkg.go.dev/github.com/pylon-gateway/pylon/discovery#Source
type Source struct {
	client kubernetes.Interface
	opts   Options
	sel    labels.Selector
}

// New returns a Source of the endpoints of opts.Service in opts.Namespace,
// read through client. It fails, naming the Service, on a nil client or an
// option out of range.
func New(client kubernetes.Interface, opts Options) (*Source, error) {
	name := opts.Namespace + "/" + opts.Service
	switch {
	case client == nil:
		return nil, fmt.Errorf("kubernetes: service %q: nil client", name)
	case opts.Namespace == "" || opts.Service == "":
		return nil, fmt.Errorf("kubernetes: service %q: Namespace and Service are required", name)
	case opts.Scheme != "" && opts.Scheme != "http" && opts.Scheme != "https" && opts.Scheme != pylon.SchemeH2C:
		return nil, fmt.Errorf("kubernetes: service %q: Scheme %q, want http, https or h2c", name, opts.Scheme)
	case opts.Resync < 0:
		return nil, fmt.Errorf("kubernetes: service %q: negative Resync", name)
	}
	if opts.Scheme == "" {
		opts.Scheme = "http"
	}
	sel, err := labels.Parse(discoveryv1.LabelServiceName + "=" + opts.Service)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: service %q: %w", name, err)
	}
	return &Source{client: client, opts: opts, sel: sel}, nil
}

// Watch implements discovery.Source: it runs an informer on the Service's
// EndpointSlices and calls update with the whole target set once the
// informer has synced and after each change to it, until ctx ends. Errors of the
// informer's list and watch calls (it retries them with backoff) go to
// report, once per failed call.
func (s *Source) Watch(ctx context.Context, update func([]pylon.Endpoint), report func(error)) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	factory := informers.NewSharedInformerFactoryWithOptions(s.client, s.opts.Resync,
		informers.WithNamespace(s.opts.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = s.sel.String() }))
	slicesInf := factory.Discovery().V1().EndpointSlices()
	informer, lister := slicesInf.Informer(), slicesInf.Lister()

	changed := make(chan struct{}, 1)
	signal := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	errs := make(chan error, 1)
	_ = informer.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
		select {
		case errs <- err:
		default: // one unreported error is enough
		}
	})
	if _, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { signal() },
		UpdateFunc: func(any, any) { signal() },
		DeleteFunc: func(any) { signal() },
	}); err != nil {
		report(fmt.Errorf("kubernetes: service %s/%s: %w", s.opts.Namespace, s.opts.Service, err))
		return
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown() // after cancel: waits for the informer to end

	synced := make(chan bool, 1)
	go func() { synced <- cache.WaitForCacheSync(ctx.Done(), informer.HasSynced) }()
	for waiting := true; waiting; {
		select {
		case ok := <-synced:
			if !ok {
				return
			}
			waiting = false
		case err := <-errs:
			report(fmt.Errorf("kubernetes: service %s/%s: %w", s.opts.Namespace, s.opts.Service, err))
		}
	}
	var last []pylon.Endpoint
	for first := true; ; first = false {
		list, err := lister.EndpointSlices(s.opts.Namespace).List(s.sel)
		if err != nil {
			report(fmt.Errorf("kubernetes: service %s/%s: %w", s.opts.Namespace, s.opts.Service, err))
		} else if eps := s.endpoints(list); first || !slices.Equal(eps, last) {
			last = eps
			update(eps)
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case err := <-errs:
			report(fmt.Errorf("kubernetes: service %s/%s: %w", s.opts.Namespace, s.opts.Service, err))
		}
	}
}

// candidate is one endpoint of the Service, with what decides whether it
// is a target.
type candidate struct {
	url     string
	ready   bool // ready: a target
	serving bool // terminating but serving: a target when none is ready
	zones   []string
	hinted  bool
}

// endpoints computes the target set from the Service's slices.
func (s *Source) endpoints(list []*discoveryv1.EndpointSlice) []pylon.Endpoint {
	var cands []candidate
	seen := make(map[string]int) // url -> index in cands: a pod in two slices (during a move) once
	for _, sl := range list {
		port, ok := s.port(sl)
		if !ok {
			continue
		}
		switch sl.AddressType {
		case discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6, discoveryv1.AddressTypeFQDN:
		default:
			continue
		}
		for _, ep := range sl.Endpoints {
			if len(ep.Addresses) == 0 || ep.Addresses[0] == "" {
				continue
			}
			c := candidate{url: s.opts.Scheme + "://" + net.JoinHostPort(ep.Addresses[0], strconv.Itoa(int(port)))}
			c.ready, c.serving = conditions(ep.Conditions)
			if ep.Hints != nil {
				c.hinted = true
				for _, z := range ep.Hints.ForZones {
					c.zones = append(c.zones, z.Name)
				}
			}
			if i, dup := seen[c.url]; dup {
				// The better of the two reports wins.
				cands[i].ready = cands[i].ready || c.ready
				cands[i].serving = cands[i].serving || c.serving
				continue
			}
			seen[c.url] = len(cands)
			cands = append(cands, c)
		}
	}
	var chosen []candidate
	for _, c := range cands {
		if c.ready {
			chosen = append(chosen, c)
		}
	}
	if len(chosen) == 0 && !s.opts.NoTerminatingFallback {
		for _, c := range cands {
			if c.serving {
				chosen = append(chosen, c)
			}
		}
	}
	chosen = s.byZone(chosen)
	eps := make([]pylon.Endpoint, len(chosen))
	for i, c := range chosen {
		eps[i] = pylon.Endpoint{URL: c.url, Weight: 1}
	}
	slices.SortFunc(eps, func(a, b pylon.Endpoint) int {
		switch {
		case a.URL < b.URL:
			return -1
		case a.URL > b.URL:
			return 1
		}
		return 0
	})
	return eps
}

// conditions reads an endpoint's conditions with the API's defaults
// (ready and serving when unset, not terminating when unset): whether it
// is ready, and whether it is terminating while still serving.
func conditions(c discoveryv1.EndpointConditions) (ready, servingTerminating bool) {
	ready = c.Ready == nil || *c.Ready
	serving := c.Serving == nil || *c.Serving
	terminating := c.Terminating != nil && *c.Terminating
	if terminating {
		return false, serving
	}
	return ready, false
}

// byZone keeps the candidates hinted for the gateway's zone, as kube-proxy
// does: only when a zone is set and every candidate has hints, and only
// when some candidate is hinted for the zone.
func (s *Source) byZone(cands []candidate) []candidate {
	if s.opts.Zone == "" || len(cands) == 0 {
		return cands
	}
	var local []candidate
	for _, c := range cands {
		if !c.hinted {
			return cands
		}
		if slices.Contains(c.zones, s.opts.Zone) {
			local = append(local, c)
		}
	}
	if len(local) == 0 {
		return cands
	}
	return local
}

// port returns the slice's TCP port named Options.Port.
func (s *Source) port(sl *discoveryv1.EndpointSlice) (int32, bool) {
	for _, p := range sl.Ports {
		name := ""
		if p.Name != nil {
			name = *p.Name
		}
		if name != s.opts.Port || p.Port == nil {
			continue
		}
		if p.Protocol != nil && *p.Protocol != corev1.ProtocolTCP {
			continue
		}
		return *p.Port, true
	}
	return 0, false
}
