// Command lint enforces the rules of cryo's code that go vet and
// staticcheck do not know (STYLE.md habits 3, 5 and 8). `make lint` runs it
// from the top of the repository:
//
//	go run ./internal/lint [DIR]
//
// It parses every .go file under DIR (default: the module root above the
// working directory) with go/parser alone, with no type checking and no
// network, and prints one line per offence, "file:line:col: rule: why".
// It exits 1 if there is any offence, or if an entry of the allowlist
// (allow.go) no longer matches one, so that the list only ever shrinks.
//
// # Rules
//
//   - unsafe: package unsafe is imported only by internal/kabi, the one
//     package that lays out kernel structs, and by files named *_unsafe.go
//     or *_unsafe_test.go, so that every conversion between pointers and
//     integers sits in a file a reviewer knows to read twice.
//   - rawsyscall: syscall.Syscall, unix.Syscall, their 6-argument and Raw
//     forms, and the NoError variants are called only in internal/kabi
//     (and in *_unsafe_test.go, where a test stands in for the kernel side
//     and must issue arbitrary syscall numbers). Everywhere else a kabi or
//     x/sys/unix wrapper says what the arguments are.
//   - errcmp: no == or != against an error value (a sentinel such as io.EOF
//     or ErrNotSupported, an errno such as unix.EINTR), no switch whose cases
//     are error values, and no type assertion on an error variable: each of
//     them stops matching as soon as someone wraps the error with %w.
//     errors.Is and errors.As keep matching.
//   - errtext: production code never decides by the text of an error
//     (strings.Contains(err.Error(), ...), err.Error() == "...", a regexp
//     over it). Messages are for people and change; sentinels and typed
//     errors are the contract.
//   - notsupported: only internal/errs defines "not supported". An
//     errors.New or fmt.Errorf whose text says "not supported" or
//     "unsupported" must wrap ErrNotSupported instead, so that one
//     errors.Is(err, errs.ErrNotSupported) finds every such refusal.
//   - procparse: text read from /proc is parsed only in internal/procfs,
//     whose parsers are bounded, golden-tested and fuzzed. A heuristic: a
//     production function outside procfs that calls a splitting or
//     scanning function (strings.Fields, Split, Cut, fmt.Sscanf,
//     bufio.NewScanner, ...) and either names a "/proc" path itself or is
//     called by a function of its package that does. Building a path such
//     as "/proc/"+pid+"/fd" is not parsing and is not flagged.
package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

func main() {
	root := ""
	switch len(os.Args) {
	case 1:
		r, err := moduleRoot()
		if err != nil {
			fmt.Fprintln(os.Stderr, "lint:", err)
			os.Exit(2)
		}
		root = r
	case 2:
		root = os.Args[1]
	default:
		fmt.Fprintln(os.Stderr, "usage: lint [DIR]")
		os.Exit(2)
	}
	fs, err := run(root, allowlist)
	if err != nil {
		fmt.Fprintln(os.Stderr, "lint:", err)
		os.Exit(2)
	}
	if report(os.Stdout, fs) > 0 {
		os.Exit(1)
	}
}

// moduleRoot finds the directory of go.mod at or above the working
// directory, so that the tool works from any subdirectory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		up := filepath.Dir(dir)
		if up == dir {
			return "", fmt.Errorf("no go.mod above the working directory")
		}
		dir = up
	}
}

// A finding is one offence, or one allowlist entry that matched nothing.
type finding struct {
	File      string // slash-separated, relative to the root
	Line, Col int
	Rule      string
	Msg       string
}

func (f finding) String() string {
	return fmt.Sprintf("%s:%d:%d: %s: %s", f.File, f.Line, f.Col, f.Rule, f.Msg)
}

// run lints every .go file under root and applies allow.
func run(root string, allow []allowed) ([]finding, error) {
	pkgs, err := load(root)
	if err != nil {
		return nil, err
	}
	var all []finding
	for _, p := range pkgs {
		all = append(all, checkPackage(p)...)
	}
	return applyAllowlist(all, allow), nil
}

// applyAllowlist drops the findings an entry covers and adds one finding per
// entry that covered nothing: an entry outliving its offence would let the
// next one in unseen.
func applyAllowlist(fs []finding, allow []allowed) []finding {
	used := make([]bool, len(allow))
	var out []finding
	for _, f := range fs {
		ok := false
		for i, a := range allow {
			if a.Rule == f.Rule && a.File == f.File {
				used[i], ok = true, true
			}
		}
		if !ok {
			out = append(out, f)
		}
	}
	for i, a := range allow {
		if !used[i] {
			out = append(out, finding{File: a.File, Line: 1, Col: 1, Rule: a.Rule,
				Msg: "allowlist entry matches no offence any more: remove it from internal/lint/allow.go"})
		}
	}
	return out
}

// report prints fs in file order and returns how many there were.
func report(w io.Writer, fs []finding) int {
	sort.Slice(fs, func(i, j int) bool {
		a, b := fs[i], fs[j]
		if a.File != b.File {
			return a.File < b.File
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		if a.Col != b.Col {
			return a.Col < b.Col
		}
		return a.Rule < b.Rule
	})
	for _, f := range fs {
		fmt.Fprintln(w, f)
	}
	return len(fs)
}

// skipDir names directories that hold no code of the module's own: the go
// tool ignores testdata and names starting with "." or "_", and bin holds
// build output.
func skipDir(name string) bool {
	return name == "testdata" || name == "bin" || name == "vendor" ||
		strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_")
}
