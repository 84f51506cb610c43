package jwtauth

import "fmt"

// Rule is an authorization check on verified claims. A nil error admits the
// request; an error rejects it with 403 insufficient_scope. The error is
// logged, never sent to the client.
type Rule func(*Claims) error

// Scopes requires every one of the scopes (from "scope" or "scp").
func Scopes(scopes ...string) Rule {
	return func(c *Claims) error {
		for _, s := range scopes {
			if !c.HasScope(s) {
				return fmt.Errorf("%w: missing scope %q", ErrForbidden, s)
			}
		}
		return nil
	}
}

// AnyScope requires at least one of the scopes (from "scope" or "scp").
func AnyScope(scopes ...string) Rule {
	return func(c *Claims) error {
		for _, s := range scopes {
			if c.HasScope(s) {
				return nil
			}
		}
		return fmt.Errorf("%w: none of scopes %q", ErrForbidden, scopes)
	}
}

// Roles requires at least one of roles in the claim at path, a
// dot-separated path to an array of strings (or a space-separated string),
// such as "roles" or Keycloak's "realm_access.roles".
func Roles(path string, roles ...string) Rule {
	return func(c *Claims) error {
		for _, have := range c.Strings(path) {
			for _, want := range roles {
				if have == want {
					return nil
				}
			}
		}
		return fmt.Errorf("%w: none of roles %q at %q", ErrForbidden, roles, path)
	}
}

// AllRoles requires every one of roles in the claim at path (see Roles).
func AllRoles(path string, roles ...string) Rule {
	return func(c *Claims) error {
		have := c.Strings(path)
	next:
		for _, want := range roles {
			for _, h := range have {
				if h == want {
					continue next
				}
			}
			return fmt.Errorf("%w: missing role %q at %q", ErrForbidden, want, path)
		}
		return nil
	}
}

// Predicate admits the request when f returns true; reason is logged when
// it returns false.
func Predicate(reason string, f func(*Claims) bool) Rule {
	return func(c *Claims) error {
		if !f(c) {
			return fmt.Errorf("%w: %s", ErrForbidden, reason)
		}
		return nil
	}
}
