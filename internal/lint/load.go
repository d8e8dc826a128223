package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// pkg is the files of one directory. Test and non-test files are kept
// together: the rules look at each file's name to tell them apart.
type pkg struct {
	Dir   string // slash-separated, relative to the root; "." for the root
	Fset  *token.FileSet
	Files []*file
}

type file struct {
	Path    string // slash-separated, relative to the root
	AST     *ast.File
	Imports map[string]string // local name → import path
}

func (f *file) isTest() bool { return strings.HasSuffix(f.Path, "_test.go") }

// isUnsafeFile: the file's name marks it as one that handles pointers as
// integers (STYLE.md habit 8).
func (f *file) isUnsafeFile() bool {
	return strings.HasSuffix(f.Path, "_unsafe.go") || strings.HasSuffix(f.Path, "_unsafe_test.go")
}

func (f *file) under(dir string) bool { return strings.HasPrefix(f.Path, dir+"/") }

// isProduction: code that ships in the cryo binary. Tests, the benchmarks
// and the test targets are not.
func (f *file) isProduction() bool {
	return !f.isTest() && (f.under("internal") || f.under("cmd"))
}

// load parses every .go file under root, one pkg per directory, in a
// stable order.
func load(root string) ([]*pkg, error) {
	fset := token.NewFileSet()
	byDir := map[string]*pkg{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != root && skipDir(d.Name()) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(p, ".go") {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		// Comments are not needed by any rule; skipping them halves the
		// parse time.
		af, err := parser.ParseFile(fset, p, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		dir := path.Dir(rel)
		pk := byDir[dir]
		if pk == nil {
			pk = &pkg{Dir: dir, Fset: fset}
			byDir[dir] = pk
		}
		pk.Files = append(pk.Files, &file{Path: rel, AST: af, Imports: importNames(af)})
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]*pkg, 0, len(byDir))
	for _, pk := range byDir {
		out = append(out, pk)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Dir < out[j].Dir })
	return out, nil
}

// importNames maps the name each import is known by in f to its path.
// Without type information that is the explicit name, or the last element
// of the path (skipping a major-version suffix); blank and dot imports
// give no name.
func importNames(f *ast.File) map[string]string {
	m := map[string]string{}
	for _, is := range f.Imports {
		p, err := strconv.Unquote(is.Path.Value)
		if err != nil {
			continue
		}
		name := ""
		if is.Name != nil {
			name = is.Name.Name
		} else {
			elems := strings.Split(p, "/")
			name = elems[len(elems)-1]
			if len(elems) > 1 && isMajorVersion(name) {
				name = elems[len(elems)-2]
			}
			name = strings.TrimPrefix(name, "go-")
		}
		if name == "_" || name == "." {
			continue
		}
		m[name] = p
	}
	return m
}

func isMajorVersion(s string) bool {
	if len(s) < 2 || s[0] != 'v' {
		return false
	}
	_, err := strconv.Atoi(s[1:])
	return err == nil
}

// pkgFunc reports whether e is pkgname.Name for an import of path in f, and
// returns Name.
func (f *file) pkgFunc(e ast.Expr, paths ...string) (string, bool) {
	sel, ok := e.(*ast.SelectorExpr)
	if !ok {
		return "", false
	}
	x, ok := sel.X.(*ast.Ident)
	if !ok {
		return "", false
	}
	p, ok := f.Imports[x.Name]
	if !ok {
		return "", false
	}
	for _, want := range paths {
		if p == want {
			return sel.Sel.Name, true
		}
	}
	return "", false
}
