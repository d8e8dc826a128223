package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestTaskAttrs: threads with a scheduling policy (SCHED_BATCH with a time
// slice and reset-on-fork, SCHED_FIFO keeping a nice value, SCHED_IDLE,
// SCHED_RR), CPU affinity, I/O priority, timer slack and default slack,
// machine-check kill policy and a name each, and a child that has a
// parent-death signal, is not dumpable, denies write+execute memory, has
// THP disabled and holds membarrier registrations (test/targets/attrs.c):
// after two checkpoints every thread finds its own state with the getters,
// and /proc shows the same of every thread before and after.
func TestTaskAttrs(t *testing.T) {
	requireCryo(t)
	tg := startTarget(t, "attrs")
	before := snapshotTree(t, tg.pid)
	img := filepath.Join(t.TempDir(), "img")
	mustDump(t, tg.pid, img)
	tg.expectKilled()
	reapOrphans(t)
	restoreDetached(t, tg, img)
	compareSnapshots(t, "after restore", before, snapshotTree(t, tg.pid))
	res, img2 := cycleAgain(t, tg)
	if res.timedOut || res.code != 0 {
		t.Fatalf("attrs after two checkpoints: %v\n%s\n%s", res, tg.log(), readLog(img2+".restore.log"))
	}
	tg.expectPassed(0, "after two checkpoints")
}

// TestLoginuidCleared: a process without an audit login uid (the target
// clears its own) is restored by a cryo that has one (set by the shell
// that runs it): the restored process has none, and no session, as it was.
func TestLoginuidCleared(t *testing.T) {
	requireCryo(t)
	tg := startTarget(t, "attrs", "loginuid=4294967295")
	before := snapshotTree(t, tg.pid)
	img := filepath.Join(t.TempDir(), "img")
	mustDump(t, tg.pid, img)
	tg.expectKilled()
	reapOrphans(t)
	args := append([]string{"-c", `echo 0 > /proc/self/loginuid && exec "$0" "$@"`, cryoBin}, restoreArgs(img, "-d")...)
	out, err := exec.Command("/bin/sh", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("restore by a cryo with login uid 0: %v\n%s\n%s", err, out, readLog(img+".restore.log"))
	}
	t.Cleanup(func() { killRestored(t, tg.pid, tg.name) })
	compareSnapshots(t, "after restore", before, snapshotTree(t, tg.pid))
	tg.fire()
	ws, err := waitReaped(tg.pid, restoreTimeout)
	if err != nil {
		t.Fatalf("restored target: %v\n%s", err, tg.log())
	}
	tg.expectPassed(ws.ExitStatus(), "restored without its login uid")
}

// TestLoginuidRefused: a process that set its own audit login uid has a
// session of its own, which no restore can give (writing a login uid
// makes a new one): the restore is refused, naming it, before anything
// runs.
func TestLoginuidRefused(t *testing.T) {
	requireCryo(t)
	tg := startTarget(t, "attrs", "loginuid=1000")
	img := filepath.Join(t.TempDir(), "img")
	mustDump(t, tg.pid, img)
	tg.expectKilled()
	reapOrphans(t)
	r := runCryo(t, restoreTimeout, restoreArgs(img, "-d")...)
	if r.code == 0 || !strings.Contains(r.output, "audit login uid 1000") || !strings.Contains(r.output, "not supported") {
		t.Fatalf("restore of a process with a login uid of its own: want a refusal naming it, got %v", r)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", tg.pid)); err == nil {
		t.Fatalf("pid %d exists after the refused restore (%s)", tg.pid, readCmdline(tg.pid))
	}
}

// TestRootPdeathsig: the root has a parent-death signal. cryo restore -d
// would be its parent and exit at once, which sends it the signal: refused,
// naming it. Restored in the foreground, cryo stays its parent, and the
// root finds its parent-death signal set.
func TestRootPdeathsig(t *testing.T) {
	requireCryo(t)
	tg := startTarget(t, "attrs", "root-pdeath")
	img := filepath.Join(t.TempDir(), "img")
	mustDump(t, tg.pid, img)
	tg.expectKilled()
	reapOrphans(t)
	r := runCryo(t, restoreTimeout, restoreArgs(img, "-d")...)
	if r.code == 0 || !strings.Contains(r.output, "parent-death signal") {
		t.Fatalf("restore -d of a root with a parent-death signal: want a refusal naming it, got %v", r)
	}
	cp := startCryo(t, restoreArgs(img)...)
	t.Cleanup(func() { killRestored(t, tg.pid, tg.name) })
	time.Sleep(300 * time.Millisecond)
	tg.fire()
	res := cp.wait(restoreTimeout)
	if res.timedOut || res.code != 0 {
		t.Fatalf("restore in the foreground: %v\n%s\n%s", res, tg.log(), readLog(img+".restore.log"))
	}
	tg.expectPassed(0, "restored in the foreground")
}
