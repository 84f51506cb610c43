//go:build unix

package h1

import "syscall"

// peek looks, without blocking or consuming anything, at what an idle
// socket holds: nothing, data, or the end of the stream.
func (c *conn) peek() peekResult {
	if c.peekFn == nil {
		c.peekFn = func(fd uintptr) bool {
			n, _, err := syscall.Recvfrom(int(fd), c.peekBuf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			switch {
			case n > 0:
				c.peekRes = peekData
			case n == 0 && err == nil:
				c.peekRes = peekClosed
			case err == syscall.EAGAIN || err == syscall.EWOULDBLOCK:
				c.peekRes = peekNothing
			default:
				c.peekRes = peekFailed
			}
			return true // never wait for the socket to become readable
		}
	}
	c.peekRes = peekFailed
	if err := c.raw.Read(c.peekFn); err != nil {
		return peekFailed
	}
	return c.peekRes
}
