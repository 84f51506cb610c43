package breaker

import (
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// memStore is a SharedDataStore in memory that checks its callers: state
// is read and written only under the lock.
type memStore struct {
	mu     sync.Mutex
	locked map[string]bool
	data   map[string][]byte
	fail   error // every call fails with it when set
	misuse []string
}

func newMemStore() *memStore {
	return &memStore{locked: map[string]bool{}, data: map[string][]byte{}}
}

func (m *memStore) Lock(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return m.fail
	}
	if m.locked[name] {
		return errors.New("held")
	}
	m.locked[name] = true
	return nil
}

func (m *memStore) Unlock(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.locked, name)
	return nil
}

func (m *memStore) held(state string) bool {
	return m.locked[strings.Replace(state, "gobreaker:state:", "gobreaker:mutex:", 1)]
}

func (m *memStore) GetData(name string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return nil, m.fail
	}
	if !m.held(name) {
		m.misuse = append(m.misuse, "read without the lock")
	}
	return m.data[name], nil
}

func (m *memStore) SetData(name string, data []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return m.fail
	}
	if !m.held(name) {
		m.misuse = append(m.misuse, "write without the lock")
	}
	m.data[name] = data
	return nil
}

func TestSharedState(t *testing.T) {
	store := newMemStore()
	s := Settings{Name: "orders", ConsecutiveFailures: 2, OpenDuration: 30 * time.Millisecond, Store: store}
	a, _ := newTest(t, s)
	b, _ := newTest(t, s)

	upA, upB := newUpstream(500), newUpstream(200)
	ha, hb := a.Middleware(upA), b.Middleware(upB)
	do(ha)
	do(ha)
	// b never saw a failure, yet refuses: the state is shared.
	w, info := do(hb)
	if w.Code != http.StatusServiceUnavailable || upB.hits.Load() != 0 || info.Breaker != "open" {
		t.Fatalf("second instance: %d, backend hits %d, %q", w.Code, upB.hits.Load(), info.Breaker)
	}
	if w.Header().Get("Retry-After") == "" {
		t.Fatal("no Retry-After")
	}

	// After the open period a probe through b closes it for a as well.
	eventually(t, "probe through b", func() bool {
		w, _ := do(hb)
		return w.Code == 200
	})
	upA.status.Store(200)
	if w, _ := do(ha); w.Code != 200 {
		t.Fatalf("first instance after recovery: %d", w.Code)
	}
	// Concurrent use from both instances keeps to the lock.
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() { do(ha) })
		wg.Go(func() { do(hb) })
	}
	wg.Wait()
	store.mu.Lock()
	defer store.mu.Unlock()
	if len(store.misuse) > 0 || len(store.locked) > 0 {
		t.Fatalf("store misuse %v, locks left %v", store.misuse, store.locked)
	}
}

func TestSharedStateStoreDownFailsOpen(t *testing.T) {
	store := newMemStore()
	b, _ := newTest(t, Settings{Name: "orders", ConsecutiveFailures: 1, Store: store})
	store.mu.Lock()
	store.fail = errors.New("connection refused")
	store.mu.Unlock()
	up := newUpstream(200)
	for range 3 {
		if w, _ := do(b.Middleware(up)); w.Code != 200 {
			t.Fatalf("store down: %d", w.Code)
		}
	}
	if up.hits.Load() != 3 {
		t.Fatal("requests were not let through")
	}
}

func TestSharedStatePerTarget(t *testing.T) {
	store := newMemStore()
	ups, urls := servers(t, 2)
	ups[0].status.Store(500)
	s := Settings{Name: "orders", ConsecutiveFailures: 1, Store: store, Logger: quiet}
	g1, g2 := MustPerTarget(s), MustPerTarget(s)
	be1, be2 := guardedBackend(t, g1, urls, 0), guardedBackend(t, g2, urls, 0)
	for range 2 {
		do(be1) // trips target 0 through gateway 1
	}
	for range 4 {
		if w, _ := do(be2); w.Code != 200 {
			t.Fatalf("gateway 2: %d", w.Code)
		}
	}
	if ups[0].hits.Load() != 1 {
		t.Fatalf("target 0 hit %d times, want once (gateway 2 sees it open)", ups[0].hits.Load())
	}
}
