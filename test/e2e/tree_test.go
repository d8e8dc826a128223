package e2e

import (
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestTree checkpoints a process tree whose processes share a file offset,
// a pipe with bytes in flight and an anonymous shared counter, with a
// zombie, an orphaned process group and a daemonised grandchild; restores
// it, and lets every process check itself. Then it does it all again from
// the restored tree: a restored tree must be as dumpable as the original.
func TestTree(t *testing.T) {
	requireRoot(t)
	requireCryo(t)
	tg := startTarget(t, "tree")
	img := filepath.Join(t.TempDir(), "img")
	mustDump(t, tg.pid, img)
	tg.expectKilled()
	reapOrphans(t)
	checkShownZombies(t, tg, img)

	// Second cycle: restore detached, dump the restored tree, restore again.
	restoreDetached(t, tg, img)
	res, img2 := cycleAgain(t, tg)
	if res.timedOut || res.code != 0 {
		t.Fatalf("tree after two checkpoints: %v\n%s\n%s", res, tg.log(), readLog(img2+".restore.log"))
	}
	for _, c := range []string{"shared-offset", "counter-continues", "kid-sharer", "kid-orphan", "kid-daemon",
		"zombie-status", "zombie-killed-status", "posix-shm-shared", "posix-shm-unlinked-shared", "fifo-data", "fifo-nonblock"} {
		if !strings.Contains(tg.log(), "PASS "+c) {
			t.Errorf("check %s did not run:\n%s", c, tg.log())
		}
	}
}

// checkShownZombies: both forms of `cryo show` of the tree's image must
// show exactly its two zombies, children of the root, with the wait status
// the root will see: exit 7 (0x700) and killed by SIGTERM (0xf).
func checkShownZombies(t *testing.T, tg *target, img string) {
	t.Helper()
	want := map[int]uint32{}
	for name, status := range map[string]uint32{"zombie": 7 << 8, "zombie-killed": uint32(syscall.SIGTERM)} {
		pid, ok := tg.kids[name]
		if !ok {
			t.Fatalf("the tree target did not report its %s child", name)
		}
		want[pid] = status
	}
	r := runCryo(t, restoreTimeout, "show", img)
	if r.code != 0 || r.timedOut {
		t.Fatalf("cryo show: %v", r)
	}
	text, err := parseShowText(r.output)
	if err != nil {
		t.Fatalf("cryo show: %v\n%s", err, r.output)
	}
	for form, procs := range map[string][]shownProcess{"show": text, "show --json": showJSON(t, img)} {
		got := map[int]uint32{}
		for _, p := range procs {
			if !p.zombie {
				continue
			}
			got[p.pid] = p.exitStatus
			if p.ppid != tg.pid {
				t.Errorf("cryo %s: zombie %d has ppid %d, want the root %d", form, p.pid, p.ppid, tg.pid)
			}
			if len(p.tids) != 0 {
				t.Errorf("cryo %s: zombie %d shown with threads %v", form, p.pid, p.tids)
			}
		}
		if !maps.Equal(got, want) {
			t.Errorf("cryo %s: zombies (pid: wait status) %v, want %v", form, got, want)
		}
	}
}

// reapOrphans reaps the processes of a dumped (and so killed) tree that were
// re-parented to the test, a subreaper, when their parents died first.
func reapOrphans(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(exitTimeout)
	for time.Now().Before(deadline) {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG|syscall.WALL, nil)
		if err != nil { // ECHILD: nothing left
			return
		}
		if pid == 0 {
			if onlyKeepers() {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	var left []string
	for _, p := range treePids(os.Getpid())[1:] {
		if isKeeper(p) {
			continue // it outlives the dump by design, until the restore
		}
		left = append(left, fmt.Sprintf("%d %s (%s)", p, strings.ReplaceAll(readCmdline(p), "\x00", " "), procState(p)))
	}
	if len(left) > 0 {
		t.Fatalf("children of the test still alive %v after their tree was dumped: %s", exitTimeout, strings.Join(left, "; "))
	}
}

// isKeeper says whether pid is a dump's keeper of pipes (package keeper),
// which the test, a subreaper, inherits from the dump.
func isKeeper(pid int) bool {
	args := strings.Split(readCmdline(pid), "\x00")
	return len(args) > 1 && args[0] == cryoBin && args[1] == "keep-pipes"
}

// onlyKeepers says whether every child the test has left is a keeper.
func onlyKeepers() bool {
	for _, p := range treePids(os.Getpid())[1:] {
		if !isKeeper(p) {
			return false
		}
	}
	return true
}

// keepersLeft lists the keepers that are the test's children, reaping
// those that exited.
func keepersLeft() []int {
	var out []int
	for _, p := range treePids(os.Getpid())[1:] {
		if isKeeper(p) {
			out = append(out, p)
		}
	}
	for {
		pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG|syscall.WALL, nil)
		if err != nil || pid == 0 {
			break
		}
	}
	return out
}

// TestShellPipeline checkpoints `sh -c 'producer | consumer'` with the pipe
// between them full of unread bytes: after restore the consumer must read on
// without a byte lost, repeated or reordered, and the shell must report the
// pipeline's status. Twice: the restored pipeline is dumped again.
func TestShellPipeline(t *testing.T) {
	requireRoot(t)
	requireCryo(t)
	tg := startTarget(t, "pipeline")
	img := filepath.Join(t.TempDir(), "img")
	mustDump(t, tg.pid, img)
	tg.expectKilled()
	reapOrphans(t)
	restoreDetached(t, tg, img)
	res, img2 := cycleAgain(t, tg)
	if res.timedOut || res.code != 0 {
		t.Fatalf("pipeline after two checkpoints: %v\n%s\n%s", res, tg.log(), readLog(img2+".restore.log"))
	}
	if !strings.Contains(tg.log(), "PASS stream") {
		t.Fatalf("the consumer did not report its check:\n%s", tg.log())
	}
}

// TestDumpShellInVfork: a shell running `sleep` in a loop is, a few times
// a second, in a vfork (dash vforks for a command and waits until it
// execs). The dump waits for the vfork to end instead of refusing the
// shell: ten dumps in a row with --leave-running all succeed, and the loop
// runs on.
func TestDumpShellInVfork(t *testing.T) {
	requireCryo(t)
	dir := t.TempDir()
	cmd := exec.Command("/bin/sh", "-c", `while :; do sleep 0.002; done`)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL); cmd.Wait() })
	time.Sleep(50 * time.Millisecond)
	for i := range 10 {
		img := filepath.Join(dir, fmt.Sprintf("img%d", i))
		if r := dump(t, pid, img, "--leave-running"); r.code != 0 {
			t.Fatalf("dump %d of a shell looping over sleep: %v", i, r)
		}
		expectAliveUnstopped(t, pid, "after a dump")
	}
}
