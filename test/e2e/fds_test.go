package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The fds target holds a signalfd with a signal pending, timerfds (periodic
// with unread expirations, one-shot, absolute on CLOCK_REALTIME and
// CLOCK_BOOTTIME), an inotify instance with holes in its wds and a pidfd on
// its child; see test/targets/fds.c for what it checks.

// TestFdsStandalone: the target's checks pass with no checkpoint, in every
// mode, or nothing the other tests say means anything.
func TestFdsStandalone(t *testing.T) {
	requireRoot(t)
	for _, mode := range []string{"", "pending-inotify", "outside-pidfd"} {
		t.Run("mode="+mode, func(t *testing.T) {
			var args []string
			if mode != "" {
				args = append(args, mode)
			}
			tg := startTarget(t, "fds", args...)
			tg.fire()
			st, ok := tg.waitExit(30 * time.Second)
			if !ok {
				t.Fatal("fds did not finish its checks within 30 s")
			}
			tg.expectPassed(st.ExitCode(), "standalone")
			reapOrphans(t)
		})
	}
}

// TestFdsDumpRestore: dump (the tree is killed), restore, verify.
func TestFdsDumpRestore(t *testing.T) {
	requireCryo(t)
	tg := startTarget(t, "fds")
	img := filepath.Join(tg.dir, "img")
	mustDump(t, tg.pid, img)
	tg.expectKilled()
	reapOrphans(t)
	restoreAndVerify(t, tg, img)
}

// TestFdsDumpRestoreTwice: the restored tree is dumped and restored again:
// what restore rebuilt must be as dumpable as the original (a timerfd's
// ticks, the wds re-created with their holes, a pidfd reopened).
func TestFdsDumpRestoreTwice(t *testing.T) {
	requireCryo(t)
	tg := startTarget(t, "fds")
	img1 := filepath.Join(tg.dir, "img1")
	mustDump(t, tg.pid, img1)
	tg.expectKilled()
	reapOrphans(t)
	w := armState(t, img1, "pre-resume", tg.pid)
	cp := startCryo(t, restoreArgs(img1, "-d")...)
	expectSameState(t, img1, w, cp.done)
	r := cp.wait(restoreTimeout)
	if r.code != 0 || r.timedOut {
		t.Fatalf("restore -d: %v%s", r, readLog(img1+".restore.log"))
	}
	if !runsTarget(tg.pid, "fds") {
		t.Fatalf("restore -d returned 0 but pid %d does not run fds (state %s)", tg.pid, procState(tg.pid))
	}
	expectAliveUnstopped(t, tg.pid, "after restore -d")
	time.Sleep(200 * time.Millisecond)
	img2 := filepath.Join(tg.dir, "img2")
	mustDump(t, tg.pid, img2)
	if _, err := waitReaped(tg.pid, exitTimeout); err != nil {
		t.Fatalf("restored root after its dump: %v", err)
	}
	reapOrphans(t)
	restoreAndVerify(t, tg, img2)
}

// TestFdsDumpLeaveRunning: taking the images must not disturb the state
// (the timerfd catch-up, the copies of the files cryo took).
func TestFdsDumpLeaveRunning(t *testing.T) {
	requireCryo(t)
	tg := startTarget(t, "fds")
	mustDump(t, tg.pid, filepath.Join(tg.dir, "img"), "--leave-running")
	expectAliveUnstopped(t, tg.pid, "after dump --leave-running")
	tg.fire()
	st, ok := tg.waitExit(30 * time.Second)
	if !ok {
		t.Fatal("fds did not finish its checks within 30 s")
	}
	tg.expectPassed(st.ExitCode(), "original after dump --leave-running")
	reapOrphans(t)
}

// TestFdsRefused: what cannot be restored faithfully is refused at dump
// time, naming the fd, and the process goes on intact: an inotify instance
// with unread events, a pidfd on a process outside the tree.
func TestFdsRefused(t *testing.T) {
	requireCryo(t)
	for _, c := range []struct{ mode, why string }{
		{"pending-inotify", "unread events"},
		{"outside-pidfd", "not in the dumped tree"},
	} {
		t.Run(c.mode, func(t *testing.T) {
			tg := startTarget(t, "fds", c.mode)
			m := regexp.MustCompile(`UNSUPPORTED fd=(\d+) link=(\S+)`).FindStringSubmatch(tg.log())
			if m == nil {
				t.Fatalf("target did not report its fd:\n%s", tg.log())
			}
			img := filepath.Join(tg.dir, "img")
			if err := os.MkdirAll(img, 0o700); err != nil {
				t.Fatal(err)
			}
			r := dump(t, tg.pid, img)
			if r.timedOut || r.code == 0 {
				t.Fatalf("dump must refuse (%s): %v", c.why, r)
			}
			if !strings.Contains(r.output, m[2]) || !regexp.MustCompile(`\bfd\s*`+m[1]+`\b`).MatchString(r.output) || !strings.Contains(r.output, c.why) {
				t.Errorf("error must name fd %s, its link %s and say %q:\n%v", m[1], m[2], c.why, r)
			}
			if _, err := os.Stat(filepath.Join(img, "inventory.img")); err == nil {
				t.Errorf("a refused dump left %s/inventory.img", img)
			}
			expectAliveUnstopped(t, tg.pid, "after the refused dump")
			tg.fire()
			st, ok := tg.waitExit(30 * time.Second)
			if !ok {
				t.Fatal("target did not finish its checks within 30 s")
			}
			tg.expectPassed(st.ExitCode(), "after the refused dump")
			reapOrphans(t)
		})
	}
}
