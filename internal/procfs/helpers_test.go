package procfs

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func eq[T any](t *testing.T, what string, got, want T) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s = %#v, want %#v", what, got, want)
	}
}

// wantParseError checks that err is a *ParseError at line/offset that
// matches ErrMalformed.
func wantParseError(t *testing.T, err error, file string, line int, off int64) *ParseError {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want a ParseError at %s:%d", file, line)
	}
	var pe *ParseError
	if !errors.As(err, &pe) {
		t.Fatalf("error %v (%T) is not a *ParseError", err, err)
	}
	if !errors.Is(err, ErrMalformed) {
		t.Errorf("errors.Is(%v, ErrMalformed) = false", err)
	}
	if pe.File != file || pe.Line != line || pe.Offset != off {
		t.Errorf("error at %s:%d offset %d, want %s:%d offset %d (%v)", pe.File, pe.Line, pe.Offset, file, line, off, err)
	}
	return pe
}

// seedFromTestdata adds every testdata file matching glob to f's corpus.
func seedFromTestdata(f *testing.F, glob string) {
	names, err := filepath.Glob(filepath.Join("testdata", glob))
	if err != nil || len(names) == 0 {
		f.Fatalf("no testdata for %s: %v", glob, err)
	}
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}
