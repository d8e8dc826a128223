package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestZombieSessions: zombies with a session and a group of their own
// (test/targets/zombies.c) come back as zombies in them, with their
// statuses, after two checkpoints; /proc shows the same of each before
// and after.
func TestZombieSessions(t *testing.T) {
	requireCryo(t)
	tg := startTarget(t, "zombies")
	before := snapshotTree(t, tg.pid)
	img := filepath.Join(t.TempDir(), "img")
	mustDump(t, tg.pid, img)
	tg.expectKilled()
	reapOrphans(t)
	restoreDetached(t, tg, img)
	compareSnapshots(t, "after restore", before, snapshotTree(t, tg.pid))
	res, img2 := cycleAgain(t, tg)
	if res.timedOut || res.code != 0 {
		t.Fatalf("zombies after two checkpoints: %v\n%s\n%s", res, tg.log(), readLog(img2+".restore.log"))
	}
	tg.expectPassed(0, "after two checkpoints")
}

// TestZombieParentKilledMidRestore: the parent of three zombies is killed
// while the restore holds the whole tree, stopped (here at post-restore,
// by an action script): the restore must fail, saying so, and leave no
// process of the tree, zombie or not.
func TestZombieParentKilledMidRestore(t *testing.T) {
	requireCryo(t)
	tg := startTarget(t, "zombies")
	parent := tg.kids["parent"]
	img := filepath.Join(t.TempDir(), "img")
	mustDump(t, tg.pid, img)
	tg.expectKilled()
	reapOrphans(t)
	script := filepath.Join(t.TempDir(), "kill.sh")
	body := fmt.Sprintf("#!/bin/sh\n[ \"$CRTOOLS_SCRIPT_ACTION\" = post-restore ] && kill -KILL %d\nexit 0\n", parent)
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	r := runCryo(t, restoreTimeout, restoreArgs(img, "-d", "--action-script", script)...)
	t.Cleanup(func() { killRestored(t, tg.pid, tg.name) })
	if r.timedOut || r.code == 0 {
		t.Fatalf("restore whose process %d was killed midway: want a failure, got %v\n%s", parent, r, readLog(img+".restore.log"))
	}
	if !strings.Contains(r.output, fmt.Sprint(parent)) {
		t.Errorf("the error must name the process that died:\n%v", r)
	}
	pids := []int{tg.pid}
	for _, name := range []string{"parent", "plain", "session", "group"} {
		pids = append(pids, tg.kids[name])
	}
	deadline := time.Now().Add(2 * time.Second)
	for _, pid := range pids {
		for time.Now().Before(deadline) && procState(pid) != "gone" {
			reapIfChild(pid)
			time.Sleep(10 * time.Millisecond)
		}
		if st := procState(pid); st != "gone" {
			t.Errorf("after the failed restore pid %d still exists (state %s)", pid, st)
		}
	}
}

// TestThreadChildren: a child and a zombie forked by a thread that is not
// the leader (test/targets/threadkids.c) are that thread's children after
// two checkpoints, so that the child gets its parent-death signal when
// the thread exits, as it would have.
func TestThreadChildren(t *testing.T) {
	requireCryo(t)
	tg := startTarget(t, "threadkids")
	before := snapshotTree(t, tg.pid)
	img := filepath.Join(t.TempDir(), "img")
	mustDump(t, tg.pid, img)
	tg.expectKilled()
	reapOrphans(t)
	restoreDetached(t, tg, img)
	compareSnapshots(t, "after restore", before, snapshotTree(t, tg.pid))
	res, img2 := cycleAgain(t, tg)
	if res.timedOut || res.code != 0 {
		t.Fatalf("thread children after two checkpoints: %v\n%s\n%s", res, tg.log(), readLog(img2+".restore.log"))
	}
	tg.expectPassed(0, "after two checkpoints")
}
