package aggregate

import (
	"strings"
	"testing"
)

func TestLookup(t *testing.T) {
	doc := []byte(` {"a": {"b\u0063": [ {"d": 1}, {"d": "x\"y"} ], "n": null}, "s": "v", "arr": [[1, 2], [3]]} `)
	tests := []struct {
		path string
		want string
		ok   bool
	}{
		{"", `{"a": {"b\u0063": [ {"d": 1}, {"d": "x\"y"} ], "n": null}, "s": "v", "arr": [[1, 2], [3]]}`, true},
		{"s", `"v"`, true},
		{"a.bc.0.d", `1`, true},
		{"a.bc.1.d", `"x\"y"`, true},
		{"a.bc.2.d", "", false},
		{"a.bc.-1", "", false},
		{"a.bc.x", "", false},
		{"a.n", `null`, true},
		{"a.n.x", "", false},
		{"arr.1.0", `3`, true},
		{"arr.1.1", "", false},
		{"missing", "", false},
		{"s.x", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			var fields []string
			if tt.path != "" {
				fields = strings.Split(tt.path, ".")
			}
			s, e, ok := lookup(doc, 0, fields)
			if ok != tt.ok || (ok && string(doc[s:e]) != tt.want) {
				t.Fatalf("lookup(%q) = %q, %v", tt.path, doc[s:e], ok)
			}
		})
	}
}

func TestScalar(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{`"abc"`, "abc", true},
		{`"a\/b\u00e9"`, "a/bé", true},
		{`42`, "42", true},
		{`-1.5e3`, "-1.5e3", true},
		{`true`, "true", true},
		{`null`, "", false},
		{`{}`, "", false},
		{`[1]`, "", false},
	}
	for _, tt := range tests {
		got, ok := scalar([]byte(tt.in))
		if got != tt.want || ok != tt.ok {
			t.Errorf("scalar(%s) = %q, %v", tt.in, got, ok)
		}
	}
}

func TestAppendCompact(t *testing.T) {
	in := " { \"a b\" : [ 1 , \"x \\\" y\" ] ,\n\t\"c\":{ } } "
	got := string(appendCompact(nil, []byte(strings.TrimSpace(in))))
	if want := `{"a b":[1,"x \" y"],"c":{}}`; got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}
