package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/kabi"
)

// Job control: processes stopped by SIGSTOP or SIGTSTP, each with two
// threads, come back stopped, with the wait reports and SIGCHLDs their
// parents had not collected, and none that they had (test/targets/stopped.c).
// Each tree is dumped twice: the restored tree is dumped and restored
// again (cycleAgain).

// TestStoppedChild: a SIGSTOPped child whose parent has collected neither
// the stop report nor the SIGCHLD.
func TestStoppedChild(t *testing.T) { testStopped(t, "child") }

// TestStoppedChildReaped: the same, with both collected before the dump.
func TestStoppedChildReaped(t *testing.T) { testStopped(t, "child-reaped") }

// TestContinuedChild: a child stopped and continued, whose parent has
// collected the stop but neither the continue report nor its SIGCHLD.
func TestContinuedChild(t *testing.T) { testStopped(t, "continued") }

// TestStoppedGroup: a process group of two processes stopped by SIGTSTP;
// the one whose parent is stopped too has its report uncollected.
func TestStoppedGroup(t *testing.T) { testStopped(t, "group") }

func testStopped(t *testing.T, mode string) {
	requireCryo(t)
	tg := startTarget(t, "stopped", mode)
	before := snapshotTree(t, tg.pid)
	// A dump that lets the tree go on leaves it exactly as it was: stopped,
	// its pending signals where they were.
	mustDump(t, tg.pid, filepath.Join(t.TempDir(), "img0"), "--leave-running")
	// A stopped thread cryo lets go is woken by the kernel and stops
	// again at once, before any code of its own (__ptrace_unlink): on a
	// busy machine the snapshot could catch it on its way.
	for _, k := range tg.kids {
		if before[fmt.Sprintf("%d/%d stopped", k, k)] == "true" {
			waitStopped(t, k)
		}
	}
	compareSnapshots(t, "after dump --leave-running", before, snapshotTree(t, tg.pid))
	img := filepath.Join(t.TempDir(), "img")
	mustDump(t, tg.pid, img)
	tg.expectKilled()
	reapOrphans(t)
	if sig := map[string]string{"child": "SIGSTOP", "child-reaped": "SIGSTOP", "group": "SIGTSTP"}[mode]; sig != "" {
		if r := runCryo(t, restoreTimeout, "show", img); r.code != 0 || !strings.Contains(r.output, "stopped by "+sig) {
			t.Errorf("cryo show of the image: want a process stopped by %s: %v", sig, r)
		}
	}
	restoreDetached(t, tg, img)
	compareSnapshots(t, "after restore", before, snapshotTree(t, tg.pid))
	res, img2 := cycleAgain(t, tg)
	if res.timedOut || res.code != 0 {
		t.Fatalf("stopped %s after two checkpoints: %v\n%s\n%s", mode, res, tg.log(), readLog(img2+".restore.log"))
	}
	tg.expectPassed(0, "after two checkpoints")
}

// TestStoppedRoot: the root stopped itself with SIGSTOP. After restore it
// is stopped, every thread, and its new parent (the test, as subreaper,
// once cryo restore -d has gone) finds the stop to collect; continued, it
// runs on, its SIGCONT handler having run once.
func TestStoppedRoot(t *testing.T) {
	requireCryo(t)
	tg := startTarget(t, "stopped", "root")
	waitStopped(t, tg.pid)
	before := snapshotTree(t, tg.pid)
	img := filepath.Join(t.TempDir(), "img")
	for cycle := 1; cycle <= 2; cycle++ {
		mustDump(t, tg.pid, img)
		if cycle == 1 {
			tg.expectKilled()
		} else if _, err := waitReaped(tg.pid, exitTimeout); err != nil {
			t.Fatalf("restored root after its dump: %v", err)
		}
		reapOrphans(t)
		restoreDetached(t, tg, img)
		compareSnapshots(t, fmt.Sprintf("cycle %d", cycle), before, snapshotTree(t, tg.pid))
		si, err := kabi.Waitid(unix.P_PID, tg.pid, unix.WSTOPPED|unix.WNOHANG|unix.WNOWAIT)
		if err != nil {
			t.Fatalf("cycle %d: waitid: %v", cycle, err)
		}
		if pid, code, status := si.Pid(), si.Code(), si.Status(); pid != tg.pid || code != cldStopped || status != int(syscall.SIGSTOP) {
			t.Fatalf("cycle %d: the restored root's parent finds pid %d code %d status %d, want %d CLD_STOPPED SIGSTOP", cycle, pid, code, status, tg.pid)
		}
		img = filepath.Join(t.TempDir(), "img2")
	}
	if err := syscall.Kill(tg.pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	tg.fire()
	ws, err := waitReaped(tg.pid, restoreTimeout)
	if err != nil {
		t.Fatalf("restored root: %v\n%s", err, tg.log())
	}
	tg.expectPassed(ws.ExitStatus(), "after two checkpoints")
}

const cldStopped = 5 // CLD_STOPPED

// waitStopped waits until every thread of pid is stopped.
func waitStopped(t *testing.T, pid int) {
	t.Helper()
	for deadline := time.Now().Add(readyTimeout); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if allStopped(pid) {
			return
		}
	}
	t.Fatalf("pid %d did not stop: %s", pid, stoppedThreads(pid))
}

// allStopped says whether pid exists and every thread of it is stopped.
func allStopped(pid int) bool {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil || len(ents) == 0 {
		return false
	}
	for _, e := range ents {
		if taskState(pid, e.Name()) != "T" {
			return false
		}
	}
	return true
}
