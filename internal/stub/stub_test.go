package stub

import (
	"bytes"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The generated file must be an ELF the standard library reads, and the
// kernel must load it at the chosen address and run it (it just pauses).
func TestBuildRuns(t *testing.T) {
	const base = 0x20000
	b, err := Build(base)
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if f.Entry != base+codeOff || len(f.Progs) != 1 || f.Progs[0].Vaddr != base {
		t.Fatalf("entry %#x progs %v", f.Entry, f.Progs)
	}
	p := filepath.Join(t.TempDir(), "stub")
	if err := os.WriteFile(p, b, 0o700); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(p)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	time.Sleep(50 * time.Millisecond)
	maps, err := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/maps")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(maps), "00020000-00021000 r-xp") {
		t.Fatalf("stub not loaded at %#x:\n%s", base, maps)
	}
}

func TestBuildRejectsBadBase(t *testing.T) {
	for _, b := range []uint64{0, 0x1000, 0x20001} {
		if _, err := Build(b); err == nil {
			t.Errorf("Build(%#x) accepted", b)
		}
	}
}
