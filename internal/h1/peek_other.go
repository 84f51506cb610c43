//go:build !unix

package h1

// peek cannot look at a socket here; the retry rule for reused connections
// covers one the upstream closed.
func (c *conn) peek() peekResult { return peekNothing }
