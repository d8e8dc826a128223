package procfs

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"syscall"
	"testing"
)

// These tests read /proc of the test process itself and check what the
// parsers return against what Go knows independently.

//go:noinline
func liveMarker() int { return 42 }

func TestLiveSelf(t *testing.T) {
	pid := os.Getpid()

	st, err := StatPid(pid)
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "stat.Pid", st.Pid, pid)
	eq(t, "stat.PPid", st.PPid, os.Getppid())
	eq(t, "stat.NumFields", st.NumFields, 52)
	comm := filepath.Base(os.Args[0])
	if len(comm) > 15 {
		comm = comm[:15]
	}
	eq(t, "stat.Comm", st.Comm, comm)

	// The thread reading its own task stat is running; the process's
	// stat shows the main thread, which may be parked.
	runtime.LockOSThread()
	tid := syscall.Gettid()
	tst, err := TaskStatPid(pid, tid)
	runtime.UnlockOSThread()
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "task stat Pid", tst.Pid, tid)
	eq(t, "task stat State", tst.State, byte('R'))

	status, err := StatusPid(pid)
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "status.Pid", status.Pid, pid)
	eq(t, "status.Tgid", status.Tgid, pid)
	eq(t, "status.Name", status.Name, st.Comm)
	eq(t, "status.Uid", status.Uid[0], uint32(os.Getuid()))
	eq(t, "status.Euid", status.Uid[1], uint32(os.Geteuid()))
	eq(t, "status.Gid", status.Gid[0], uint32(os.Getgid()))
	eq(t, "status.NSpid last", status.NSpid[len(status.NSpid)-1] > 0, true)
	if status.Threads < 1 {
		t.Errorf("status.Threads = %d", status.Threads)
	}

	maps, err := SmapsPid(pid)
	if err != nil {
		t.Fatal(err)
	}
	x := new([64]byte)
	heapAddr := uint64(reflect.ValueOf(x).Pointer())
	codeAddr := uint64(reflect.ValueOf(liveMarker).Pointer())
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var heapMap, codeMap, vdso *Mapping
	for i := range maps {
		m := &maps[i]
		if m.Contains(heapAddr) {
			heapMap = m
		}
		if m.Contains(codeAddr) {
			codeMap = m
		}
		if m.Kind == KindVdso {
			vdso = m
		}
		if i > 0 && maps[i-1].End > m.Start {
			t.Errorf("mappings overlap or are unsorted: %#x-%#x then %#x", maps[i-1].Start, maps[i-1].End, m.Start)
		}
		if m.Size != m.Len() {
			t.Errorf("%#x: Size %d != %d", m.Start, m.Size, m.Len())
		}
	}
	if heapMap == nil || !heapMap.Perms.Read || !heapMap.Perms.Write || !heapMap.VmFlags.Has(VmRead|VmWrite) {
		t.Errorf("heap object %#x: mapping %+v", heapAddr, heapMap)
	}
	if codeMap == nil || !codeMap.Perms.Exec || codeMap.Path != exe || codeMap.Kind != KindFile {
		t.Errorf("code %#x (exe %s): mapping %+v", codeAddr, exe, codeMap)
	}
	if vdso == nil {
		t.Fatal("no [vdso] mapping")
	}

	auxv, err := AuxvPid(pid)
	if err != nil {
		t.Fatal(err)
	}
	ehdr, _ := AuxvValue(auxv, AT_SYSINFO_EHDR)
	eq(t, "AT_SYSINFO_EHDR == [vdso]", ehdr, vdso.Start)
	pg, _ := AuxvValue(auxv, AT_PAGESZ)
	eq(t, "AT_PAGESZ", pg, uint64(os.Getpagesize()))

	plain, err := MapsPid(pid)
	if err != nil {
		t.Fatal(err)
	}
	if len(plain) == 0 {
		t.Error("maps is empty")
	}

	mounts, err := MountinfoPid(pid)
	if err != nil {
		t.Fatal(err)
	}
	mountIDs := map[int]Mount{}
	for _, m := range mounts {
		mountIDs[m.ID] = m
	}
	var sawProc bool
	for _, m := range mounts {
		if m.MountPoint == "/proc" && m.FSType == "proc" {
			sawProc = true
		}
	}
	if !sawProc {
		t.Error("no proc mount on /proc in mountinfo")
	}

	// An open file's fdinfo: position, flags, inode and mount must match.
	f, err := os.Open(filepath.Join("testdata", "target.smaps"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.CopyN(io.Discard, f, 10); err != nil {
		t.Fatal(err)
	}
	fi, err := FdinfoPid(pid, int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	osfi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	sys := osfi.Sys().(*syscall.Stat_t)
	eq(t, "fdinfo.Pos", fi.Pos, int64(10))
	eq(t, "fdinfo.Ino", fi.Ino, sys.Ino)
	eq(t, "fdinfo O_CLOEXEC", fi.Flags&syscall.O_CLOEXEC != 0, true)
	eq(t, "fdinfo O_ACCMODE", fi.Flags&syscall.O_ACCMODE, uint32(syscall.O_RDONLY))
	mnt, ok := mountIDs[fi.MntID]
	if !ok {
		t.Errorf("fdinfo mnt_id %d not in mountinfo", fi.MntID)
	} else {
		// glibc's makedev encoding of st_dev.
		ma, mi := uint64(mnt.Dev.Major), uint64(mnt.Dev.Minor)
		dev := (ma&0xfff)<<8 | (ma&^0xfff)<<32 | mi&0xff | (mi&^0xff)<<12
		eq(t, "mount dev == st_dev", dev, sys.Dev)
	}

	if _, err := TimersPid(pid); err != nil {
		t.Error(err)
	}
}

func TestLiveReadFileBounded(t *testing.T) {
	_, err := ReadFileBounded("/proc/self/smaps", 100)
	if !errors.Is(err, ErrTooLarge) {
		t.Errorf("small limit: %v, want ErrTooLarge", err)
	}
	b, err := ReadFileBounded("/proc/self/stat", MaxSmallFileSize)
	if err != nil || len(b) == 0 || b[len(b)-1] != '\n' {
		t.Errorf("stat: %q, %v", b, err)
	}
	// Exactly at the limit is allowed.
	want := readTestdata(t, "target.smaps")
	b, err = ReadFileBounded(filepath.Join("testdata", "target.smaps"), int64(len(want)))
	if err != nil || string(b) != string(want) {
		t.Errorf("at limit: %d bytes, %v", len(b), err)
	}
	_, err = ReadFileBounded(filepath.Join("testdata", "target.smaps"), int64(len(want)-1))
	if !errors.Is(err, ErrTooLarge) {
		t.Errorf("one over: %v", err)
	}
	_, err = StatPid(1 << 30)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing pid: %v, want fs.ErrNotExist", err)
	}
	_, err = ReadFileBounded("/proc/self/stat", -1)
	if err == nil {
		t.Error("negative limit accepted")
	}
}

// TestLiveParseErrorNamesPath: errors from the Pid conveniences name the
// /proc path, not the base name.
func TestLiveParseErrorNamesPath(t *testing.T) {
	_, err := parseStat("/proc/412/stat", []byte("garbage"))
	var pe *ParseError
	if !errors.As(err, &pe) || pe.File != "/proc/412/stat" {
		t.Fatalf("%v", err)
	}
	eq(t, "message", pe.Error(), `/proc/412/stat:1 (byte 0): no (comm) in "garbage"`)
}

// TestLiveChildren: a child this process started is listed under one of
// its threads (the one that forked it), and under no other.
func TestLiveChildren(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Skipf("no sleep to start: %v", err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, e := range tasks {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			t.Fatalf("task %q", e.Name())
		}
		cs, err := TaskChildrenPid(os.Getpid(), tid)
		if errors.Is(err, fs.ErrNotExist) {
			continue // the thread exited, or no CONFIG_PROC_CHILDREN: counted below
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			if c == cmd.Process.Pid {
				found++
			}
		}
	}
	if found != 1 {
		t.Errorf("child %d listed under %d threads, want 1", cmd.Process.Pid, found)
	}
}

// TestLiveLimits: /proc/self/limits says what getrlimit says.
func TestLiveLimits(t *testing.T) {
	ls, err := LimitsPid(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	const rlimNlimits = 16
	if len(ls) != rlimNlimits {
		t.Fatalf("%d limits, want %d", len(ls), rlimNlimits)
	}
	for r := range ls {
		var want syscall.Rlimit
		if err := syscall.Getrlimit(r, &want); err != nil {
			t.Fatal(err)
		}
		eq(t, "limit "+strconv.Itoa(r), ls[r], Rlimit{want.Cur, want.Max})
	}
}
