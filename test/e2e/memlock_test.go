package e2e

import (
	"path/filepath"
	"testing"
)

// TestMlockAll: mlockall(MCL_CURRENT|MCL_FUTURE) comes back whole: every VMA
// locked and resident, VmLck the same, and a mapping made after the restore
// locked too. (The mlock target's default mode, every other way to lock,
// runs in crTargets.)
func TestMlockAll(t *testing.T) {
	requireCryo(t)
	tg := startTarget(t, "mlock", "all")
	img := filepath.Join(tg.dir, "img")
	mustDump(t, tg.pid, img)
	tg.expectKilled()
	restoreAndVerify(t, tg, img)
	checkTargetLog(t, tg)
}
