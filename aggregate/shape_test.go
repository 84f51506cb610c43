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

// deepItems is {"name":"x","items":[…]} with arrays of arrays nested depth
// deep, n of them.
func deepItems(n, depth int) []byte {
	nest := strings.Repeat("[", depth) + strings.Repeat("]", depth)
	parts := make([]string, n)
	for i := range parts {
		parts[i] = nest
	}
	return []byte(`{"name":"x","items":[` + strings.Join(parts, ",") + `]}`)
}

func TestShapeScansDeepArraysOnce(t *testing.T) {
	doc := deepItems(50, maxDepth-2)
	n, err := buildShape([]string{"name", "items.sku"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var total int
	scanned = func(n int) { total += n }
	defer func() { scanned = nil }()
	out := shape(nil, doc, n)
	if string(out) != string(doc) {
		t.Fatalf("shape changed a document with nothing to drop: %.80s…", out)
	}
	// Linear work: no byte is rescanned once per level it is nested in.
	if total > 2*len(doc) {
		t.Fatalf("shaping %d bytes scanned %d bytes of containers; want at most %d", len(doc), total, 2*len(doc))
	}
}

func TestDepthOK(t *testing.T) {
	for _, tt := range []struct {
		doc  string
		want bool
	}{
		{strings.Repeat("[", maxDepth) + strings.Repeat("]", maxDepth), true},
		{strings.Repeat("[", maxDepth+1) + strings.Repeat("]", maxDepth+1), false},
		{strings.Repeat(`{"a":`, maxDepth) + "1" + strings.Repeat("}", maxDepth), true},
		{strings.Repeat(`{"a":`, maxDepth) + "[]" + strings.Repeat("}", maxDepth), false},
		{`["` + strings.Repeat("[", 2*maxDepth) + `"]`, true},
		{`["\"` + strings.Repeat("{", 2*maxDepth) + `"]`, true},
		{"[" + strings.Repeat("[],", 2*maxDepth) + "[]]", true},
	} {
		if got := depthOK([]byte(tt.doc)); got != tt.want {
			t.Errorf("depthOK(%.40s…) = %v, want %v", tt.doc, got, tt.want)
		}
	}
}
