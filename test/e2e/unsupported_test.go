package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cryo-project/cryo/internal/kabi"
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
	tg.expectUnharmed("after the failed dump")
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

// TestDumpStoppedLeaveRunning: a process stopped by job control (SIGSTOP),
// eight threads in every kind of state, is dumped with --leave-running
// and left as it was: every thread still stopped and untraced. After
// SIGCONT it runs on intact. Then the image is restored: stopped again,
// and after SIGCONT intact again.
func TestDumpStoppedLeaveRunning(t *testing.T) {
	requireCryo(t)
	tg := startTarget(t, "threads")
	if err := syscall.Kill(tg.pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stoppedUntraced := func() string {
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
	for deadline := time.Now().Add(5 * time.Second); stoppedUntraced() != ""; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("target did not stop: %s", stoppedUntraced())
		}
	}
	before := snapshotTree(t, tg.pid)
	img := filepath.Join(tg.dir, "img")
	mustDump(t, tg.pid, img, "--leave-running")
	if bad := stoppedUntraced(); bad != "" {
		t.Errorf("after the dump: %s; want every thread stopped, untraced", bad)
	}
	compareSnapshots(t, "after dump --leave-running", before, snapshotTree(t, tg.pid))
	if err := syscall.Kill(tg.pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	expectAliveUnstopped(t, tg.pid, "after SIGCONT")
	// The original goes; its image comes back stopped.
	if err := syscall.Kill(tg.pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	tg.expectKilled()
	restoreDetached(t, tg, img)
	if bad := stoppedUntraced(); bad != "" {
		t.Fatalf("after restore: %s; want every thread stopped, untraced", bad)
	}
	compareSnapshots(t, "after restore", before, snapshotTree(t, tg.pid))
	if err := syscall.Kill(tg.pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	expectAliveUnstopped(t, tg.pid, "restored, after SIGCONT")
	tg.fire()
	ws, err := waitReaped(tg.pid, restoreTimeout)
	if err != nil {
		t.Fatalf("restored target: %v\n%s", err, tg.log())
	}
	tg.expectPassed(ws.ExitStatus(), "restored stopped, then continued")
}

// TestDumpTracedRefused: a thread traced by a process outside the tree (here
// the test itself, with PTRACE_SEIZE) makes the dump fail at once, naming
// the tracer, and the process runs on untouched.
func TestDumpTracedRefused(t *testing.T) {
	requireCryo(t)
	tg := startTarget(t, "threads")
	tid := 0
	for _, v := range tg.tids {
		tid = v
		break
	}
	if tid == 0 {
		t.Fatalf("the threads target reported no thread:\n%s", tg.log())
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := kabi.Seize(tid, 0); err != nil {
		t.Fatalf("seize thread %d: %v", tid, err)
	}
	attached := true
	detach := func() {
		if !attached {
			return
		}
		attached = false
		// Detaching needs a stopped tracee.
		if err := kabi.Interrupt(tid); err != nil {
			t.Errorf("interrupt %d: %v", tid, err)
			return
		}
		var ws syscall.WaitStatus
		if _, err := syscall.Wait4(tid, &ws, syscall.WALL, nil); err != nil {
			t.Errorf("wait for %d: %v", tid, err)
		}
		if err := kabi.Detach(tid, 0); err != nil {
			t.Errorf("detach %d: %v", tid, err)
		}
	}
	defer detach()
	img := filepath.Join(tg.dir, "img")
	r := dump(t, tg.pid, img)
	want := fmt.Sprintf("thread %d", tid)
	if r.timedOut || r.code == 0 || !strings.Contains(r.output, want) || !strings.Contains(r.output, fmt.Sprintf("traced by pid %d", os.Getpid())) {
		t.Fatalf("dump of a process with a traced thread: want a refusal naming %s and its tracer %d, got %v", want, os.Getpid(), r)
	}
	if _, err := os.Stat(filepath.Join(img, "inventory.img")); err == nil {
		t.Errorf("a failed dump left %s/inventory.img", img)
	}
	for _, e := range mustReadDir(t, fmt.Sprintf("/proc/%d/task", tg.pid)) {
		if tp := tracerPid(tg.pid, e.Name()); tp != 0 && e.Name() != strconv.Itoa(tid) {
			t.Errorf("after the refused dump thread %s is traced by %d", e.Name(), tp)
		}
	}
	detach()
	tg.expectUnharmed("after the refused dump")
}

func mustReadDir(t *testing.T, dir string) []os.DirEntry {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return ents
}

// TestDumpRefusesNamespaces: a process in a namespace of its own (one the
// dumper is not in) of a kind cryo does not make is refused, naming the
// namespace: restore would build it in the restorer's, where its mounts,
// network or ids are others. The process goes on unharmed. (uts, ipc and
// time namespaces are made: ns_test.go.)
func TestDumpRefusesNamespaces(t *testing.T) {
	requireCryo(t)
	for _, ns := range []struct {
		name  string
		flags uintptr
	}{
		{"net", syscall.CLONE_NEWNET},
		{"mnt", syscall.CLONE_NEWNS},
		{"cgroup", syscall.CLONE_NEWCGROUP},
		{"pid", syscall.CLONE_NEWPID},
		{"user", syscall.CLONE_NEWUSER},
	} {
		t.Run(ns.name, func(t *testing.T) {
			attr := &syscall.SysProcAttr{Setsid: true, Cloneflags: ns.flags}
			if ns.flags == syscall.CLONE_NEWUSER {
				// Root in it is root outside: the target can still
				// reach its files.
				attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1}}
				attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1}}
			}
			tg := startTargetAttr(t, attr, "counter")
			if ns.flags == syscall.CLONE_NEWPID {
				// It is pid 1 in its namespace, and says so.
				for deadline := time.Now().Add(10 * time.Second); !strings.Contains(tg.log(), "READY\n"); time.Sleep(5 * time.Millisecond) {
					if time.Now().After(deadline) {
						t.Fatalf("target not ready:\n%s", tg.log())
					}
				}
			} else {
				tg.waitReady()
			}
			img := filepath.Join(tg.dir, "img")
			r := dump(t, tg.pid, img, "--leave-running")
			if r.timedOut || r.code == 0 || !strings.Contains(r.output, "is in "+ns.name+":[") || !strings.Contains(r.output, "not supported") {
				t.Fatalf("dump of a process in its own %s namespace: want a refusal naming it, got %v", ns.name, r)
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
			if ns.flags == syscall.CLONE_NEWPID {
				if st.ExitCode() != 0 || !strings.Contains(tg.log(), " 0 failed") {
					t.Errorf("target after the refused dump: exit %d\n%s", st.ExitCode(), tg.log())
				}
				return
			}
			tg.expectPassed(st.ExitCode(), "after the refused dump")
		})
	}
}

// TestDumpGhostLimit: criu's --ghost-limit. The files target holds a
// deleted 8 MiB file: a 1M limit refuses it, naming the file, and leaves
// the process untouched; 16M takes it, and the restored process finds its
// contents. criu's other flags that change nothing cryo does are taken.
func TestDumpGhostLimit(t *testing.T) {
	requireCryo(t)
	tg := startTarget(t, "files")
	img := filepath.Join(tg.dir, "img")
	r := dump(t, tg.pid, img, "--ghost-limit", "1M", "--link-remap", "--force-irmap", "--evasive-devices")
	if r.timedOut || r.code == 0 || !strings.Contains(r.output, "deleted.dat") || !strings.Contains(r.output, "--ghost-limit 1048576") {
		t.Fatalf("dump with --ghost-limit 1M of a process holding a deleted 8 MiB file: want a refusal naming it, got %v", r)
	}
	expectAliveUnstopped(t, tg.pid, "after the refused dump")
	img = filepath.Join(tg.dir, "img2")
	// The deleted file comes back with its mode, owner, size, holes and
	// times (to the microsecond, as CRIU's ghost_file_entry keeps them).
	ghost := func() string {
		var st syscall.Stat_t
		if err := syscall.Stat(fmt.Sprintf("/proc/%d/fd/100", tg.pid), &st); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("mode %o uid %d gid %d size %d blocks %d atime %d.%06d mtime %d.%06d", st.Mode, st.Uid, st.Gid, st.Size, st.Blocks,
			st.Atim.Sec, st.Atim.Nsec/1000, st.Mtim.Sec, st.Mtim.Nsec/1000)
	}
	before := ghost()
	mustDump(t, tg.pid, img, "--ghost-limit", "16M")
	tg.expectKilled()
	reapOrphans(t)
	restoreDetached(t, tg, img)
	if after := ghost(); after != before {
		t.Errorf("the deleted file at fd 100: %s after restore, was %s", after, before)
	}
	tg.fire()
	ws, err := waitReaped(tg.pid, exitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	tg.expectPassed(ws.ExitStatus(), "after restore")
}

// TestDumpRefusesNameless: objects restore could not reach again by the
// name they show (it would fail after the dump had ended the process, or
// open another file), and signal-driven I/O, which it would bring back
// silent: each refused at dump, named, the process left as it was
// (test/targets/unlinked.py). A pipe end opened twice is restored.
func TestDumpRefusesNameless(t *testing.T) {
	requireCryo(t)
	for _, c := range []struct{ mode, want string }{
		{"cwd-removed", "a directory removed"},
		{"dir-removed", "a directory removed"},
		{"fifo-deleted", "a FIFO deleted"},
		{"dev-deleted", "a character device node deleted"},
		{"tmpfile", "O_TMPFILE"},
		{"setown", "O_ASYNC (signal-driven I/O)"},
		{"linked", "still linked elsewhere"},
		{"mqueue", "POSIX message queue"},
		{"epoll-closed", "closed since"},
		{"pipe-reopen", ""}, // restored: two descriptions of one pipe end
		{"ptmx", "the tree holds its master but no fd on its slave"},
	} {
		t.Run(c.mode, func(t *testing.T) {
			tg := startTarget(t, "unlinked", c.mode)
			img := filepath.Join(tg.dir, "img")
			if c.want == "" {
				mustDump(t, tg.pid, img)
				tg.expectKilled()
				reapOrphans(t)
				restoreDetached(t, tg, img)
				tg.fire()
				ws, err := waitReaped(tg.pid, exitTimeout)
				if err != nil {
					t.Fatal(err)
				}
				tg.expectPassed(ws.ExitStatus(), "after restore")
				return
			}
			// --shell-job too: it re-attaches the job's terminal, never a
			// pty master of the tree's own.
			r := dump(t, tg.pid, img, "--shell-job")
			if r.timedOut || r.code == 0 || !strings.Contains(r.output, c.want) || !strings.Contains(r.output, "not supported") {
				t.Fatalf("dump of a process holding %s: want a refusal naming %q, got %v", c.mode, c.want, r)
			}
			tg.expectUnharmed("after the refused dump")
		})
	}
}

// TestDumpInetRefused: what an inet socket holds that cryo cannot bring
// back is refused at dump, naming the fd, the socket's protocol, address
// and state, and why; the process goes on unharmed, its sockets as they
// were.
func TestDumpInetRefused(t *testing.T) {
	requireCryo(t)
	for _, tc := range []struct {
		mode, fd, want string
	}{
		{"established", "20", `inet stream socket \(tcp 127\.0\.0\.1:\d+ to 127\.0\.0\.1:\d+ in state ESTABLISHED\): an established TCP connection`},
		{"backlog", "10", `inet stream socket \(tcp 127\.0\.0\.1:\d+ in state LISTEN\): 1 connection\(s\) in its accept queue, not yet accepted \(from 127\.0\.0\.1:\d+\)`},
		{"udpqueue", "12", `inet dgram socket \(udp 127\.0\.0\.1:\d+ in state CLOSE\): datagrams queued on a socket with IP_PKTINFO`},
		{"option", "10", `inet stream socket \(.*\): option TCP_USER_TIMEOUT is 4321, a new socket's is 0`},
		{"netns", "20", `inet dgram socket \(udp 0\.0\.0\.0:0 in state CLOSE\): made in a network namespace other than its process's`},
		{"error", "20", `inet dgram socket \(udp 127\.0\.0\.1:\d+ to 127\.0\.0\.1:\d+ in state ESTABLISHED\): a pending socket error`},
		{"raw", "20", `inet raw socket \(icmp 0\.0\.0\.0:\d+ in state CLOSE\): protocol icmp`},
		{"owner", "20", `inet dgram socket \(udp 0\.0\.0\.0:0 in state CLOSE\): owned by uid 65534 gid 65534, made before the process changed to fsuid 0 fsgid 0`},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			tg := startTarget(t, "inet", tc.mode)
			img := filepath.Join(tg.dir, "img")
			r := dump(t, tg.pid, img)
			if r.timedOut || r.code == 0 {
				t.Fatalf("dump: want a refusal, got %v", r)
			}
			t.Logf("refused: %s", strings.SplitN(r.output, "\n", 2)[0])
			re := regexp.MustCompile(`fd ` + tc.fd + ` \(socket:\[\d+\]\) of pid \d+: ` + tc.want + `.*: not supported`)
			if !re.MatchString(r.output) {
				t.Errorf("the refusal does not match %s:\n%v", re, r)
			}
			if _, err := os.Stat(filepath.Join(img, "inventory.img")); err == nil {
				t.Errorf("a failed dump left %s/inventory.img", img)
			}
			tg.expectUnharmed("after the refused dump")
		})
	}
}

// TestDumpMemoryRefused: memory that a restore would get wrong makes the
// dump fail at once, naming the mapping and what it is, and the process
// goes on untouched: a userfaultfd range, an AIO ring, io_uring's rings
// (their fd closed), guard pages; and a process that asked KSM to merge
// all its memory.
func TestDumpMemoryRefused(t *testing.T) {
	requireCryo(t)
	for _, tc := range []struct{ mode, what string }{
		{"uffd", "registered with userfaultfd"},
		{"aio", "an AIO ring"},
		{"uring", "an io_uring ring"},
		{"guard", "guard pages (MADV_GUARD_INSTALL"},
		{"ksm", "PR_SET_MEMORY_MERGE"},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			tg := startTarget(t, "memrefuse", tc.mode)
			if m := regexp.MustCompile(`SKIP (.*)`).FindStringSubmatch(tg.log()); m != nil {
				t.Skipf("kernel: %s", m[1])
			}
			m := regexp.MustCompile(`MAPPING ([0-9a-f]+)-([0-9a-f]+)`).FindStringSubmatch(tg.log())
			if m == nil {
				t.Fatalf("the target did not report its mapping:\n%s", tg.log())
			}
			img := filepath.Join(tg.dir, "img")
			r := dump(t, tg.pid, img)
			if r.timedOut || r.code == 0 {
				t.Fatalf("dump: want a refusal, got %v", r)
			}
			if !strings.Contains(r.output, tc.what) || (tc.mode != "ksm" && !strings.Contains(r.output, "0x"+m[1])) {
				t.Errorf("the refusal does not name the mapping at %s and %q: %v", m[1], tc.what, r)
			}
			if _, err := os.Stat(filepath.Join(img, "inventory.img")); err == nil {
				t.Errorf("a failed dump left %s/inventory.img", img)
			}
			tg.expectUnharmed("after the refused dump")
		})
	}
}
