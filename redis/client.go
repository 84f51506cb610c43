package pylonredis

import "github.com/redis/go-redis/v9"

// checkClient refuses a nil client, and a client that ignores context
// deadlines (see ErrContextTimeoutDisabled). Clients of other types (a
// caller's wrapper) are taken as they are.
func checkClient(c any) error {
	var on bool
	switch c := c.(type) {
	case nil:
		return errNilClient
	case *redis.Client:
		if c == nil {
			return errNilClient
		}
		on = c.Options().ContextTimeoutEnabled
	case *redis.ClusterClient:
		if c == nil {
			return errNilClient
		}
		on = c.Options().ContextTimeoutEnabled
	case *redis.Ring:
		if c == nil {
			return errNilClient
		}
		on = c.Options().ContextTimeoutEnabled
	default:
		return nil
	}
	if !on {
		return ErrContextTimeoutDisabled
	}
	return nil
}
