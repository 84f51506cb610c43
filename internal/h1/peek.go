package h1

type peekResult int

const (
	peekNothing peekResult = iota // idle and open
	peekData                      // bytes are waiting
	peekClosed                    // the upstream closed its side
	peekFailed                    // the socket failed
)
