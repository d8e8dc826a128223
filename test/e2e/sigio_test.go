package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestSigio: files whose readiness raises a signal, owned by the process
// (with F_SETSIG), by a thread, by the process group, and one whose owner
// was set under other uids, which the kernel then keeps from signalling
// the root-owned process, and a UDP socket's owner and signal set without
// O_ASYNC (test/targets/sigio.c). After each of two
// restores the process finds every owner, signal, owner uid and O_ASYNC
// as they were, and the writes raise exactly the signals they raised
// before: si_fd naming the file, SIGIO on the owner thread, nothing for
// the owner set as uid 65534.
func TestSigio(t *testing.T) {
	requireCryo(t)
	tg := startTarget(t, "sigio")
	img := filepath.Join(t.TempDir(), "img")
	mustDump(t, tg.pid, img)
	tg.expectKilled()
	reapOrphans(t)
	restoreDetached(t, tg, img)
	res, img2 := cycleAgain(t, tg)
	if res.timedOut {
		t.Fatalf("sigio after two checkpoints: %v\n%s", res, readLog(img2+".restore.log"))
	}
	tg.expectPassed(res.code, "after two checkpoints")
}

// TestSigioOwnerOutside: a file whose SIGIO goes to a process outside the
// tree (the target's parent, the test) cannot come back pointing at the
// same process: the dump refuses it, naming the fd and the owner, and the
// target goes on unharmed.
func TestSigioOwnerOutside(t *testing.T) {
	requireCryo(t)
	tg := startTarget(t, "sigio", "outside")
	m := regexp.MustCompile(`OUTSIDE fd=(\d+) owner=(\d+)`).FindStringSubmatch(tg.log())
	if m == nil {
		t.Fatalf("the target did not report its fd:\n%s", tg.log())
	}
	img := filepath.Join(tg.dir, "img")
	r := dump(t, tg.pid, img)
	want := fmt.Sprintf("its SIGIO goes to process %s, outside the dumped tree", m[2])
	if r.timedOut || r.code == 0 || !strings.Contains(r.output, "fd "+m[1]+" (socket:[") || !strings.Contains(r.output, want) || !strings.Contains(r.output, "not supported") {
		t.Fatalf("dump: want a refusal naming fd %s and %q, got %v", m[1], want, r)
	}
	if _, err := os.Stat(filepath.Join(img, "inventory.img")); err == nil {
		t.Errorf("a failed dump left %s/inventory.img", img)
	}
	tg.expectUnharmed("after the refused dump")
}
