package jwtauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"
)

// remote fetches and refreshes a key set over HTTP. jwx's jwk.Cache is not
// used: it has no response size limit, no "refetch on unknown kid at most
// once per cooldown", and runs goroutines whose lifetime is not ours.
type remote struct {
	v       *Verifier
	bg      context.Context // canceled by Close; bounds every fetch
	client  *http.Client
	sf      singleflight.Group
	fetches atomic.Int64

	ownClient bool           // client made here: Close drops its idle connections
	inflight  sync.WaitGroup // fetches running; Close waits for them

	mu      sync.Mutex
	closed  bool
	jwksURL string    // JWKSURL, or the last jwks_uri discovery gave
	last    time.Time // start of the last fetch caused by an unknown kid
}

func newRemote(v *Verifier, bg context.Context) *remote {
	r := &remote{v: v, bg: bg, client: v.opts.HTTPClient, jwksURL: v.opts.JWKSURL}
	if r.client == nil {
		r.client = &http.Client{Timeout: v.opts.FetchTimeout, Transport: http.DefaultTransport.(*http.Transport).Clone()}
		r.ownClient = true
	}
	return r
}

// close stops new fetches and waits for running ones; the caller has
// canceled bg, so they end quickly.
func (r *remote) close() {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.inflight.Wait()
	if r.ownClient {
		r.client.CloseIdleConnections()
	}
}

var errCooldown = errors.New("jwtauth: unknown-kid refetch in cooldown")

type fetchResult struct{ next time.Duration }

// refresh fetches the key set now, shared with any fetch in flight. With
// cooldown set it does nothing when the last fetch started less than
// UnknownKeyCooldown ago. It returns the delay until the next background
// refresh.
func (r *remote) refresh(ctx context.Context, cooldown bool) (time.Duration, error) {
	key := "refresh"
	if cooldown {
		key = "refetch"
	}
	ch := r.sf.DoChan(key, func() (any, error) {
		now := r.v.now()
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			return nil, ErrClosed
		}
		if cooldown {
			// Only fetches caused by unknown kids count against the
			// cooldown: a key rotated just after start (or after a
			// background refresh) is picked up at once.
			if !r.last.IsZero() && now.Sub(r.last) < r.v.opts.UnknownKeyCooldown {
				r.mu.Unlock()
				return nil, errCooldown
			}
			r.last = now
		}
		r.inflight.Add(1)
		r.mu.Unlock()
		defer r.inflight.Done()
		next, err := r.fetch()
		if err != nil {
			return fetchResult{next: r.v.opts.MinRefreshInterval}, err
		}
		return fetchResult{next: next}, nil
	})
	select {
	case res := <-ch:
		next := r.v.opts.MinRefreshInterval
		if fr, ok := res.Val.(fetchResult); ok {
			next = fr.next
		}
		return next, res.Err
	case <-ctx.Done():
		return r.v.opts.MinRefreshInterval, ctx.Err()
	}
}

// refetch fetches the key set because a token named an unknown kid (or no
// keys are loaded yet). It reports whether a fetch ran and succeeded.
func (r *remote) refetch(ctx context.Context) bool {
	_, err := r.refresh(ctx, true)
	if err != nil && !errors.Is(err, errCooldown) && !errors.Is(err, ErrClosed) {
		r.v.log.Warn("jwtauth: key set refetch failed; keeping the last good set", "err", err)
	}
	return err == nil
}

func (r *remote) loop(next time.Duration) {
	defer r.v.wg.Done()
	t := time.NewTimer(next)
	defer t.Stop()
	for {
		select {
		case <-r.bg.Done():
			return
		case <-t.C:
		}
		next, err := r.refresh(r.bg, false)
		if err != nil && r.bg.Err() == nil {
			r.v.log.Warn("jwtauth: key set refresh failed; keeping the last good set", "err", err, "retry_in", next)
		}
		t.Reset(next)
	}
}

// fetch gets, checks and installs the key set, and returns the delay until
// the next refresh. On any error the current set is left as it is.
func (r *remote) fetch() (time.Duration, error) {
	r.fetches.Add(1)
	ctx, cancel := context.WithTimeout(r.bg, r.v.opts.FetchTimeout)
	defer cancel()
	r.mu.Lock()
	u := r.jwksURL
	r.mu.Unlock()
	if r.v.opts.DiscoveryURL != "" {
		// The discovery document is read at every fetch, so a changed
		// jwks_uri is followed without a restart. When it cannot be read,
		// the last jwks_uri it gave is used.
		d, err := r.discover(ctx)
		switch {
		case err == nil:
			if d != u && u != "" {
				r.v.log.Info("jwtauth: discovery names a new jwks_uri", "old", u, "new", d)
			}
			u = d
			r.mu.Lock()
			r.jwksURL = u
			r.mu.Unlock()
		case u == "":
			return 0, err
		default:
			r.v.log.Warn("jwtauth: discovery document unavailable; using the last jwks_uri", "err", err)
		}
	}
	body, hdr, err := r.get(ctx, u)
	if err != nil {
		return 0, err
	}
	set, skipped, err := parseJWKS(body, r.v.opts.MaxKeys)
	if err != nil {
		return 0, err
	}
	r.v.logSkipped(u, skipped)
	r.v.keys.Store(set)
	return refreshInterval(hdr, r.v.now(), r.v.opts.MinRefreshInterval, r.v.opts.MaxRefreshInterval), nil
}

// get fetches u and returns its body, bounded by MaxJWKSBytes. Only a 200
// with a JSON (or unspecified) media type is accepted.
func (r *remote) get(ctx context.Context, u string) ([]byte, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrJWKS, err)
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := r.client.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrJWKS, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		return nil, nil, fmt.Errorf("%w: %s answered %d", ErrJWKS, u, resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "" {
		mt, _, _ := mime.ParseMediaType(ct)
		if mt != "application/json" && !strings.HasSuffix(mt, "+json") {
			return nil, nil, fmt.Errorf("%w: %s answered media type %q", ErrJWKS, u, mt)
		}
	}
	limit := r.v.opts.MaxJWKSBytes
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: reading %s: %v", ErrJWKS, u, err)
	}
	if int64(len(body)) > limit {
		return nil, nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrJWKS, u, limit)
	}
	return body, resp.Header, nil
}

// discover reads the OpenID Connect discovery document and returns its
// jwks_uri.
func (r *remote) discover(ctx context.Context) (string, error) {
	body, _, err := r.get(ctx, r.v.opts.DiscoveryURL)
	if err != nil {
		return "", err
	}
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return "", fmt.Errorf("%w: discovery document: %v", ErrJWKS, err)
	}
	if !r.v.opts.SkipIssuerCheck && doc.Issuer != r.v.opts.Issuer {
		return "", fmt.Errorf("%w: discovery issuer %q is not %q", ErrJWKS, truncate(doc.Issuer), r.v.opts.Issuer)
	}
	p, err := url.Parse(doc.JWKSURI)
	if err != nil || p.Host == "" || (p.Scheme != "https" && p.Scheme != "http") {
		return "", fmt.Errorf("%w: discovery jwks_uri %q is not an http(s) URL", ErrJWKS, truncate(doc.JWKSURI))
	}
	if p.Scheme == "http" && !strings.HasPrefix(r.v.opts.DiscoveryURL, "http:") {
		return "", fmt.Errorf("%w: discovery jwks_uri downgrades https to http", ErrJWKS)
	}
	return doc.JWKSURI, nil
}

// refreshInterval derives the delay until the next refresh from the
// response's Cache-Control max-age (or Expires), clamped to [lo, hi]. No
// cache header means hi; no-store or no-cache means lo.
func refreshInterval(h http.Header, now time.Time, lo, hi time.Duration) time.Duration {
	d := hi
	found := false
	for _, v := range h.Values("Cache-Control") {
		for dir := range strings.SplitSeq(v, ",") {
			dir = strings.ToLower(strings.TrimSpace(dir))
			switch {
			case dir == "no-store" || dir == "no-cache":
				return lo
			case strings.HasPrefix(dir, "max-age="):
				if n, err := strconv.ParseInt(strings.Trim(dir[len("max-age="):], `"`), 10, 64); err == nil && n >= 0 {
					d, found = time.Duration(min(n, int64(hi/time.Second)+1))*time.Second, true
				}
			}
		}
	}
	if !found {
		if exp, err := http.ParseTime(h.Get("Expires")); err == nil {
			base := now
			if date, err := http.ParseTime(h.Get("Date")); err == nil {
				base = date
			}
			d = exp.Sub(base)
		}
	}
	return min(max(d, lo), hi)
}
