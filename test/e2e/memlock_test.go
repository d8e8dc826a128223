package e2e

import (
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
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

// TestNonRootMlock: an ordinary user's process with locked memory (the mlock
// target's every way to lock) is restored by that user with only
// cap_checkpoint_restore, within its RLIMIT_MEMLOCK. A restore whose
// RLIMIT_MEMLOCK cannot hold what was locked is refused before anything
// runs, naming the limit.
func TestNonRootMlock(t *testing.T) {
	env := setupNonRoot(t)
	if _, err := exec.LookPath("prlimit"); err != nil {
		t.Skip("no prlimit to lower RLIMIT_MEMLOCK with")
	}
	tg := env.startTarget(t, "mlock")
	img := filepath.Join(tg.dir, "img")
	sw := armState(t, img, "post-dump", tg.pid)
	dcp := env.startCryo(t, env.capped, "dump", "-t", strconv.Itoa(tg.pid), "-D", img, "-v4", "-o", img+".dump.log", "--action-script", stateHook)
	keepState(img, sw, dcp.done)
	r := dcp.wait(dumpTimeout)
	if r.code != 0 || r.timedOut {
		t.Fatalf("dump as %s: %v%s", nonrootUser, r, readLog(img+".dump.log"))
	}
	tg.expectKilled()

	// 64 KiB: less than the target locks (more than 200 KiB).
	r = env.cryo(t, "/usr/bin/prlimit", restoreTimeout, "--memlock=65536", env.capped, "restore", "-D", img, "-d")
	if r.code == 0 || !strings.Contains(r.output, "RLIMIT_MEMLOCK") || !strings.Contains(r.output, "locked") {
		t.Fatalf("restore with RLIMIT_MEMLOCK 64 KiB: want a refusal naming the limit, got %v", r)
	}
	if runsTarget(tg.pid, tg.name) {
		t.Fatalf("the refused restore left pid %d running", tg.pid)
	}
	env.restoreAndVerify(t, tg, img)
}
