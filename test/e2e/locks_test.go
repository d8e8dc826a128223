package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	filelock "github.com/checkpoint-restore/go-criu/v8/crit/images/file-lock"

	"github.com/cryo-project/cryo/internal/image"
	"github.com/cryo-project/cryo/internal/image/imagetest"
)

// File locks (issue #10): the locks target (test/targets/locks.c) holds
// flocks, POSIX and OFD locks on byte ranges, a flock on a description
// shared across fork, a POSIX lock on a mmap'd file and two leases; the
// pylocks target is the Python program with an sqlite database in
// WAL mode. After each restore the test compares the tree's lines of
// /proc/locks with those before the dump and, as a process outside the
// tree, fails to take every one of the locks.

// heldLock is one line of /proc/locks that belongs to the tree, with the
// inode replaced by the file's name.
type heldLock struct {
	kind, typ  string // POSIX, OFDLCK, FLOCK, LEASE; READ, WRITE
	pid        int
	path       string
	start, end string
}

func (l heldLock) String() string {
	return fmt.Sprintf("%s %s pid %d %s %s-%s", l.kind, l.typ, l.pid, filepath.Base(l.path), l.start, l.end)
}

// treeLocks returns the locks of /proc/locks held by pids or (OFD locks,
// which show no pid) on a file of dir, sorted.
func treeLocks(t *testing.T, dir string, pids ...int) []heldLock {
	t.Helper()
	byIno := map[string]string{}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	paths := []string{dir}
	for _, e := range ents {
		paths = append(paths, filepath.Join(dir, e.Name()))
	}
	for _, p := range paths {
		var st unix.Stat_t
		if unix.Stat(p, &st) == nil && (st.Mode&unix.S_IFMT == unix.S_IFREG || p == dir) {
			byIno[fmt.Sprintf("%02x:%02x:%d", unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)] = p
		}
	}
	b, err := os.ReadFile("/proc/locks")
	if err != nil {
		t.Fatal(err)
	}
	var out []heldLock
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 || f[1] == "->" {
			continue
		}
		pid, _ := strconv.Atoi(f[4])
		path, ours := byIno[f[5]]
		mine := false
		for _, p := range pids {
			mine = mine || p == pid
		}
		if !mine && !(pid == -1 && ours) {
			continue
		}
		if !ours {
			path = "inode " + f[5]
		}
		out = append(out, heldLock{kind: f[1], typ: f[3], pid: pid, path: path, start: f[6], end: f[7]})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

func sameLocks(t *testing.T, what string, got, want []heldLock) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("%s: the tree's /proc/locks differ from before the dump:\ngot  %v\nwant %v", what, got, want)
	}
}

// outsiderCannotTake is a process outside the tree (this test) trying to
// take each lock: a write lock over each POSIX or OFD lock's range (an OFD
// lock of its own, which a POSIX lock blocks alike), an exclusive flock
// over each flock. Each must fail as a conflict. Leases are left alone:
// the only way to test one from outside is to break it.
func outsiderCannotTake(t *testing.T, what string, locks []heldLock) {
	t.Helper()
	n := 0
	for _, l := range locks {
		switch l.kind {
		case "FLOCK":
			fd, err := unix.Open(l.path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			err = unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
			unix.Close(fd)
			if !errors.Is(err, unix.EWOULDBLOCK) {
				t.Errorf("%s: an outside process took an exclusive flock over %v: %v", what, l, err)
			}
			n++
		case "POSIX", "OFDLCK":
			start, _ := strconv.ParseInt(l.start, 10, 64)
			var n64 int64
			if l.end != "EOF" {
				end, _ := strconv.ParseInt(l.end, 10, 64)
				n64 = end - start + 1
			}
			fd, err := unix.Open(l.path, unix.O_RDWR|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			fl := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: start, Len: n64}
			err = unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &fl)
			unix.Close(fd)
			if !errors.Is(err, unix.EAGAIN) {
				t.Errorf("%s: an outside process took a write lock over %v: %v", what, l, err)
			}
			n++
		}
	}
	if n == 0 {
		t.Fatalf("%s: no lock to try: %v", what, locks)
	}
}

// fdFlags returns the flags: lines of pid's fdinfo for fds.
func fdFlags(t *testing.T, pid int, fds ...int) string {
	t.Helper()
	var out []string
	for _, fd := range fds {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", pid, fd))
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "flags:") {
				out = append(out, fmt.Sprintf("fd %d %s", fd, strings.Fields(l)[1]))
			}
		}
	}
	return strings.Join(out, ", ")
}

// dumpLocks dumps pid with --file-locks and checks that CRIU's crit reads
// the file-locks.img it wrote.
func dumpLocks(t *testing.T, pid int, img string) {
	t.Helper()
	mustDump(t, pid, img, "--file-locks")
	crit := imagetest.Crit(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, crit, "decode", "-i", filepath.Join(img, "file-locks.img")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"FILE_LOCKS"`) {
		t.Fatalf("crit decode file-locks.img: %v\n%s", err, out)
	}
}

// waitLog waits for line in the target's log.
func (tg *target) waitLog(line string, d time.Duration) {
	tg.t.Helper()
	for deadline := time.Now().Add(d); !strings.Contains(tg.log(), "\n"+line+"\n"); {
		if time.Now().After(deadline) {
			tg.t.Fatalf("%s: no %q line within %v", tg.name, line, d)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func touch(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestFileLocksStandalone: the locks target's checks pass with no
// checkpoint.
func TestFileLocksStandalone(t *testing.T) {
	requireRoot(t)
	tg := startTarget(t, "locks")
	tg.fire()
	tg.waitLog("HELD", 10*time.Second)
	breakLeases(t, tg)
	st, ok := tg.waitExit(10 * time.Second)
	if !ok {
		t.Fatal("locks did not finish")
	}
	tg.expectPassed(st.ExitCode(), "standalone")
	reapOrphans(t)
}

// breakLeases opens each leased file from outside as the lease forbids:
// the open must fail at once (O_NONBLOCK) and start the break the target
// then checks. One at a time: the target counts a SIGIO for each.
func breakLeases(t *testing.T, tg *target) {
	t.Helper()
	for i, o := range []struct {
		name  string
		flags int
	}{{"lease-r", unix.O_WRONLY}, {"lease-w", unix.O_RDONLY}} {
		if i == 1 {
			tg.waitLog("BROKEN-R", 10*time.Second)
		}
		fd, err := unix.Open(filepath.Join(tg.dir, o.name), o.flags|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err == nil {
			unix.Close(fd)
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			t.Errorf("an outside open of %s (flags %#o) did not meet a lease: %v", o.name, o.flags, err)
		}
	}
}

// TestFileLocksRefusedWithoutFlag: without --file-locks a dump refuses a
// process holding a lock, naming it, and the process runs on with every
// lock (its checks pass afterwards).
func TestFileLocksRefusedWithoutFlag(t *testing.T) {
	requireCryo(t)
	tg := startTarget(t, "locks")
	img := filepath.Join(tg.dir, "img")
	if err := os.MkdirAll(img, 0o700); err != nil {
		t.Fatal(err)
	}
	r := dump(t, tg.pid, img)
	want := fmt.Sprintf("fd 3 (%s) of pid %d: it holds an exclusive flock; dump with --file-locks", filepath.Join(tg.dir, "flock-ex"), tg.pid)
	if r.code == 0 || !strings.Contains(r.output, want) {
		t.Fatalf("dump without --file-locks: want a refusal %q, got: %v", want, r)
	}
	t.Logf("refused: %s", lastLines(r.output, 1))
	expectAliveUnstopped(t, tg.pid, "after the refused dump")
	tg.fire()
	tg.waitLog("HELD", 10*time.Second)
	breakLeases(t, tg)
	st, ok := tg.waitExit(10 * time.Second)
	if !ok {
		t.Fatal("locks did not finish")
	}
	tg.expectPassed(st.ExitCode(), "after a refused dump")
	reapOrphans(t)
}

// TestFileLocks: dumped with --file-locks, restored, dumped and restored
// again; after each restore the tree holds the same locks as before the
// dump and an outside process can take none of them; at the end the
// target checks each from inside and sees its leases broken from outside.
func TestFileLocks(t *testing.T) {
	requireCryo(t)
	tg := startTarget(t, "locks")
	kid := tg.kids["kid"]
	before := treeLocks(t, tg.dir, tg.pid, kid)
	if len(before) != 13 {
		t.Fatalf("the target holds %d locks, want 13: %v", len(before), before)
	}
	leaseFlags := fdFlags(t, tg.pid, 9, 10)
	if !strings.Contains(leaseFlags, "fd 9 02120000") {
		t.Fatalf("flags of the read lease's fd: %s, want O_ASYNC set", leaseFlags)
	}
	img1 := filepath.Join(tg.dir, "img1")
	dumpLocks(t, tg.pid, img1)
	tg.expectKilled()
	reapOrphans(t)
	if got := treeLocks(t, tg.dir, tg.pid, kid); len(got) != 0 {
		t.Fatalf("locks left after the dump killed the tree: %v", got)
	}
	if r := runCryo(t, restoreTimeout, restoreArgs(img1, "-d")...); r.code == 0 || !strings.Contains(r.output, "restore with --file-locks") {
		t.Fatalf("restore without --file-locks of an image with locks: want a refusal, got %v", r)
	}
	if r := runCryo(t, restoreTimeout, restoreArgs(img1, "-d", "--file-locks")...); r.code != 0 {
		t.Fatalf("restore -d --file-locks: %v%s", r, readLog(img1+".restore.log"))
	}
	t.Cleanup(func() { killRestored(t, tg.pid, tg.name) })
	expectAliveUnstopped(t, tg.pid, "after restore")
	sameLocks(t, "first restore", treeLocks(t, tg.dir, tg.pid, kid), before)
	if got := fdFlags(t, tg.pid, 9, 10); got != leaseFlags {
		t.Errorf("the leased fds' flags are %s after restore, were %s (a lease sets O_ASYNC)", got, leaseFlags)
	}
	outsiderCannotTake(t, "first restore", before)

	img2 := filepath.Join(tg.dir, "img2")
	dumpLocks(t, tg.pid, img2)
	if _, err := waitReaped(tg.pid, exitTimeout); err != nil {
		t.Fatalf("restored locks after its dump: %v", err)
	}
	reapOrphans(t)
	cp := startCryo(t, restoreArgs(img2, "--file-locks")...)
	for deadline := time.Now().Add(restoreTimeout); len(treeLocks(t, tg.dir, tg.pid, kid)) < len(before); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("second restore: locks not back after %v: %v", restoreTimeout, cp.res)
		}
	}
	time.Sleep(100 * time.Millisecond)
	sameLocks(t, "second restore", treeLocks(t, tg.dir, tg.pid, kid), before)
	outsiderCannotTake(t, "second restore", before)
	tg.fire()
	tg.waitLog("HELD", 10*time.Second)
	breakLeases(t, tg)
	r := cp.wait(restoreTimeout)
	if r.timedOut {
		t.Fatalf("restored target did not finish: %v", r)
	}
	tg.expectPassed(r.code, "after two dumps and restores")
}

// TestFileLocksConflictAtRestore: a lock taken by a process outside the
// tree between dump and restore fails the restore, naming the lock and
// its holder, and nothing of the tree is left; once it is given up, the
// same image restores.
func TestFileLocksConflictAtRestore(t *testing.T) {
	requireCryo(t)
	tg := startTarget(t, "locks")
	before := treeLocks(t, tg.dir, tg.pid, tg.kids["kid"])
	img := filepath.Join(tg.dir, "img")
	dumpLocks(t, tg.pid, img)
	tg.expectKilled()
	reapOrphans(t)

	comm, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Fatal(err)
	}
	me := strings.TrimSpace(string(comm)) // the holder's name in cryo's error
	open := func(name string) int {
		fd, err := unix.Open(filepath.Join(tg.dir, name), unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		return fd
	}
	for _, c := range []struct {
		name string
		take func(fd int) error
		want string
	}{
		{"posix", func(fd int) error {
			return unix.FcntlFlock(uintptr(fd), unix.F_SETLK, &unix.Flock_t{Type: unix.F_WRLCK, Start: 35, Len: 1})
		}, fmt.Sprintf("cannot take its POSIX write lock on bytes 30-39 again, held by pid %d (%s), with a POSIX write lock on bytes 35-35", os.Getpid(), me)},
		{"ofd", func(fd int) error {
			return unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &unix.Flock_t{Type: unix.F_RDLCK, Start: 0, Len: 0})
		}, fmt.Sprintf("cannot take its OFD write lock on bytes 5-5 again, held by fd %%d of pid %d (%s), with an OFD read lock on bytes 0-EOF", os.Getpid(), me)},
		{"flock-sh", func(fd int) error { return unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB) },
			fmt.Sprintf("cannot take its shared flock again, held by pid %d (%s), with an exclusive flock", os.Getpid(), me)},
		// A write lease needs its open alone: an open from outside is a
		// conflict too.
		{"lease-w", func(fd int) error { return nil },
			fmt.Sprintf("cannot take its write lease again, held by fd %%d of pid %d (%s), open with flags", os.Getpid(), me)},
	} {
		fd := open(c.name)
		if err := c.take(fd); err != nil {
			t.Fatalf("take a lock on %s: %v", c.name, err)
		}
		r := runCryo(t, restoreTimeout, restoreArgs(img, "-d", "--file-locks")...)
		want := c.want
		if strings.Contains(want, "%d") {
			want = fmt.Sprintf(want, fd)
		}
		if r.code == 0 || !strings.Contains(r.output, want) {
			t.Errorf("restore with %s locked from outside: want a failure naming %q, got %v", c.name, want, r)
		}
		t.Logf("%s locked from outside: %s", c.name, lastLines(r.output, 1))
		reapOrphans(t) // the killed half-built tree, re-parented to the test
		for _, pid := range []int{tg.pid, tg.kids["kid"]} {
			if runsTarget(pid, tg.name) {
				t.Fatalf("pid %d runs locks after a failed restore", pid)
			}
		}
		unix.Close(fd) // gives the lock up
	}
	if r := runCryo(t, restoreTimeout, restoreArgs(img, "-d", "--file-locks")...); r.code != 0 {
		t.Fatalf("restore -d --file-locks once the locks are free: %v%s", r, readLog(img+".restore.log"))
	}
	t.Cleanup(func() { killRestored(t, tg.pid, tg.name) })
	sameLocks(t, "restore once free", treeLocks(t, tg.dir, tg.pid, tg.kids["kid"]), before)
}

// TestFileLocksRefused: what cannot be restored exactly is refused by
// name even with --file-locks, and the target runs on: a lease in the
// middle of being broken (its break deadline cannot be set again), a
// mapping of a file under a write lease (the dump's open of it would
// break the lease), and a flock held by an open file description that
// only two mappings keep (no fd shows it, and nothing tells which of the
// two holds it; one mapping alone is TestFileLockMapped).
func TestFileLocksRefused(t *testing.T) {
	requireCryo(t)
	t.Run("breaking-lease", func(t *testing.T) {
		tg := startTarget(t, "locks")
		fd, err := unix.Open(filepath.Join(tg.dir, "lease-r"), unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if !errors.Is(err, unix.EWOULDBLOCK) {
			if err == nil {
				unix.Close(fd)
			}
			t.Fatalf("breaking the read lease: %v", err)
		}
		img := filepath.Join(tg.dir, "img")
		os.MkdirAll(img, 0o700)
		r := dump(t, tg.pid, img, "--file-locks")
		want := fmt.Sprintf("fd 9 (%s) of pid %d: a lease being broken, to be given up", filepath.Join(tg.dir, "lease-r"), tg.pid)
		if r.code == 0 || !strings.Contains(r.output, want) {
			t.Fatalf("dump of a lease being broken: want a refusal %q, got %v", want, r)
		}
		t.Logf("refused: %s", lastLines(r.output, 1))
		expectAliveUnstopped(t, tg.pid, "after the refused dump")
	})
	t.Run("write-lease-mapped", func(t *testing.T) {
		tg := startTarget(t, "locks", "lease-mapped")
		img := filepath.Join(tg.dir, "img")
		os.MkdirAll(img, 0o700)
		r := dump(t, tg.pid, img, "--file-locks")
		want := fmt.Sprintf("(%s) of pid %d: the file is under a write lease (pid %d), which opening it", filepath.Join(tg.dir, "lease-w"), tg.pid, tg.pid)
		if r.code == 0 || !strings.Contains(r.output, want) {
			t.Fatalf("dump of a mapping under a write lease: want a refusal %q, got %v", want, r)
		}
		t.Logf("refused: %s", lastLines(r.output, 1))
		expectAliveUnstopped(t, tg.pid, "after the refused dump")
		// The lease is intact (not broken by the dump): the target checks it.
		tg.fire()
		tg.waitLog("HELD", 10*time.Second)
		breakLeases(t, tg)
		st, ok := tg.waitExit(10 * time.Second)
		if !ok {
			t.Fatal("locks did not finish")
		}
		tg.expectPassed(st.ExitCode(), "after a refused dump")
		reapOrphans(t)
	})
	t.Run("mapping-only", func(t *testing.T) {
		tg := startTarget(t, "locks", "hidden")
		img := filepath.Join(tg.dir, "img")
		os.MkdirAll(img, 0o700)
		r := dump(t, tg.pid, img, "--file-locks")
		want := "holds an exclusive flock on inode"
		if r.code == 0 || !strings.Contains(r.output, want) || !strings.Contains(r.output, filepath.Join(tg.dir, "hidden")) || !strings.Contains(r.output, "not supported") {
			t.Fatalf("dump of a flock only a mapping keeps: want a refusal %q naming the mapping, got %v", want, r)
		}
		t.Logf("refused: %s", lastLines(r.output, 1))
		expectAliveUnstopped(t, tg.pid, "after the refused dump")
		tg.fire()
		tg.waitLog("HELD", 10*time.Second)
		breakLeases(t, tg)
		st, ok := tg.waitExit(10 * time.Second)
		if !ok {
			t.Fatal("locks did not finish")
		}
		tg.expectPassed(st.ExitCode(), "after a refused dump")
		reapOrphans(t)
	})
}

// TestFileLocksSqlite is issue #10: a Python program with an flock, POSIX
// locks and an sqlite database in WAL mode (a row committed before the
// dump, a read transaction open) is refused without --file-locks, then
// dumped and restored twice with it. After each restore another process
// cannot take the program's locks: sqlite's TRUNCATE checkpoint finds the
// reader and stays busy, and closing its connection leaves the WAL alone
// (the dead-man switch is held). Then the restored program commits a row,
// and a new process reads it from disk while the program still runs.
func TestFileLocksSqlite(t *testing.T) {
	requireCryo(t)
	tg := startTarget(t, "pylocks")
	db := filepath.Join(tg.dir, "data.db")
	before := treeLocks(t, tg.dir, tg.pid)
	if len(before) != 6 {
		t.Fatalf("the program holds %d lock ranges, want 6: %v", len(before), before)
	}
	img0 := filepath.Join(tg.dir, "img0")
	os.MkdirAll(img0, 0o700)
	if r := dump(t, tg.pid, img0); r.code == 0 || !strings.Contains(r.output, "dump with --file-locks") {
		t.Fatalf("dump without --file-locks: want a refusal naming a lock, got %v", r)
	}
	expectAliveUnstopped(t, tg.pid, "after the refused dump")
	sameLocks(t, "after the refused dump", treeLocks(t, tg.dir, tg.pid), before)

	outsider := func(what string) {
		t.Helper()
		outsiderCannotTake(t, what, before)
		out := sqliteOutsider(t, db)
		if out != "rows ['before-dump'] checkpoint-busy 1" {
			t.Errorf("%s: an outside sqlite connection saw %q, want the committed row and a busy TRUNCATE checkpoint", what, out)
		}
		if _, err := os.Stat(db + "-wal"); err != nil {
			t.Errorf("%s: the WAL is gone after an outside connection closed: %v", what, err)
		}
	}

	img1 := filepath.Join(tg.dir, "img1")
	dumpLocks(t, tg.pid, img1)
	tg.expectKilled()
	reapOrphans(t)
	if r := runCryo(t, restoreTimeout, restoreArgs(img1, "-d", "--file-locks")...); r.code != 0 {
		t.Fatalf("restore -d --file-locks: %v%s", r, readLog(img1+".restore.log"))
	}
	t.Cleanup(func() { killRestored(t, tg.pid, tg.name) })
	sameLocks(t, "first restore", treeLocks(t, tg.dir, tg.pid), before)
	outsider("first restore")

	img2 := filepath.Join(tg.dir, "img2")
	dumpLocks(t, tg.pid, img2)
	if _, err := waitReaped(tg.pid, exitTimeout); err != nil {
		t.Fatalf("restored pylocks after its dump: %v", err)
	}
	reapOrphans(t)
	cp := startCryo(t, restoreArgs(img2, "--file-locks")...)
	for deadline := time.Now().Add(restoreTimeout); len(treeLocks(t, tg.dir, tg.pid)) < len(before); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("second restore: locks not back after %v: %v", restoreTimeout, cp.res)
		}
	}
	sameLocks(t, "second restore", treeLocks(t, tg.dir, tg.pid), before)
	outsider("second restore")

	tg.fire()
	tg.waitLog("HELD", 10*time.Second)
	if !strings.Contains(tg.log(), "\ncommitted\n") {
		t.Fatal("the restored program did not commit")
	}
	// The program runs on, holding its locks; what it committed must be on
	// disk (the database and its WAL) for a new process to read.
	if got := sqliteRows(t, db); got != "['before-dump', 'after-restore']" {
		t.Errorf("rows on disk while the restored program runs: %s", got)
	}
	touch(t, tg.trigger+".done")
	r := cp.wait(restoreTimeout)
	if r.timedOut {
		t.Fatalf("restored program did not finish: %v", r)
	}
	tg.expectPassed(r.code, "after two dumps and restores")
	if got := sqliteRows(t, db); got != "['before-dump', 'after-restore']" {
		t.Errorf("rows on disk after the program closed the database: %s", got)
	}
}

func python(t *testing.T, script string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "python3", append([]string{"-c", script}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("python3: %v\n%s", err, out)
	}
	return strings.TrimSpace(string(out))
}

// sqliteOutsider connects to db as another process would: it reads the
// rows, asks for a TRUNCATE checkpoint without waiting (which must find
// the restored program's reader and report busy), and closes, which must
// not checkpoint and delete the WAL while the program holds the database.
func sqliteOutsider(t *testing.T, db string) string {
	return python(t, `
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=0)
rows = [r[0] for r in c.execute("SELECT v FROM t ORDER BY rowid")]
busy = c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
c.close()
print("rows", rows, "checkpoint-busy", busy)
`, db)
}

// sqliteRows reads the rows of db from disk in a new process.
func sqliteRows(t *testing.T, db string) string {
	return python(t, `
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], timeout=0)
print([r[0] for r in c.execute("SELECT v FROM t ORDER BY rowid")])
c.close()
`, db)
}

// TestFileLocksImageChecked: file-locks.img is read as untrusted input:
// an entry naming no fd of the process, no process, an unknown kind, a
// bad range or a lease being broken is refused with the file named, before
// any process exists.
func TestFileLocksImageChecked(t *testing.T) {
	requireCryo(t)
	tg := startTarget(t, "locks")
	base := filepath.Join(tg.dir, "img")
	dumpLocks(t, tg.pid, base)
	tg.expectKilled()
	reapOrphans(t)
	edit := func(flag uint32, fn func(e *filelock.FileLockEntry)) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			f := readImageFile(t, filepath.Join(dir, "file-locks.img"))
			for i := range f.entries {
				e := &filelock.FileLockEntry{}
				if err := proto.Unmarshal(f.entries[i], e); err != nil {
					t.Fatal(err)
				}
				if e.GetFlag() == flag {
					f.edit(t, i, e, func() { fn(e) })
					f.write(t)
					return
				}
			}
			t.Fatalf("no entry of flag %d", flag)
		}
	}
	for _, v := range []struct {
		name string
		edit func(t *testing.T, dir string)
		want string
	}{
		{"no-such-fd", edit(1, func(e *filelock.FileLockEntry) { e.Fd = proto.Int32(99) }), fmt.Sprintf("pid %d has no fd 99", tg.pid)},
		{"no-such-process", edit(2, func(e *filelock.FileLockEntry) { e.Pid = proto.Int32(1) }), "pid 1 has no fd 3"},
		{"unknown-kind", edit(4, func(e *filelock.FileLockEntry) { e.Flag = proto.Uint32(16) }), "unknown kind"},
		{"negative-len", edit(1, func(e *filelock.FileLockEntry) { e.Len = proto.Int64(-5) }), "bad range"},
		{"overflowing-range", edit(1, func(e *filelock.FileLockEntry) { e.Start, e.Len = proto.Int64(1<<62), proto.Int64(1<<62+1) }), "bad range"},
		{"flock-with-range", edit(2, func(e *filelock.FileLockEntry) { e.Len = proto.Int64(10) }), "bad range"},
		{"mandatory-flock", edit(2, func(e *filelock.FileLockEntry) { e.Type = proto.Uint32(32 | 64) }), "unknown type"},
		{"breaking-lease", edit(8, func(e *filelock.FileLockEntry) { e.Type = proto.Uint32(e.GetType() | 4) }), "lease being broken"},
	} {
		t.Run(v.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "img")
			if out, err := exec.Command("cp", "-a", base, dir).CombinedOutput(); err != nil {
				t.Fatalf("cp: %v: %s", err, out)
			}
			v.edit(t, dir)
			if err := image.Reseal(dir); err != nil {
				t.Fatal(err)
			}
			r := runCryo(t, restoreTimeout, restoreArgs(dir, "-d", "--file-locks")...)
			if r.code == 0 {
				killRestored(t, tg.pid, tg.name)
				t.Fatalf("restore of the edited image succeeded, want a refusal naming %q", v.want)
			}
			t.Logf("refused: %s", lastLines(r.output, 1))
			if !strings.Contains(r.output, "file-locks.img") || !strings.Contains(r.output, v.want) {
				t.Errorf("refusal does not name file-locks.img and %q: %v", v.want, r)
			}
			reapOrphans(t)
			if runsTarget(tg.pid, tg.name) {
				t.Errorf("the refused restore left pid %d running", tg.pid)
			}
		})
	}
}

// TestFileLockMapped: an exclusive flock held only by a mapping's open
// file description (open, flock, mmap, close: a JVM's perf data file) is
// dumped with --file-locks and restored on the file restore maps; after
// each of two restores the process finds the lock in /proc/locks, a new
// open cannot take it, and it goes when the mapping goes.
func TestFileLockMapped(t *testing.T) {
	requireCryo(t)
	tg := startTarget(t, "mapflock")
	img := filepath.Join(t.TempDir(), "img")
	if r := dump(t, tg.pid, img); r.code == 0 || !strings.Contains(r.output, "holds an exclusive flock through its file; dump with --file-locks") {
		t.Fatalf("dump without --file-locks: want a refusal naming the mapping's flock, got %v", r)
	}
	expectAliveUnstopped(t, tg.pid, "after the refused dump")
	os.RemoveAll(img)
	mustDump(t, tg.pid, img, "--file-locks")
	tg.expectKilled()
	reapOrphans(t)
	restoreDetached(t, tg, img, "--file-locks")
	img2 := filepath.Join(t.TempDir(), "img2")
	mustDump(t, tg.pid, img2, "--file-locks")
	if _, err := waitReaped(tg.pid, exitTimeout); err != nil {
		t.Fatalf("restored mapflock after its dump: %v", err)
	}
	reapOrphans(t)
	w := armState(t, img2, "pre-resume", tg.pid)
	cp := startCryo(t, restoreArgs(img2, "--file-locks")...)
	expectSameState(t, img2, w, cp.done)
	tg.fire()
	res := cp.wait(restoreTimeout)
	tg.expectPassed(res.code, "after two checkpoints")
}
