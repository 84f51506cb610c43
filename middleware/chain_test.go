package middleware_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/pylon-gateway/pylon/middleware"
)

var timeZero time.Time

// tag returns a middleware that appends name to the X-Order response header
// on the way in.
func tag(name string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Add("X-Order", name)
			next.ServeHTTP(w, r)
		})
	}
}

func order(h http.Handler) string {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	return strings.Join(rec.Header().Values("X-Order"), ",")
}

func ExampleChain() {
	trace := func(name string) func(http.Handler) http.Handler {
		return func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				fmt.Println("enter", name)
				next.ServeHTTP(w, r)
				fmt.Println("leave", name)
			})
		}
	}
	chain := middleware.New(trace("m1"), trace("m2"))
	h := chain.ThenFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Println("handler") })
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	// Output:
	// enter m1
	// enter m2
	// handler
	// leave m2
	// leave m1
}

func TestChainIsImmutable(t *testing.T) {
	base := middleware.New(tag("a"), tag("b"))
	x := base.Append(tag("x"))
	y := base.Append(tag("y"))
	ext := x.Extend(middleware.New(tag("z")))
	tests := []struct {
		name  string
		chain middleware.Chain
		want  string
	}{
		{"base", base, "a,b"},
		{"append x", x, "a,b,x"},
		{"append y does not change x", y, "a,b,y"},
		{"extend", ext, "a,b,x,z"},
		{"empty", middleware.New(), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := order(tt.chain.Then(ok)); got != tt.want {
				t.Errorf("order %q, want %q", got, tt.want)
			}
		})
	}
	if base.Len() != 2 || ext.Len() != 4 {
		t.Errorf("Len base %d ext %d, want 2 and 4", base.Len(), ext.Len())
	}
}

func TestChainRejectsNil(t *testing.T) {
	tests := map[string]func(){
		"nil middleware": func() { middleware.New(nil) },
		"nil append":     func() { middleware.New().Append(nil) },
		"nil handler":    func() { middleware.New().Then(nil) },
		"nil func":       func() { middleware.New().ThenFunc(nil) },
	}
	for name, f := range tests {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if v := recover(); v == nil || !strings.HasPrefix(fmt.Sprint(v), "middleware: ") {
					t.Errorf("panic %v, want a middleware: message", v)
				}
			}()
			f()
		})
	}
}
