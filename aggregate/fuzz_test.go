package aggregate

import (
	"encoding/json"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"
)

// FuzzShape checks that shaping any valid JSON with any paths gives valid
// JSON, and that without shaping it gives the same value, compacted.
func FuzzShape(f *testing.F) {
	f.Add(`{"a":{"b":[{"c":1,"d":"x\"y"}]},"e":[1,2]}`, "a.b.c", "e", "a.b.d")
	f.Add(` [ {"a" : 1} , {"a\u0062":"}]"} ] `, "a", "ab", "a")
	f.Add(`"str"`, "x", "", "y")
	f.Add(`{"x":{"y":{"z":null}},"w":true}`, "x.y", "x.y.z", "w")
	f.Fuzz(func(t *testing.T, doc, allow, deny, rename string) {
		b := []byte(doc)
		if !json.Valid(b) {
			return
		}
		var want any
		if err := json.Unmarshal(b, &want); err != nil {
			t.Fatal(err)
		}
		i := skipSpace(b, 0)
		v := b[i:valueEnd(b, i)]
		plain := shape(nil, v, nil)
		var got any
		if err := json.Unmarshal(plain, &got); err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("compact %s of %s: %v", plain, doc, err)
		}
		var allows, denies []string
		if allow != "" {
			allows = []string{allow}
		}
		if deny != "" {
			denies = []string{deny}
		}
		var renames [][2]string
		if rename != "" {
			renames = [][2]string{{rename, "renamed"}}
		}
		n, err := buildShape(allows, denies, renames)
		if err != nil {
			return
		}
		out := shape(nil, v, n)
		if !json.Valid(out) {
			t.Fatalf("shape(%s) = %s: invalid JSON", doc, out)
		}
	})
}

// FuzzFill checks that no wildcard or query value can change the path's
// segments or add query parameters.
func FuzzFill(f *testing.F) {
	f.Add("42", "1")
	f.Add("../admin", "a&b=c")
	f.Add("a%2Fb", "x#y")
	f.Add("?q=1", "%00")
	tmpl, err := parseTemplate("/items/{id}/detail?order={id}&page={?page}", false, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, id, page string) {
		r := httptest.NewRequest("GET", "/", nil)
		r.URL.RawQuery = url.Values{"page": {page}}.Encode()
		r.SetPathValue("id", id)
		s, _, err := tmpl.fill(r, nil)
		if err != nil {
			if safeSegment(id) {
				t.Fatalf("fill(%q) failed: %v", id, err)
			}
			return
		}
		u, err := url.ParseRequestURI(s)
		if err != nil {
			t.Fatalf("fill(%q) = %q: %v", id, s, err)
		}
		segs := strings.Split(u.EscapedPath(), "/")
		if len(segs) != 4 || segs[1] != "items" || segs[3] != "detail" {
			t.Fatalf("fill(%q) = %q: segments %q", id, s, segs)
		}
		if u.Path != "/items/"+id+"/detail" {
			t.Fatalf("fill(%q) path %q", id, u.Path)
		}
		q, err := url.ParseQuery(u.RawQuery)
		if err != nil || len(q) != 2 || q.Get("order") != id || q.Get("page") != page || u.Fragment != "" {
			t.Fatalf("fill(%q, %q) = %q: query %v %v", id, page, s, q, err)
		}
	})
}
