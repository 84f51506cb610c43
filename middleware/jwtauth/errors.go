package jwtauth

import "errors"

// Sentinel errors returned (wrapped) by [Verifier.Verify]. Every one of them
// means the token is not accepted; the middleware answers 401 for all and
// logs the reason. Use errors.Is to tell them apart.
var (
	// ErrMissingToken means the request carried no token.
	ErrMissingToken = errors.New("jwtauth: no token")
	// ErrTokenTooLarge means the token is longer than Options.MaxTokenBytes.
	ErrTokenTooLarge = errors.New("jwtauth: token too large")
	// ErrMalformed means the token is not a compact JWS of three base64url
	// parts with a JSON header and payload, or uses an unsupported header
	// (such as "crit").
	ErrMalformed = errors.New("jwtauth: malformed token")
	// ErrAlgorithm means the token's "alg" is not an allowed algorithm, or
	// does not fit the key (type, curve or the key's own "alg").
	ErrAlgorithm = errors.New("jwtauth: algorithm not allowed")
	// ErrUnknownKey means no key in the key set matches the token's "kid".
	ErrUnknownKey = errors.New("jwtauth: unknown key")
	// ErrSignature means the signature does not verify.
	ErrSignature = errors.New("jwtauth: invalid signature")
	// ErrExpired means the token's "exp" is past (beyond the skew) or
	// missing.
	ErrExpired = errors.New("jwtauth: token expired")
	// ErrNotYetValid means the token's "nbf" or "iat" is in the future
	// beyond the skew.
	ErrNotYetValid = errors.New("jwtauth: token not yet valid")
	// ErrIssuer means the token's "iss" is not the configured issuer.
	ErrIssuer = errors.New("jwtauth: wrong issuer")
	// ErrAudience means none of the token's "aud" values is an accepted
	// audience.
	ErrAudience = errors.New("jwtauth: wrong audience")
	// ErrTokenType means the token is not an access token: its "typ"
	// header is not Options.RequireType, or it is an OpenID Connect ID
	// token.
	ErrTokenType = errors.New("jwtauth: not an access token")
	// ErrAuthorizedParty means the token's "azp" (or "client_id") is not
	// one of Options.AuthorizedParties.
	ErrAuthorizedParty = errors.New("jwtauth: client not authorized")
	// ErrUnavailable means the verifier could not reach a service it
	// needs to decide (a token introspection endpoint); the middleware
	// answers 503 instead of 401.
	ErrUnavailable = errors.New("jwtauth: verification unavailable")
	// ErrRevoked means Options.Revoked reported the token as revoked.
	ErrRevoked = errors.New("jwtauth: token revoked")
	// ErrNoKeys means the verifier has no usable key yet (a lazy start
	// whose fetches have all failed).
	ErrNoKeys = errors.New("jwtauth: no keys available")
	// ErrCertificateBinding means the token is bound to a client
	// certificate ("cnf" "x5t#S256", RFC 8705) and the request's TLS
	// connection did not present that certificate.
	ErrCertificateBinding = errors.New("jwtauth: token not bound to this client certificate")
	// ErrDPoPBinding means the token is bound to a DPoP key ("cnf"
	// "jkt", RFC 9449) and was presented without a valid proof of that
	// key: as a Bearer token, without a DPoP header, or with a proof by
	// another key; or a token presented with the DPoP scheme is not
	// DPoP-bound.
	ErrDPoPBinding = errors.New("jwtauth: token not bound to this DPoP key")
	// ErrDPoPProof means the DPoP proof is malformed, signed with an
	// algorithm not allowed, badly signed, for another method or URL,
	// outside the iat window, replayed, or for another access token.
	ErrDPoPProof = errors.New("jwtauth: invalid DPoP proof")
	// ErrForbidden means the token is valid but a Rule rejected it; the
	// middleware answers 403 insufficient_scope.
	ErrForbidden = errors.New("jwtauth: insufficient scope")
	// ErrConfig is wrapped by every configuration error New returns.
	ErrConfig = errors.New("jwtauth: invalid configuration")
	// ErrJWKS is wrapped by errors fetching or parsing a key set.
	ErrJWKS = errors.New("jwtauth: key set unavailable")
	// ErrClosed means the Verifier was closed.
	ErrClosed = errors.New("jwtauth: verifier closed")
)
