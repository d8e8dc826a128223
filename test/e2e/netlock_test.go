package e2e

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cryo-project/cryo/internal/errs"
	"github.com/cryo-project/cryo/internal/netlock"
)

// staleLock makes the table a dump leaves when it is killed before it
// keeps its lock: named for a process that is gone (a pid nothing runs as)
// and without a record. The nft binary stands in for the dead cryo.
func staleLock(t *testing.T, n int) string {
	t.Helper()
	nft, err := exec.LookPath("nft")
	if err != nil {
		t.Fatalf("no nft binary (make deps installs nftables): %v", err)
	}
	pid := 0
	for p := 4000000; p > 300; p -= 7919 {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", p)); errors.Is(err, os.ErrNotExist) {
			pid = p
			break
		}
	}
	name := fmt.Sprintf("cryo-lock-%d-1-%d", pid, n)
	if out, err := exec.Command(nft, "add", "table", "inet", name).CombinedOutput(); err != nil {
		t.Fatalf("nft add table: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command(nft, "delete", "table", "inet", name).Run() })
	return name
}

func lockNames(t *testing.T) []string {
	t.Helper()
	ts, err := netlock.Tables()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, tb := range ts {
		out = append(out, tb.Name)
	}
	return out
}

// TestNetlockSweep: `cryo check` says nftables locks work here and lists
// the locks found, kept and stale; every `cryo dump` and `cryo restore`
// first removes the stale ones and leaves the kept one, which waits for its
// own restore.
func TestNetlockSweep(t *testing.T) {
	requireCryo(t)
	if _, err := netlock.Probe(); errors.Is(err, errs.ErrNotSupported) {
		t.Skipf("no nf_tables: %v", err)
	} else if err != nil {
		t.Fatal(err)
	}
	keptImages := t.TempDir()
	kept, err := netlock.Take(netlock.NFTables, keptImages, []netlock.Conn{{
		Local:  netip.MustParseAddrPort("198.51.100.7:40000"),
		Remote: netip.MustParseAddrPort("198.51.100.8:443"),
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer kept.Release()
	if err := kept.Keep(); err != nil {
		t.Fatal(err)
	}
	stale := staleLock(t, 1)

	r := runCryo(t, exitTimeout, "check")
	if r.code != 0 {
		t.Fatalf("cryo check: %v", r)
	}
	for _, want := range []string{"nftables_lock", kept.Name() + "  kept", "images " + keptImages, stale + "  stale"} {
		if !strings.Contains(r.output, want) {
			t.Errorf("cryo check does not say %q:\n%s", want, r.output)
		}
	}
	if r := runCryo(t, exitTimeout, "check", "--feature", "nftables_lock"); r.code != 0 {
		t.Errorf("cryo check --feature nftables_lock: %v", r)
	}

	tg := startTarget(t, "counter")
	img := filepath.Join(tg.dir, "img")
	mustDump(t, tg.pid, img)
	tg.expectKilled()
	if n := lockNames(t); slices.Contains(n, stale) || !slices.Contains(n, kept.Name()) {
		t.Errorf("after cryo dump the locks are %v; want %s swept and %s kept", n, stale, kept.Name())
	}
	// Another test binary's Sweep (go test runs packages side by side)
	// may have removed it first: the dump's log says it swept, and names
	// the lock when it was the one.
	if log := readLog(img + ".dump.log"); !strings.Contains(log, "stale network locks swept") {
		t.Errorf("the dump's log does not say it swept the network locks:%s", log)
	}

	stale2 := staleLock(t, 2)
	restoreDetached(t, tg, img)
	if n := lockNames(t); slices.Contains(n, stale2) || !slices.Contains(n, kept.Name()) {
		t.Errorf("after cryo restore the locks are %v; want %s swept and %s kept", n, stale2, kept.Name())
	}
	if log := readLog(img + ".restore.log"); !strings.Contains(log, "stale network locks swept") {
		t.Errorf("the restore's log does not say it swept the network locks:%s", log)
	}
	if err := netlock.Remove(kept.Name()); err != nil {
		t.Fatal(err)
	}
}
