package breaker

import (
	"github.com/sony/gobreaker/v2"
)

// sharedAllow admits a request through the shared state in one short
// critical section (as an outcome that is not counted), and records its
// outcome in a second, rather than holding the store's lock for the whole
// request as DistributedCircuitBreaker.Execute would. The price: the
// half-open probe cap is approximate across processes, since a probe holds
// no place between the two steps.
func (b *Breaker) sharedAllow() (func(error), error) {
	b.dmu.Lock()
	_, err := b.dcb.Execute(func() (struct{}, error) { return struct{}{}, errAdmit })
	b.dmu.Unlock()
	switch {
	case err == errAdmit:
		return b.sharedDone, nil
	case err == gobreaker.ErrOpenState:
		b.state.Store(int32(StateOpen))
		return nil, err
	case err == gobreaker.ErrTooManyRequests:
		b.state.Store(int32(StateHalfOpen))
		return nil, err
	default: // the store failed: fail open
		b.logStoreError(err)
		return noopDone, nil
	}
}

func (b *Breaker) sharedDone(o error) {
	b.dmu.Lock()
	_, err := b.dcb.Execute(func() (struct{}, error) { return struct{}{}, o })
	b.dmu.Unlock()
	if err != nil && err != o && !isRefusal(err) {
		b.logStoreError(err)
	}
}

// lockFirst puts a breaker's reads of the shared state under the store's
// lock. DistributedCircuitBreaker.Execute (v2.4.0) reads the state, then
// locks, then writes what it computed from that read: between the read and
// the lock another process may have written (tripped the breaker), and the
// write would undo it. lockFirst takes the lock in GetData instead, and
// makes the Lock that follows a no-op.
//
// Each breaker has its own lockFirst, used under the breaker's dmu, so it
// needs no lock of its own.
type lockFirst struct {
	store gobreaker.SharedDataStore
	mutex string // gobreaker's lock name for this breaker
	held  bool   // we hold the store's lock
	early bool   // taken by GetData rather than Lock
}

func (l *lockFirst) Lock(name string) error {
	if l.held && name == l.mutex {
		return nil
	}
	if err := l.store.Lock(name); err != nil {
		return err
	}
	l.held = name == l.mutex
	return nil
}

func (l *lockFirst) Unlock(name string) error {
	if name == l.mutex {
		l.held, l.early = false, false
	}
	return l.store.Unlock(name)
}

func (l *lockFirst) GetData(name string) ([]byte, error) {
	if !l.held {
		if err := l.store.Lock(l.mutex); err != nil {
			return nil, err
		}
		l.held, l.early = true, true
	}
	data, err := l.store.GetData(name)
	if (err != nil || len(data) == 0) && l.early {
		// Execute returns at once on a failed read, without unlocking.
		l.held, l.early = false, false
		_ = l.store.Unlock(l.mutex)
	}
	return data, err
}

func (l *lockFirst) SetData(name string, data []byte) error {
	return l.store.SetData(name, data)
}
