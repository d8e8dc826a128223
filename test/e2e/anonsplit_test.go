package e2e

import (
	"path/filepath"
	"testing"
)

// TestAnonVMAsKeptApart: adjacent private anonymous VMAs with the same
// protection, flags and advice, which the kernel keeps apart because each
// has its own anon_vma (test/targets/anonsplit.c; a JVM is full of them),
// come back as separate VMAs, one of them with no pages; the harness
// compares /proc/PID/maps too; twice.
func TestAnonVMAsKeptApart(t *testing.T) {
	requireCryo(t)
	tg := startTarget(t, "anonsplit")
	img := filepath.Join(t.TempDir(), "img")
	mustDump(t, tg.pid, img)
	tg.expectKilled()
	reapOrphans(t)
	restoreDetached(t, tg, img)
	res, img2 := cycleAgain(t, tg)
	if res.timedOut {
		t.Fatalf("anonsplit after two checkpoints: %v\n%s", res, readLog(img2+".restore.log"))
	}
	tg.expectPassed(res.code, "after two checkpoints")
}
