package pylon

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// GRPCStatusError is the error a Guard's done is told when a gRPC call's
// response was forwarded whole but ended with a status that says the target
// failed: UNAVAILABLE, RESOURCE_EXHAUSTED, or DEADLINE_EXCEEDED before the
// client's own deadline. Breakers count it as a failure, as they count any
// error; application statuses (NOT_FOUND, INVALID_ARGUMENT, ...) are
// successes of the target and are not reported.
type GRPCStatusError struct {
	// Code is the upstream's grpc-status.
	Code GRPCCode
}

// Error implements error.
func (e *GRPCStatusError) Error() string {
	return "pylon: upstream gRPC status " + strconv.Itoa(int(e.Code))
}

// errClientOutcome is what passive health and a Guard are told when an
// upstream failure was the client's doing: its grpc-timeout passed, and the
// upstream, told the deadline, gave up. It wraps context.Canceled: like a
// client going away, it says nothing about the target.
var errClientOutcome = fmt.Errorf("pylon: the client's deadline passed: %w", context.Canceled)

// extendedConnectDetail refuses CONNECT, and RFC 8441 extended CONNECT
// (WebSocket over HTTP/2, with a :protocol pseudo-header).
const extendedConnectDetail = "CONNECT, and WebSocket over HTTP/2 (RFC 8441), are not supported; use WebSocket over HTTP/1.1."

// setGRPCTimeout tells the upstream how long the call has left: the
// request's deadline (the client's grpc-timeout, or the route's Timeout
// when sooner) less the time already spent, so that the upstream stops
// working when nobody waits any more.
func setGRPCTimeout(h http.Header, ctx context.Context) {
	if dl, ok := ctx.Deadline(); ok {
		h["Grpc-Timeout"] = []string{FormatGRPCTimeout(time.Until(dl))}
	}
}

// grpcStatusOf returns the grpc-status of a response: from its trailers, or
// its headers for a trailers-only response.
func grpcStatusOf(res *http.Response) (GRPCCode, bool) {
	v := res.Trailer["Grpc-Status"]
	if len(v) == 0 {
		v = res.Header["Grpc-Status"]
	}
	if len(v) == 0 {
		return 0, false
	}
	n, err := strconv.Atoi(strings.TrimSpace(v[0]))
	if err != nil || n < 0 || n > int(grpcMaxCode) {
		return GRPCUnknown, true
	}
	return GRPCCode(n), true
}

// grpcOutcome classifies a gRPC call whose response was forwarded whole, by
// its grpc-status: the outcome for passive health and the error for the
// Guard.
func grpcOutcome(ctx context.Context, code GRPCCode) (outcome, error) {
	switch code {
	case GRPCUnavailable, GRPCResourceExhausted:
		return outcomeFailure, &GRPCStatusError{Code: code}
	case GRPCDeadlineExceeded:
		if clientDeadlineOutcome(ctx, true) {
			return outcomeNeutral, errClientOutcome
		}
		return outcomeFailure, &GRPCStatusError{Code: code}
	}
	return outcomeSuccess, nil
}

// trailersOnlyUnavailable reports whether res is a trailers-only
// UNAVAILABLE answer to a gRPC call: the upstream refused the call before
// sending any of a response, so it may be sent to another target.
func trailersOnlyUnavailable(res *http.Response) bool {
	v := res.Header["Grpc-Status"]
	return len(v) == 1 && v[0] == "14" && res.StatusCode == http.StatusOK
}

// grpcBodyError ends a gRPC response whose upstream failed after the
// headers were sent: with the grpc-status a gRPC client understands, in
// the trailers, rather than a reset stream. It returns the attempt's
// outcome.
func grpcBodyError(w http.ResponseWriter, r *http.Request, info *RequestInfo, err error) (outcome, error) {
	code, msg := GRPCUnavailable, "The upstream service failed during the call."
	o, gerr := outcomeFailure, err
	client := clientDeadlineOutcome(r.Context(), streamCanceled(err))
	if client || errors.Is(err, context.DeadlineExceeded) && r.Context().Err() != nil {
		code, msg = GRPCDeadlineExceeded, "The call's deadline passed."
		if client {
			o, gerr = outcomeNeutral, errClientOutcome
			if info != nil {
				info.grpcClientDeadline = true
			}
		}
	}
	h := w.Header()
	h[http.TrailerPrefix+"Grpc-Status"] = []string{strconv.Itoa(int(code))}
	h[http.TrailerPrefix+"Grpc-Message"] = []string{EncodeGRPCMessage(msg)}
	if info != nil {
		info.GRPCStatus = int(code)
		info.grpcStatusSet = true
	}
	return o, gerr
}

// GRPCOutcome tells a circuit breaker (or any stage that judges upstream
// health by the response, as breaker's middleware does) what a gRPC call's
// answer means, since every gRPC answer is HTTP 200. Given the HTTP status
// the stage saw, it returns the status to judge by and an error:
//
//   - the gateway answered the call itself (no target, 502, 504, ...): the
//     HTTP status it stood for, as for an HTTP request;
//   - the client's own grpc-timeout passed: an error wrapping
//     context.Canceled, which says nothing about the upstream;
//   - the upstream ended it with UNAVAILABLE, RESOURCE_EXHAUSTED or
//     DEADLINE_EXCEEDED: a *GRPCStatusError;
//   - otherwise status and nil.
//
// It is meant for gRPC calls (see IsGRPC); for other requests it returns
// status and nil.
func (i *RequestInfo) GRPCOutcome(status int) (int, error) {
	if i == nil || !i.grpcStatusSet {
		return status, nil
	}
	if i.grpcClientDeadline {
		return status, errClientOutcome
	}
	if i.grpcGatewayStatus != 0 {
		return i.grpcGatewayStatus, nil
	}
	switch code := GRPCCode(i.GRPCStatus); code {
	case GRPCUnavailable, GRPCResourceExhausted, GRPCDeadlineExceeded:
		return status, &GRPCStatusError{Code: code}
	}
	return status, nil
}
