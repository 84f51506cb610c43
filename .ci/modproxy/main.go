// Command modproxy writes a file-based Go module proxy (GOPROXY=file://DIR)
// holding every module of this repository at the committed revision, as a
// tag would publish it. CI builds a consumer module against it, outside the
// repository, to prove that `go get` resolves the root and the nested
// modules from their require lines alone.
//
// The version served is the one every nested module requires the root at;
// modproxy fails if they disagree, or if one still requires a placeholder
// version such as v0.0.0.
//
// Usage: modproxy -repo ROOT -out DIR [-rev HEAD]
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/module"
	modzip "golang.org/x/mod/zip"
)

func main() {
	repo := flag.String("repo", ".", "repository root")
	out := flag.String("out", "", "proxy directory to write")
	rev := flag.String("rev", "HEAD", "git revision to publish")
	flag.Parse()
	if *out == "" {
		log.Fatal("modproxy: -out is required")
	}
	version, mods, err := build(*repo, *out, *rev)
	if err != nil {
		log.Fatalf("modproxy: %v", err)
	}
	fmt.Println(version)
	for _, m := range mods {
		fmt.Fprintf(os.Stderr, "modproxy: %s@%s\n", m, version)
	}
}

type mod struct {
	path   string // module path
	subdir string // directory in the repository, "" for the root
	gomod  []byte // go.mod at the revision
}

func build(repo, out, rev string) (string, []string, error) {
	files, err := git(repo, "ls-tree", "-r", "--name-only", rev)
	if err != nil {
		return "", nil, err
	}
	var mods []mod
	for _, f := range strings.Split(strings.TrimSpace(string(files)), "\n") {
		if path.Base(f) != "go.mod" || strings.HasPrefix(f, ".") {
			continue
		}
		data, err := git(repo, "show", rev+":"+f)
		if err != nil {
			return "", nil, err
		}
		mf, err := modfile.ParseLax(f, data, nil)
		if err != nil {
			return "", nil, err
		}
		if mf.Module == nil {
			return "", nil, fmt.Errorf("%s: no module line", f)
		}
		sub := path.Dir(f)
		if sub == "." {
			sub = ""
		}
		mods = append(mods, mod{path: mf.Module.Mod.Path, subdir: sub, gomod: data})
	}
	sort.Slice(mods, func(i, j int) bool { return mods[i].path < mods[j].path })

	// The one version: what the nested modules require the repository's
	// modules at. Placeholders (v0.0.0, zero pseudo-versions) are refused:
	// a consumer cannot resolve them.
	ours := map[string]bool{}
	for _, m := range mods {
		ours[m.path] = true
	}
	version := ""
	for _, m := range mods {
		mf, _ := modfile.ParseLax(m.subdir+"/go.mod", m.gomod, nil)
		for _, r := range mf.Require {
			if !ours[r.Mod.Path] {
				continue
			}
			v := r.Mod.Version
			if v == "v0.0.0" || strings.HasPrefix(v, "v0.0.0-00010101000000") {
				return "", nil, fmt.Errorf("%s requires %s at placeholder %s", m.path, r.Mod.Path, v)
			}
			if version == "" {
				version = v
			} else if v != version {
				return "", nil, fmt.Errorf("%s requires %s@%s, others require %s", m.path, r.Mod.Path, v, version)
			}
		}
	}
	if version == "" {
		return "", nil, fmt.Errorf("no module requires another of this repository")
	}

	when, err := git(repo, "show", "-s", "--format=%cI", rev)
	if err != nil {
		return "", nil, err
	}
	t, err := time.Parse(time.RFC3339, strings.TrimSpace(string(when)))
	if err != nil {
		return "", nil, err
	}
	info, _ := json.Marshal(struct {
		Version string
		Time    time.Time
	}{version, t.UTC()})

	// The tree at the revision, as `git archive` gives it: what a tag
	// publishes, without untracked or ignored files.
	src, err := os.MkdirTemp("", "modproxy-src-")
	if err != nil {
		return "", nil, err
	}
	defer os.RemoveAll(src)
	archive := exec.Command("sh", "-c", `git archive --format=tar "$1" | tar -x -C "$2"`, "sh", rev, src)
	archive.Dir = repo
	if b, err := archive.CombinedOutput(); err != nil {
		return "", nil, fmt.Errorf("git archive: %v: %s", err, b)
	}

	var names []string
	for _, m := range mods {
		esc, err := module.EscapePath(m.path)
		if err != nil {
			return "", nil, err
		}
		dir := filepath.Join(out, filepath.FromSlash(esc), "@v")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", nil, err
		}
		var zb bytes.Buffer
		mv := module.Version{Path: m.path, Version: version}
		if err := modzip.CreateFromDir(&zb, mv, filepath.Join(src, filepath.FromSlash(m.subdir))); err != nil {
			return "", nil, fmt.Errorf("%s: %w", m.path, err)
		}
		for name, data := range map[string][]byte{
			"list":            []byte(version + "\n"),
			version + ".info": info,
			version + ".mod":  m.gomod,
			version + ".zip":  zb.Bytes(),
		} {
			if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
				return "", nil, err
			}
		}
		names = append(names, m.path)
	}
	return version, names, nil
}

func git(dir string, args ...string) ([]byte, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("git %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return b, nil
}
