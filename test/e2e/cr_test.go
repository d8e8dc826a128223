package e2e

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// crTargets are the targets that must survive every checkpoint/restore flow.
var crTargets = []string{"counter", "memory", "mlock", "threads", "signals", "files", "gothreads", "pyjob", "sysv"}

// TestDumpRestore: dump (the target is killed), restore in the foreground,
// trigger: the restored process must pass all its checks and cryo restore must
// exit with its status, 0.
func TestDumpRestore(t *testing.T) {
	for _, name := range crTargets {
		t.Run(name, func(t *testing.T) {
			requireCryo(t)
			tg := startTarget(t, name)
			img := filepath.Join(tg.dir, "img")
			mustDump(t, tg.pid, img)
			tg.expectKilled()
			restoreAndVerify(t, tg, img)
			checkTargetLog(t, tg)
		})
	}
}

// TestDumpLeaveRunning: a dump with --leave-running must leave the original
// intact: it passes its checks afterwards.
func TestDumpLeaveRunning(t *testing.T) {
	for _, name := range crTargets {
		t.Run(name, func(t *testing.T) {
			requireCryo(t)
			tg := startTarget(t, name)
			img := filepath.Join(tg.dir, "img")
			mustDump(t, tg.pid, img, "--leave-running")
			if _, err := os.Stat(filepath.Join(img, "inventory.img")); err != nil {
				t.Errorf("dump succeeded but wrote no inventory.img: %v", err)
			}
			expectAliveUnstopped(t, tg.pid, "after dump --leave-running")
			tg.fire()
			st, ok := tg.waitExit(30 * time.Second)
			if !ok {
				t.Fatalf("original %s did not finish its checks within 30 s (state %s)", name, procState(tg.pid))
			}
			tg.expectPassed(st.ExitCode(), "original after dump --leave-running")
			checkTargetLog(t, tg)
		})
	}
}

// TestDumpRestoreTwice: a restored process (restored with -d) is dumped
// again and restored again, then verifies.
func TestDumpRestoreTwice(t *testing.T) {
	for _, name := range crTargets {
		t.Run(name, func(t *testing.T) {
			requireCryo(t)
			tg := startTarget(t, name)
			img1 := filepath.Join(tg.dir, "img1")
			mustDump(t, tg.pid, img1)
			tg.expectKilled()

			w := armState(t, img1, "pre-resume", tg.pid)
			cp := startCryo(t, restoreArgs(img1, "-d")...)
			expectSameState(t, img1, w, cp.done)
			r := cp.wait(restoreTimeout)
			if r.code != 0 || r.timedOut {
				t.Fatalf("restore -d: %v%s", r, readLog(img1+".restore.log"))
			}
			if !runsTarget(tg.pid, name) {
				t.Fatalf("restore -d returned 0 but pid %d does not run %s (state %s)", tg.pid, name, procState(tg.pid))
			}
			expectAliveUnstopped(t, tg.pid, "after restore -d")
			time.Sleep(200 * time.Millisecond)

			img2 := filepath.Join(tg.dir, "img2")
			mustDump(t, tg.pid, img2)
			// The restored process was re-parented to us (subreaper): reap it.
			ws, err := waitReaped(tg.pid, exitTimeout)
			switch {
			case errors.Is(err, errStillRunning):
				t.Fatalf("the second dump left the restored process running: %v", err)
			case err != nil: // ECHILD: it is not ours to reap, so we cannot see how it ended
				t.Fatalf("reaping the restored process after the second dump: %v", err)
			case !ws.Signaled() || ws.Signal() != syscall.SIGKILL:
				t.Fatalf("restored process ended with %v, want SIGKILL by the second dump", describe(ws))
			}
			restoreAndVerify(t, tg, img2)
			checkTargetLog(t, tg)
		})
	}
}

// restoreAndVerify runs cryo restore (foreground) from img, triggers the
// restored process once it runs, and expects cryo to exit 0 with the
// target's status after all checks passed.
func restoreAndVerify(t *testing.T, tg *target, img string) {
	t.Helper()
	restoreAndVerifyThen(t, tg, img, nil)
}

// restoreAndVerifyThen is restoreAndVerify that runs running, if not nil,
// once the restored target runs, before the trigger.
func restoreAndVerifyThen(t *testing.T, tg *target, img string, running func()) {
	t.Helper()
	w := armState(t, img, "pre-resume", tg.pid)
	cp := startCryo(t, restoreArgs(img)...)
	expectSameState(t, img, w, cp.done)
	deadline := time.Now().Add(restoreTimeout)
	for !runsTarget(tg.pid, tg.name) {
		select {
		case <-cp.done:
			if !runsTarget(tg.pid, tg.name) {
				t.Fatalf("cryo restore exited before pid %d ran: %v%s", tg.pid, cp.res, readLog(img+".restore.log"))
			}
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cp.kill()
			t.Fatalf("pid %d not running %s %v after restore started: %v%s", tg.pid, tg.name, restoreTimeout, cp.res, readLog(img+".restore.log"))
		}
	}
	// Let the restored process run a little before asking it to check.
	time.Sleep(100 * time.Millisecond)
	if running != nil {
		running()
	}
	tg.fire()
	r := cp.wait(restoreTimeout)
	if r.timedOut {
		killRestored(t, tg.pid, tg.name)
		t.Fatalf("cryo restore still running %v after the trigger (restored pid %d state %s): %v", restoreTimeout, tg.pid, procState(tg.pid), r)
	}
	if r.code != 0 {
		t.Errorf("cryo restore: %v%s", r, readLog(img+".restore.log"))
	}
	tg.expectPassed(r.code, "after restore")
}

// checkTargetLog runs target-specific checks of the log.
func checkTargetLog(t *testing.T, tg *target) {
	t.Helper()
	if tg.name == "counter" {
		checkCountSequence(t, tg.log())
	}
}

// checkCountSequence checks that the "count N" lines go 10, 20, 30... with
// no reset and no gap across every checkpoint.
func checkCountSequence(t *testing.T, log string) {
	t.Helper()
	want := uint64(10)
	n := 0
	for _, line := range strings.Split(log, "\n") {
		v, ok := strings.CutPrefix(line, "count ")
		if !ok {
			continue
		}
		got, err := strconv.ParseUint(v, 10, 64)
		if err != nil || got != want {
			t.Errorf("count line %d is %q, want %d: the count was reset, skipped or repeated", n+1, line, want)
			return
		}
		want += 10
		n++
	}
	// One line before READY, three after the trigger at least.
	if n < 4 {
		t.Errorf("only %d count lines", n)
	}
}

func describe(ws syscall.WaitStatus) string {
	switch {
	case ws.Exited():
		return "exit " + strconv.Itoa(ws.ExitStatus())
	case ws.Signaled():
		return "signal " + ws.Signal().String()
	}
	return "status " + strconv.Itoa(int(ws))
}
