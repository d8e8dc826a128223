package procfs

import (
	"strings"
	"testing"
)

func TestParseChildrenShell(t *testing.T) {
	cs, err := ParseChildren(readTestdata(t, "shell.children"))
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "children", cs, []int{2034, 2035, 2036, 2037})
}

func TestParseChildrenEdges(t *testing.T) {
	cs, err := ParseChildren(nil)
	if err != nil || cs == nil || len(cs) != 0 {
		t.Errorf("empty: %#v, %v", cs, err)
	}
	cs, err = ParseChildren([]byte("1 2147483647"))
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "no trailing space", cs, []int{1, 2147483647})

	for _, c := range []struct {
		name, in string
		off      int64
	}{
		{"letters", "12 ab ", 3},
		{"zero", "0 ", 0},
		{"sign", "7 -1 ", 2},
		{"plus", "+7 ", 0},
		{"over an int", "12 2147483648 ", 3},
		{"newline", "12 13\n", 3},
		{"tab", "12\t13 ", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseChildren([]byte(c.in))
			pe := wantParseError(t, err, "children", 1, c.off)
			if !strings.Contains(pe.Error(), "bad pid") {
				t.Errorf("error %q does not say what is wrong", pe)
			}
		})
	}
}
