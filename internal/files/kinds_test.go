package files

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/inventory"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pstree"

	"github.com/cryo-project/cryo/internal/image"
	"github.com/cryo-project/cryo/internal/imageset"
)

func TestMain(m *testing.M) {
	before := openFds()
	code := m.Run()
	for fd, link := range openFds() {
		if _, ok := before[fd]; !ok {
			fmt.Fprintf(os.Stderr, "leaked fd %d -> %s\n", fd, link)
			code = 1
		}
	}
	os.Exit(code)
}

func openFds() map[int]string {
	out := map[int]string{}
	ents, _ := os.ReadDir("/proc/self/fd")
	for _, e := range ents {
		if fd, err := strconv.Atoi(e.Name()); err == nil {
			out[fd], _ = os.Readlink("/proc/self/fd/" + e.Name())
		}
	}
	return out
}

// Every kind has its own fd_types, is found by it, and has both halves
// (but those whose entries only other kinds name) and a description.
func TestTable(t *testing.T) {
	seen := map[fdinfo.FdTypes]string{}
	for _, k := range Kinds() {
		if other, dup := seen[k.Type]; dup {
			t.Errorf("kinds %q and %q both have type %v", other, k.Name, k.Type)
		}
		seen[k.Type] = k.Name
		if ByType(k.Type) != k {
			t.Errorf("ByType(%v) is not kind %q", k.Type, k.Name)
		}
		if k.Dump == nil || k.Restore == nil || k.Describe == nil {
			t.Errorf("kind %q lacks a dump half, a restore half or a description", k.Name)
		}
	}
}

// testFd is a real fd of one kind, made by this process, with what must
// hold of its copy made by the kind's restore half.
type testFd struct {
	kind  *Kind
	fd    int
	check func(t *testing.T, nfd int) // nil: only the fdinfo comparison
	// noOpen: the restore half cannot run here (a terminal opens cryo's own).
	noOpen bool
}

// TestRoundTrip makes a real fd of every kind in this process, dumps each
// with its kind's dump half into a real image, reads the image back, and
// opens each again with its kind's restore half, here, in this process
// (localProc): the entry must carry the kind's fd_types, the new fd must
// show the same fdinfo (but position, inode and mount) and hold the same
// data. Nothing is traced: this is the two halves of every kind against
// each other, and the e2e tests do the rest.
func TestRoundTrip(t *testing.T) {
	tmp := t.TempDir()
	var fds []*testFd
	add := func(k *Kind, fd int, err error, check func(*testing.T, int)) *testFd {
		t.Helper()
		if err != nil {
			t.Fatalf("make a %s: %v", k.Name, err)
		}
		t.Cleanup(func() { unix.Close(fd) })
		f := &testFd{kind: k, fd: fd, check: check}
		fds = append(fds, f)
		return f
	}
	readIs := func(want string) func(*testing.T, int) {
		return func(t *testing.T, nfd int) {
			// Never block: an empty copy must fail the test, not hang it.
			if err := unix.SetNonblock(nfd, true); err != nil {
				t.Fatal(err)
			}
			b := make([]byte, 64)
			n, err := unix.Read(nfd, b)
			if err != nil || string(b[:n]) != want {
				t.Errorf("read %q, %v; want %q", b[:max(n, 0)], err, want)
			}
		}
	}

	mfd, err := unix.MemfdCreate("cryo-files-test", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err == nil {
		_, err = unix.Pwrite(mfd, []byte("memfd contents"), 0)
	}
	add(&memfdKind, mfd, err, func(t *testing.T, nfd int) {
		b := make([]byte, 14)
		if n, err := unix.Pread(nfd, b, 0); err != nil || string(b[:n]) != "memfd contents" {
			t.Errorf("memfd holds %q, %v", b[:max(n, 0)], err)
		}
	})
	p := filepath.Join(tmp, "reg")
	os.WriteFile(p, []byte("regular"), 0o600)
	rfd, err := unix.Open(p, unix.O_RDWR|unix.O_APPEND|unix.O_CLOEXEC, 0)
	add(&regKind, rfd, err, nil)
	dfd, err := unix.Open(tmp, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	add(&regKind, dfd, err, nil)
	nfd, err := unix.Open(os.DevNull, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	add(&regKind, nfd, err, nil)
	// A pty slave whose master is not dumped: an inherited terminal (--shell-job).
	if mfd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0); err == nil {
		defer unix.Close(mfd)
		n, err := unix.IoctlGetInt(mfd, unix.TIOCGPTN)
		if err == nil {
			err = unix.IoctlSetPointerInt(mfd, unix.TIOCSPTLCK, 0)
		}
		sfd := -1
		if err == nil {
			sfd, err = unix.Open(fmt.Sprintf("/dev/pts/%d", n), unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
		}
		add(&ttyKind, sfd, err, nil).noOpen = true
	}
	var pp [2]int
	err = unix.Pipe2(pp[:], unix.O_CLOEXEC|unix.O_NONBLOCK)
	if err == nil {
		_, err = unix.Write(pp[1], []byte("in the pipe"))
	}
	add(&pipeKind, pp[0], err, readIs("in the pipe"))
	add(&pipeKind, pp[1], nil, nil)
	fifo := filepath.Join(tmp, "fifo")
	err = unix.Mkfifo(fifo, 0o600)
	var ffd int
	if err == nil {
		ffd, err = unix.Open(fifo, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	}
	if err == nil {
		_, err = unix.Write(ffd, []byte("in the fifo"))
	}
	add(&fifoKind, ffd, err, readIs("in the fifo"))
	efd, err := unix.Eventfd(5, unix.EFD_SEMAPHORE|unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	add(&eventfdKind, efd, err, nil)
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err == nil {
		err = unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, efd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLET, Fd: 77})
	}
	add(&epollKind, epfd, err, nil)
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err == nil {
		for _, m := range []string{"one", "two"} {
			if _, err = unix.Write(sp[0], []byte(m)); err != nil {
				break
			}
		}
	}
	add(&unixKind, sp[0], err, nil)
	add(&unixKind, sp[1], nil, func(t *testing.T, nfd int) {
		for _, want := range []string{"one", "two"} { // boundaries kept
			b := make([]byte, 64)
			n, _, err := unix.Recvfrom(nfd, b, unix.MSG_DONTWAIT)
			if err != nil || string(b[:n]) != want {
				t.Errorf("message %q, %v; want %q", b[:max(n, 0)], err, want)
			}
		}
	})
	ifd6, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err == nil {
		err = unix.SetsockoptInt(ifd6, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	}
	add(&inetKind, ifd6, err, func(t *testing.T, nfd int) {
		v, err := unix.GetsockoptInt(nfd, unix.IPPROTO_TCP, unix.TCP_NODELAY)
		if err != nil || v != 1 {
			t.Errorf("TCP_NODELAY %d, %v; want 1", v, err)
		}
	})
	var mask unix.Sigset_t
	mask.Val[0] = 1<<(unix.SIGUSR1-1) | 1<<(unix.SIGUSR2-1)
	sfd, err := unix.Signalfd(-1, &mask, unix.SFD_NONBLOCK|unix.SFD_CLOEXEC)
	add(&signalfdKind, sfd, err, nil)
	tfd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_CLOEXEC)
	if err == nil {
		err = unix.TimerfdSettime(tfd, 0, &unix.ItimerSpec{Value: unix.Timespec{Sec: 100}, Interval: unix.Timespec{Sec: 7}}, nil)
	}
	add(&timerfdKind, tfd, err, func(t *testing.T, nfd int) {
		var cur unix.ItimerSpec
		if err := unix.TimerfdGettime(nfd, &cur); err != nil || cur.Interval.Sec != 7 || cur.Value.Sec < 90 || cur.Value.Sec > 100 {
			t.Errorf("timer %+v, %v; want every 7 s, about 100 s left", cur, err)
		}
	})
	ifd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err == nil {
		_, err = unix.InotifyAddWatch(ifd, tmp, unix.IN_CREATE|unix.IN_DELETE)
	}
	add(&inotifyKind, ifd, err, nil)
	pfd, err := unix.PidfdOpen(os.Getpid(), 0)
	add(&pidfdKind, pfd, err, nil)

	// Every kind of the table is made above.
	for _, k := range Kinds() {
		found := false
		for _, f := range fds {
			found = found || f.kind == k
		}
		if !found {
			t.Errorf("kind %q has no fd in this test", k.Name)
		}
	}

	pid := os.Getpid()
	d := NewDumper(DumpOptions{Root: pid, ShellJob: true})
	defer d.Close()
	var infos []*fdinfo.FdinfoEntry
	for _, f := range fds {
		e, err := d.dumpFd(pid, f.fd, fmt.Sprintf("/proc/%d/fd/%d", pid, f.fd), -1)
		if err != nil {
			t.Fatalf("dump %s (fd %d): %v", f.kind.Name, f.fd, err)
		}
		if got := d.Entry(e.GetId()).GetType(); got != f.kind.Type {
			t.Errorf("%s: entry of type %v, want %v", f.kind.Name, got, f.kind.Type)
		}
		infos = append(infos, e)
	}
	if err := d.Check(); err != nil {
		t.Fatal(err)
	}
	set := writeImage(t, d, infos, pid)

	r, err := NewRestorer(set, RestoreOptions{ShellJob: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Cleanup()
	lp := newLocalProc()
	r.seen(lp)
	// A FIFO is one object by its path: what the dumped process had queued
	// in it is written in again by the restore, so the dumped fd, still
	// open here, must not keep its copy.
	drain := make([]byte, 64)
	unix.Read(ffd, drain)
	opened := map[opener]map[uint64]*fdinfo.FileEntry{}
	made := map[*testFd]int{}
	for i, f := range fds {
		e := set.Files[infos[i].GetId()]
		if desc := Describe(e); desc.Path == "" {
			t.Errorf("%s: no description", f.kind.Name)
		}
		if f.noOpen {
			continue
		}
		k := r.kinds[e.GetType()]
		got, err := k.open(r, lp, e)
		if err != nil {
			t.Errorf("restore %s (fd %d): %v", f.kind.Name, f.fd, err)
			continue
		}
		nfd := int(got)
		t.Cleanup(func() { unix.Close(nfd) })
		if opened[k] == nil {
			opened[k] = map[uint64]*fdinfo.FileEntry{}
		}
		opened[k][uint64(nfd)] = e
		made[f] = nfd
	}
	for k, fds := range opened {
		if pd, ok := k.(processDoner); ok {
			if err := pd.processDone(r, lp, fds); err != nil {
				t.Errorf("%T: %v", k, err)
			}
		}
	}
	for _, f := range fds {
		nfd, ok := made[f]
		if !ok {
			continue
		}
		if a, b := fdinfoOf(t, f.fd), fdinfoOf(t, nfd); a != b {
			t.Errorf("%s: fdinfo differs:\n  dumped   %q\n  restored %q", f.kind.Name, a, b)
		}
		if f.check != nil {
			f.check(t, nfd)
		}
	}
	if err := r.Finish(); err != nil {
		t.Fatal(err)
	}
}

// fdinfoOf is fd's fdinfo without what differs for any new open: position,
// inode, mount, the timer's running value, an eventfd's idr number,
// close-on-exec.
func fdinfoOf(t *testing.T, fd int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", fd))
	if err != nil {
		t.Fatal(err)
	}
	var keep []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		k, v, _ := strings.Cut(l, ":")
		switch k {
		case "pos", "ino", "mnt_id", "it_value", "eventfd-id":
			continue
		case "flags":
			f, _ := strconv.ParseUint(strings.TrimSpace(v), 8, 32)
			l = fmt.Sprintf("flags: %o", f&^unix.O_CLOEXEC)
		}
		// inotify and epoll lines name the watched inode by its own
		// ino and sdev, which are the same file's: keep them.
		keep = append(keep, l)
	}
	return strings.Join(keep, "\n")
}

// writeImage commits files.img and the kinds' side data into a real image
// directory and reads it back as a Set for one process, pid, holding fds.
func writeImage(t *testing.T, d *Dumper, fds []*fdinfo.FdinfoEntry, pid int) *imageset.Set {
	t.Helper()
	path := filepath.Join(t.TempDir(), "img")
	dir, err := image.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	side := &Side{Dir: dir, Shmem: func(shmid uint32, src *os.File, size int64) error {
		pages := (size + pageSize - 1) / pageSize
		b := make([]byte, pages*pageSize)
		if _, err := src.ReadAt(b[:size], 0); err != nil {
			return err
		}
		pagesID := 1000 + shmid
		if err := imageset.Write(dir, imageset.PagemapShmem(shmid), &pagemap.PagemapHead{PagesId: proto.Uint32(pagesID)},
			&pagemap.PagemapEntry{Vaddr: proto.Uint64(0), NrPages: proto.Uint64(uint64(pages)), CompatNrPages: proto.Uint32(uint32(pages))}); err != nil {
			return err
		}
		pw, err := dir.CreatePages(pagesID)
		if err != nil {
			return err
		}
		if _, err := pw.Write(b); err != nil {
			pw.Close()
			return err
		}
		return pw.Close()
	}}
	if err := d.Write(side); err != nil {
		t.Fatal(err)
	}
	if err := imageset.Write(dir, imageset.Inventory, &inventory.InventoryEntry{ImgVersion: proto.Uint32(2)}); err != nil {
		t.Fatal(err)
	}
	if err := dir.Commit(); err != nil {
		t.Fatal(err)
	}
	rd, err := image.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	set := &imageset.Set{Dir: rd, Files: map[uint32]*fdinfo.FileEntry{},
		Procs: []*imageset.Proc{{Tree: &pstree.PstreeEntry{Pid: proto.Uint32(uint32(pid))}, Fds: fds}}}
	entries, err := imageset.ReadAll(rd, imageset.Files, func() *fdinfo.FileEntry { return &fdinfo.FileEntry{} })
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		set.Files[e.GetId()] = e
	}
	return set
}
