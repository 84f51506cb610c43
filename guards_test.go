package pylon

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
)

type recGuard struct {
	name   string
	refuse bool
	log    *[]string
}

func (g recGuard) Allow(*http.Request, *Target) (func(int, error), error) {
	if g.refuse {
		*g.log = append(*g.log, g.name+" refused")
		return nil, errors.New("refused")
	}
	*g.log = append(*g.log, g.name+" allowed")
	return func(status int, err error) {
		s := g.name + " done"
		if errors.Is(err, context.Canceled) {
			s += " (canceled)"
		}
		*g.log = append(*g.log, s)
	}, nil
}

func TestGuards(t *testing.T) {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	tests := []struct {
		name    string
		refuse  [3]bool
		wantErr bool
		want    []string
	}{
		{"all allow", [3]bool{}, false, []string{"a allowed", "b allowed", "c allowed", "c done", "b done", "a done"}},
		{"last refuses", [3]bool{false, false, true}, true, []string{"a allowed", "b allowed", "c refused", "b done (canceled)", "a done (canceled)"}},
		{"first refuses", [3]bool{true}, true, []string{"a refused"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var log []string
			g := Guards(recGuard{"a", tt.refuse[0], &log}, nil, recGuard{"b", tt.refuse[1], &log}, recGuard{"c", tt.refuse[2], &log})
			done, err := g.Allow(r, nil)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v", err)
			}
			if done != nil {
				done(200, nil)
			}
			if len(log) != len(tt.want) {
				t.Fatalf("log = %q, want %q", log, tt.want)
			}
			for i := range log {
				if log[i] != tt.want[i] {
					t.Fatalf("log = %q, want %q", log, tt.want)
				}
			}
		})
	}
	if Guards() != nil || Guards(nil) != nil {
		t.Error("Guards of nothing is not nil")
	}
}
