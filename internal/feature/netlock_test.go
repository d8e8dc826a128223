package feature

import (
	"bytes"
	"strings"
	"testing"

	"github.com/cryo-project/cryo/internal/netlock"
)

// TestLockLines: `cryo check` says of each network lock whether it is
// kept, stale or held, by whom and for which images.
func TestLockLines(t *testing.T) {
	s := &Summary{locksListed: true, Locks: []netlock.Table{
		{Name: "cryo-lock-10-5-1", ImagesDir: "/img/a", Kept: true, Pid: 10},
		{Name: "cryo-lock-11-6-1", ImagesDir: "/img/b", Stale: true, Pid: 11},
		{Name: "cryo-lock-12-7-2", Pid: 12},
	}}
	var b bytes.Buffer
	if err := WriteText(&b, s); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"cryo-lock-10-5-1  kept", "images /img/a",
		"cryo-lock-11-6-1  stale: its dump (pid 11)", "images /img/b",
		"cryo-lock-12-7-2  held by the dump running as pid 12  images -",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	b.Reset()
	if err := WriteText(&b, &Summary{locksListed: true}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "Network locks: none") {
		t.Errorf("no locks, yet:\n%s", b.String())
	}
}
