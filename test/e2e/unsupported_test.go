package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDumpUnsupportedFd: a dump of a process holding an fd cryo cannot dump
// must fail, name the fd and its link, write no inventory.img, and leave the
// process running and intact.
func TestDumpUnsupportedFd(t *testing.T) {
	requireCryo(t)
	tg := startTarget(t, "unsupported")
	m := regexp.MustCompile(`UNSUPPORTED fd=(\d+) link=(\S+)`).FindStringSubmatch(tg.log())
	if m == nil {
		t.Fatalf("target did not report its fd:\n%s", tg.log())
	}
	fd, link := m[1], m[2]
	img := filepath.Join(tg.dir, "img")
	if err := os.MkdirAll(img, 0o700); err != nil {
		t.Fatal(err)
	}
	r := dump(t, tg.pid, img)
	if r.timedOut {
		t.Fatalf("dump hung: %v", r)
	}
	if r.code == 0 {
		t.Fatalf("dump of a process with %s at fd %s succeeded; it must refuse: %v", link, fd, r)
	}
	if !strings.Contains(r.output, link) || !regexp.MustCompile(`\bfd\s*`+fd+`\b`).MatchString(r.output) {
		t.Errorf("error must name fd %s and its link %s:\n%v", fd, link, r)
	}
	if _, err := os.Stat(filepath.Join(img, "inventory.img")); err == nil {
		t.Errorf("a failed dump left %s/inventory.img: the image looks complete", img)
	}
	select {
	case <-tg.done:
		t.Fatalf("target died during the failed dump: %v", tg.state)
	default:
	}
	expectAliveUnstopped(t, tg.pid, "after the failed dump")
	tg.fire()
	st, ok := tg.waitExit(10 * time.Second)
	if !ok {
		t.Fatal("target did not finish its checks within 10 s")
	}
	tg.expectPassed(st.ExitCode(), "after the refused dump")
}

// TestDumpSysVRefused: System V shared memory is not checkpointed yet; the
// dump says so, naming the mapping, and the process goes on unharmed.
func TestDumpSysVRefused(t *testing.T) {
	requireCryo(t)
	tg := startTarget(t, "sysv")
	img := filepath.Join(tg.dir, "img")
	r := dump(t, tg.pid, img)
	if r.timedOut || r.code == 0 || !strings.Contains(r.output, "System V shared memory") {
		t.Fatalf("dump of a process with a System V segment: want a refusal naming it, got %v", r)
	}
	if _, err := os.Stat(filepath.Join(img, "inventory.img")); err == nil {
		t.Errorf("a failed dump left %s/inventory.img", img)
	}
	expectAliveUnstopped(t, tg.pid, "after the refused dump")
	tg.fire()
	st, ok := tg.waitExit(10 * time.Second)
	if !ok {
		t.Fatal("target did not finish its checks within 10 s")
	}
	tg.expectPassed(st.ExitCode(), "after the refused dump")
}

// TestDumpRefusesSharedObjects: processes that share an address space, an
// fd table or an fs struct without being threads of one process (vfork,
// clone without CLONE_THREAD) are refused, naming both processes and what
// they share, at once (a vfork parent cannot be stopped, so a dump that
// tried would time out), and the tree goes on untouched.
func TestDumpRefusesSharedObjects(t *testing.T) {
	requireCryo(t)
	for _, tc := range []struct{ mode, what string }{
		{"vfork", "address space"},
		{"vm", "address space"},
		{"files", "fd table"},
		{"fs", "root, cwd and umask"},
		{"siblings", "fd table"},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			tg := startTarget(t, "sharing", tc.mode)
			kids := treePids(tg.pid)[1:]
			img := filepath.Join(tg.dir, "img")
			r := dump(t, tg.pid, img)
			if r.timedOut || r.code == 0 {
				t.Fatalf("dump: want a refusal, got %v", r)
			}
			if !strings.Contains(r.output, "share one "+tc.what) {
				t.Errorf("the refusal does not say they share one %s: %v", tc.what, r)
			}
			for _, k := range kids {
				if !strings.Contains(r.output, strconv.Itoa(k)) {
					t.Errorf("the refusal does not name process %d (children %v): %v", k, kids, r)
				}
			}
			if tc.mode != "vfork" { // a vfork parent is in the kernel, not stopped by cryo
				expectAliveUnstopped(t, tg.pid, "after the refused dump")
			}
			tg.fire()
			st, ok := tg.waitExit(10 * time.Second)
			if !ok {
				t.Fatal("target did not finish its checks within 10 s")
			}
			tg.expectPassed(st.ExitCode(), "after the refused dump")
		})
	}
}

// TestDumpStoppedRefused: a process stopped by job control (SIGSTOP) is
// refused at once, saying why, and left as it was: every thread still
// stopped and untraced. After SIGCONT it runs on intact.
func TestDumpStoppedRefused(t *testing.T) {
	requireCryo(t)
	tg := startTarget(t, "threads")
	if err := syscall.Kill(tg.pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	allStopped := func() string {
		ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", tg.pid))
		if err != nil {
			return err.Error()
		}
		for _, e := range ents {
			if st := taskState(tg.pid, e.Name()); st != "T" {
				return fmt.Sprintf("thread %s in state %s", e.Name(), st)
			}
			if tp := tracerPid(tg.pid, e.Name()); tp != 0 {
				return fmt.Sprintf("thread %s traced by %d", e.Name(), tp)
			}
		}
		return ""
	}
	for deadline := time.Now().Add(5 * time.Second); allStopped() != ""; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("target did not stop: %s", allStopped())
		}
	}
	img := filepath.Join(tg.dir, "img")
	// The refusal comes from the seize itself, with no stop to wait for:
	// a dump that waited would fail with "did not stop" instead.
	r := dump(t, tg.pid, img)
	if r.timedOut || r.code == 0 || !strings.Contains(r.output, "stopped (job control") {
		t.Fatalf("dump of a stopped process: want a refusal saying it is stopped, got %v", r)
	}
	if _, err := os.Stat(filepath.Join(img, "inventory.img")); err == nil {
		t.Errorf("a failed dump left %s/inventory.img", img)
	}
	if bad := allStopped(); bad != "" {
		t.Errorf("after the refused dump: %s; want every thread stopped, untraced", bad)
	}
	if err := syscall.Kill(tg.pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	expectAliveUnstopped(t, tg.pid, "after SIGCONT")
	tg.fire()
	st, ok := tg.waitExit(10 * time.Second)
	if !ok {
		t.Fatal("target did not finish its checks within 10 s")
	}
	tg.expectPassed(st.ExitCode(), "after the refused dump and SIGCONT")
}
