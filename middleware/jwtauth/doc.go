// Package jwtauth authenticates requests with JSON Web Tokens and authorizes
// them with rules on their claims.
//
// A [Verifier] checks compact JWS tokens against keys from a remote JWKS URL
// (optionally found through OpenID Connect discovery), a local JWKS document
// or static keys. It checks the issuer, the audience, the expiry, "nbf" and
// "iat" with a clock skew, and accepts only the algorithms listed in
// [Options.Algorithms]. The key is chosen by the token's "kid" from the
// configured set only: "jku", "x5u" and embedded "jwk" headers are never
// followed. A key's own "alg" must equal the token's, and a key of one type
// (RSA, EC, OKP, oct) is never used with another type's algorithm, so an
// RSA public key can never serve as an HMAC secret. A token without "kid"
// is tried against at most four keys that fit its algorithm.
//
// A remote key set is fetched at start, refreshed in the background within
// [Options.MinRefreshInterval] and [Options.MaxRefreshInterval] following the
// server's cache headers, refetched at once when a token names an unknown
// "kid" (at most once per [Options.UnknownKeyCooldown], one fetch for all
// waiting requests), and the last good set is kept when a refresh fails or
// returns garbage. The start-up and background fetches do not count
// against the cooldown, and after any refetch attempt the verifier looks at
// the current set again, so a rotation is never refused because another
// request's fetch got there first. Keys that cannot be used (an unknown
// "kty" such as "AKP", an RSA key without "e") are skipped and logged once,
// and the rest of the set is used (RFC 7517 §5). A discovery document is
// read again at every fetch, so a changed "jwks_uri" is followed.
// [Verifier.Close] stops the background refresh.
//
// Algorithms are named as in RFC 7518, plus RFC 9864's fully-specified
// "Ed25519" (the same signature as "EdDSA" over an Ed25519 key, accepted
// only when listed). Ed448 keys are not supported.
//
// Verified tokens are kept in a bounded cache until they expire, so a token
// seen again costs a hash and a map lookup instead of a signature check.
//
// [NewMulti] puts several Verifiers, one per issuer, behind one middleware:
// the token's "iss" is read before verification only to choose, and the
// chosen Verifier checks it. [Options.RequireType] ("at+jwt", RFC 9068),
// [Options.AuthorizedParties] ("azp" or "client_id") and the refusal of ID
// tokens (unless [Options.AllowIDTokens]) keep tokens meant for something
// else out.
//
// [Require] turns a Verifier (or any [TokenVerifier], such as the
// introspect package's for opaque tokens) into a middleware: it takes the token from
// "Authorization: Bearer" (and optionally a cookie or header), applies the
// rules ([Rule]: scopes, roles, predicates), stores the [Claims] in the request
// context ([FromContext]) and the subject in pylon's RequestInfo, and
// forwards chosen claims as headers. Failures answer 401 or 403 with a
// WWW-Authenticate header as RFC 6750 describes and a problem+json body that
// tells an attacker nothing; the reason is logged.
//
// Tokens bound to their holder are enforced whatever the verifier: a
// "cnf" with "x5t#S256" (RFC 8705) must be the SHA-256 thumbprint of the
// TLS client certificate of the request (see pylon.ClientCertTLS and the
// mtls package), and a "cnf" with "jkt" (RFC 9449) needs the scheme DPoP
// and a valid proof of that key, checked by a [DPoP] set in
// [RequireOptions.DPoP]: "typ" dpop+jwt, an allowed asymmetric "alg", a
// public "jwk" that verifies the signature and whose RFC 7638 thumbprint
// is the "jkt", "htm" and "htu" of this request, "iat" within the window,
// a "jti" not seen before (a bounded replay cache), and "ath", the hash
// of the access token. A bound token presented otherwise gets 401
// invalid_token.
package jwtauth
