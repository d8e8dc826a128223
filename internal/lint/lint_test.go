package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// want matches the marker a fixture line carries for each finding expected
// on it: "// want rule rule ...".
var want = regexp.MustCompile(`// want ((?:[a-z]+ ?)+)$`)

// wants reads the markers of every .go file under root, as "file:line:
// rule" strings.
func wants(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		rel, _ := filepath.Rel(root, p)
		s := bufio.NewScanner(f)
		for n := 1; s.Scan(); n++ {
			if m := want.FindStringSubmatch(s.Text()); m != nil {
				for _, r := range strings.Fields(m[1]) {
					out = append(out, fmt.Sprintf("%s:%d: %s", filepath.ToSlash(rel), n, r))
				}
			}
		}
		return s.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

func keys(fs []finding) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = fmt.Sprintf("%s:%d: %s", f.File, f.Line, f.Rule)
	}
	slices.Sort(out)
	return out
}

// TestRules lints a tree of fixtures in which every line that breaks a rule
// says so, and every near miss (an errno compared in kabi's exempt raw
// call, a path built under /proc, a test naming a message) carries no
// marker. Each rule must find exactly its markers.
func TestRules(t *testing.T) {
	root := filepath.Join("testdata", "tree")
	fs, err := run(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, exp := keys(fs), wants(t, root)
	for _, g := range got {
		if !slices.Contains(exp, g) {
			t.Errorf("unexpected finding %s", g)
		}
	}
	for _, w := range exp {
		if !slices.Contains(got, w) {
			t.Errorf("missed %s", w)
		}
	}
	if t.Failed() {
		for _, f := range fs {
			t.Log(f)
		}
	}
	rules := map[string]bool{}
	for _, f := range fs {
		rules[f.Rule] = true
	}
	for _, r := range []string{"unsafe", "rawsyscall", "errcmp", "errtext", "notsupported", "procparse"} {
		if !rules[r] {
			t.Errorf("the fixtures exercise no %s finding", r)
		}
	}
}

// TestAllowlist: an entry hides its rule's findings in its file only, and
// an entry that hides nothing is itself a finding.
func TestAllowlist(t *testing.T) {
	fs := []finding{
		{File: "internal/restore/tree.go", Line: 104, Rule: "errcmp"},
		{File: "internal/restore/tree.go", Line: 110, Rule: "procparse"},
		{File: "internal/restore/mem.go", Line: 629, Rule: "errcmp"},
	}
	got := applyAllowlist(fs, []allowed{
		{Rule: "errcmp", File: "internal/restore/tree.go"},
		{Rule: "errcmp", File: "internal/restore/load.go"},
	})
	if len(got) != 3 || got[0].Line != 110 || got[1].File != "internal/restore/mem.go" ||
		got[2].File != "internal/restore/load.go" || !strings.Contains(got[2].Msg, "remove it") {
		t.Errorf("after the allowlist: %v", got)
	}
}

// TestRepoAllowlist checks that each entry of the real allowlist names a
// file that exists and a rule that exists, so that a typo cannot pass for
// an exemption until the next run notices it matches nothing.
func TestRepoAllowlist(t *testing.T) {
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	rules := []string{"unsafe", "rawsyscall", "errcmp", "errtext", "notsupported", "procparse"}
	for _, a := range allowlist {
		if !slices.Contains(rules, a.Rule) {
			t.Errorf("allowlist entry %v: no rule %q", a, a.Rule)
		}
		if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(a.File))); err != nil {
			t.Errorf("allowlist entry %v: %v", a, err)
		}
	}
}
