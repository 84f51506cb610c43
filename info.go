package pylon

import (
	"context"
	"net/netip"
	"net/url"
	"strconv"
	"time"
)

// RequestInfo is what each stage of the gateway records about one request:
// the gateway, route, backend and proxy fill their part, and later stages
// (authentication, rate limiting, circuit breaking, caching) fill theirs, so
// that one access-log line and one set of metrics see the whole story.
//
// The gateway puts a *RequestInfo into every request's context; [Info]
// returns it. Stages write to it from the goroutine serving the request; code
// that fans out (aggregation) gives each concurrent call a RequestInfo of its
// own with [NewContext] rather than sharing one.
//
// RequestInfo holds internal detail (upstream targets, error reasons) for
// logs and metrics; none of it is ever sent to a client.
type RequestInfo struct {
	// Start is when the gateway received the request.
	Start time.Time
	// RequestID is the request's ID, set by the RequestID middleware.
	// Problem responses carry it.
	RequestID string
	// ClientIP is the client's address: the connection's peer, or, when the
	// peer is a trusted proxy, the address its forwarding headers name. The
	// Gateway decides it once per request from Options.Trust (see
	// [Trust.Identify]); rate limits, caches, logs, metrics and the
	// forwarding headers sent upstream all read it here.
	ClientIP netip.Addr
	// Scheme is the scheme the client used, "http" or "https", decided
	// with ClientIP.
	Scheme string
	// Host is the host the client asked for, decided with ClientIP.
	Host string
	// PeerTrusted reports that the connection's peer is a trusted proxy,
	// whose forwarding headers were believed and are extended upstream.
	PeerTrusted bool

	// Route is the name of the matched route (its pattern unless named).
	Route string
	// Pattern is the matched route's full http.ServeMux pattern.
	Pattern string

	// Backend is the name of the backend the request was proxied to.
	Backend string
	// Target is the upstream target URL of the last attempt.
	Target string
	// Attempts is how many upstream attempts were made (1 + retries).
	Attempts int
	// UpstreamStatus is the status code of the upstream response that was
	// forwarded, or 0 when there was none.
	UpstreamStatus int
	// UpstreamDuration is the time spent waiting for upstream response
	// headers, summed over attempts.
	UpstreamDuration time.Duration
	// Split is the name of the side of a traffic split (package traffic)
	// that served the request, "" when no split ran. A name comes from
	// configuration, so it is usable as a metric label.
	Split string
	// ClientCanceled reports that the client went away before the response
	// was complete (logged as status 499).
	ClientCanceled bool

	// Subject is the authenticated subject (for example a JWT "sub").
	Subject string
	// SubjectScope qualifies Subject when one authentication admits the
	// subjects of several namespaces in which the same name may be two
	// different clients: jwtauth with a Multi of several issuers sets it
	// to the token's issuer (OpenID Connect Core §5.7: only "iss" and
	// "sub" together identify a user). It is empty when Subject is unique
	// on its own. Rate limits, caches and idempotency keys tell clients
	// apart by [RequestInfo.SubjectKey], which includes it.
	SubjectScope string
	// Auth names the mechanism that authenticated the request ("jwt",
	// "apikey", ...), set with Subject by whichever authentication
	// middleware admitted it. Caches and rate limits read [Authenticated],
	// never the credential headers, which an authentication middleware may
	// have removed.
	Auth string
	// ClientCert is the client's verified TLS certificate, recorded by
	// mtls.Identify; nil when there was none or no such middleware ran.
	// It is also the subject (Auth "mtls") when no other authentication
	// ran before it.
	ClientCert *ClientCert
	// AuthFailure is a short code from a fixed set when authentication or
	// authorization refused the request ("missing_token", "invalid_token",
	// "expired", "insufficient_scope", ...), usable as a metric label.
	AuthFailure string
	// RateLimit is the rate limiter's decision, if a limiter ran.
	RateLimit RateLimitInfo
	// Breaker is the circuit breaker state seen by the request ("closed",
	// "open", "half-open"), if a breaker ran.
	Breaker string
	// Cache is the cache status (RFC 9211 style: "hit", "miss", "stale"...),
	// if a cache ran.
	Cache string
	// Critical marks a request of a route that overload limits protect
	// longest: when they shed, they take other requests first. Set by
	// overload.Critical.
	Critical bool
	// Shed names the overload limit that refused the request ("" when none
	// did), set by the limits of package overload.
	Shed string
	// Error is a short, log-only reason when the request failed.
	Error string
	// Calls records the sub-requests an aggregation made, in the order
	// its calls are written.
	Calls []CallInfo

	// GRPCService and GRPCMethod name the gRPC method called
	// ("helloworld.Greeter", "SayHello"), set by the Gateway for gRPC and
	// gRPC-Web calls whose path is /service/method; empty otherwise.
	GRPCService string
	GRPCMethod  string
	// GRPCStatus is the call's gRPC status code: the upstream's
	// grpc-status, or the one the gateway answered with. Meaningful when
	// GRPCService is set and [RequestInfo.HasGRPCStatus] reports true.
	GRPCStatus int

	grpcStatusSet      bool     // GRPCStatus was recorded
	grpcGatewayStatus  int      // the HTTP status the gateway's own gRPC answer stood for
	grpcClientDeadline bool     // the call failed because the client's grpc-timeout passed
	identified         bool     // Trust.Identify decided the client
	connStripped       bool     // the headers the client's Connection named were removed on arrival
	unfolded           *url.URL // the URL as sent, while routing on its folded path
	strippedPrefix     string   // the path prefix the route removed, for Location
	addedPrefix        string   // the path prefix a group's RewritePrefix put in its place
	requestTrailers    bool     // the route forwards request trailers

	// fwdHeader is the forwarding-header family Trust read (when
	// PeerTrusted): the one family that is extended upstream.
	fwdHeader ForwardedHeader
}

// Authenticated reports whether an authentication middleware admitted the
// request: Auth or Subject is set.
func (i *RequestInfo) Authenticated() bool {
	return i != nil && (i.Auth != "" || i.Subject != "")
}

// SubjectKey returns the authenticated client's name as rate limits,
// caches and idempotency keys count it: Subject when SubjectScope is empty,
// else both, encoded so that no two (scope, subject) pairs, and no unscoped
// subject, share a key. It is "" when there is no Subject.
func (i *RequestInfo) SubjectKey() string {
	if i == nil || i.Subject == "" {
		return ""
	}
	if i.SubjectScope == "" && i.Subject[0] != '"' {
		return i.Subject
	}
	// A quoted scope ends at its first unescaped quote; an unscoped
	// subject that starts with a quote gets the empty scope `""`, which
	// no scoped key starts with.
	return strconv.Quote(i.SubjectScope) + i.Subject
}

// HasGRPCStatus reports whether a gRPC status was recorded in GRPCStatus:
// the upstream sent one, or the gateway answered the call itself.
func (i *RequestInfo) HasGRPCStatus() bool { return i != nil && i.grpcStatusSet }

// RateLimitInfo is a rate limiter's decision for one request.
type RateLimitInfo struct {
	// Key is the client key the limit was counted against.
	Key string
	// Decided reports that a limiter ran.
	Decided bool
	// Allowed reports whether the request was admitted.
	Allowed bool
	// Limit is the quota of the most restrictive policy.
	Limit int
	// Remaining is the quota left in that policy after this request.
	Remaining int
}

// Child returns a new RequestInfo for a sub-request made on behalf of this
// one (an aggregation call): it inherits the request-level fields (Start,
// RequestID, the client decision, Route, Pattern, Subject, SubjectScope,
// Auth and ClientCert) and none of the upstream ones, so that concurrent
// sub-requests each record their own story.
func (i *RequestInfo) Child() *RequestInfo {
	return &RequestInfo{
		Start:        i.Start,
		RequestID:    i.RequestID,
		ClientIP:     i.ClientIP,
		Scheme:       i.Scheme,
		Host:         i.Host,
		PeerTrusted:  i.PeerTrusted,
		Route:        i.Route,
		Pattern:      i.Pattern,
		Subject:      i.Subject,
		SubjectScope: i.SubjectScope,
		Auth:         i.Auth,
		GRPCService:  i.GRPCService,
		GRPCMethod:   i.GRPCMethod,
		Critical:     i.Critical,
		ClientCert:   i.ClientCert,
		identified:   i.identified,
		fwdHeader:    i.fwdHeader,
		connStripped: i.connStripped,
	}
}

// CallInfo is one sub-request of an aggregation, for logs and metrics.
type CallInfo struct {
	// Key is the call's key in the aggregation.
	Key string
	// Backend is the called backend's name, when it has one.
	Backend string
	// Target is the upstream target the call reached.
	Target string
	// Status is the upstream's status code, 0 when there was none.
	Status int
	// Duration is how long the call took.
	Duration time.Duration
	// Error is a short, log-only reason when the call failed.
	Error string
	// Outcome is the call's outcome from a fixed set, usable as a metric
	// label: "ok", "timeout", "skipped" (not made, or stopped, because
	// another call failed) or "error".
	Outcome string
}

type infoKey struct{}

// StatusClientClosedRequest is the status that logs and metrics record for
// a request whose client went away before the response was complete
// (nginx's 499). It is never sent to a client.
const StatusClientClosedRequest = 499

// Info returns the RequestInfo stored in ctx, or nil when there is none (a
// handler used outside a Gateway).
func Info(ctx context.Context) *RequestInfo {
	info, _ := ctx.Value(infoKey{}).(*RequestInfo)
	return info
}

// NewContext returns a copy of ctx that carries info. The Gateway calls it
// for every request; tests and code that serves a handler outside a Gateway
// may call it too.
func NewContext(ctx context.Context, info *RequestInfo) context.Context {
	return context.WithValue(ctx, infoKey{}, info)
}

// infoCtx carries a RequestInfo in the same allocation as the context that
// holds it: the gateway makes one per request.
type infoCtx struct {
	context.Context
	info RequestInfo
}

func (c *infoCtx) Value(key any) any {
	if key == (infoKey{}) {
		return &c.info
	}
	return c.Context.Value(key)
}
