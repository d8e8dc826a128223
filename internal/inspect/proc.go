package inspect

import (
	"errors"
	"io/fs"
	"os"
	"runtime"
	"sort"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/procfs"
)

// ErrNoProcess is matched (errors.Is) when a pid named by the caller does
// not exist.
var ErrNoProcess = errors.New("no such process")

// ErrNotPermitted is matched when the caller may not read a process it
// named (another user's process without CAP_SYS_PTRACE).
var ErrNotPermitted = errors.New("not permitted to inspect process")

// MapFilesCapability names what following /proc/PID/map_files links needs
// (fs/proc/base.c proc_map_files_get_link).
const MapFilesCapability = "CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN in the initial user namespace"

// PtraceCapability names what reading another user's /proc/PID/maps needs.
const PtraceCapability = "CAP_SYS_PTRACE"

// allPids lists the thread-group ids in /proc. Threads share their
// leader's mm and, nearly always, its fd table, so they are not listed.
func allPids() ([]int, error) {
	f, err := os.Open("/proc")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	pids := make([]int, 0, len(names))
	for _, n := range names {
		if n[0] < '0' || n[0] > '9' {
			continue
		}
		if p, err := strconv.Atoi(n); err == nil && p > 0 {
			pids = append(pids, p)
		}
	}
	sort.Ints(pids)
	return pids, nil
}

// procErr classifies an error from reading /proc/PID/...: gone (the process
// exited, or is a zombie whose mm is gone), denied, or something else.
type procErr int

const (
	procOK procErr = iota
	procGone
	procDenied
	procOther
)

func classify(err error) procErr {
	switch {
	case err == nil:
		return procOK
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, unix.ESRCH):
		return procGone
	case errors.Is(err, fs.ErrPermission), errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		return procDenied
	}
	return procOther
}

// forEach runs fn for every index of n on a bounded pool of workers. Reading
// /proc is syscall-bound; more workers than CPUs only adds contention on the
// kernel's locks.
func forEach(n, workers int, fn func(i int)) {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	workers = min(workers, n)
	var wg sync.WaitGroup
	next := make(chan int, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				fn(i)
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
}

// fileStat is what stat(2) says of a held file.
type fileStat struct {
	Dev    procfs.Dev
	Ino    uint64
	Size   int64
	Blocks int64 // 512-byte units, as st_blocks
	Nlink  uint64
}

func statPath(path string) (fileStat, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return fileStat{}, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	return fileStat{
		Dev:    procfs.Dev{Major: unix.Major(st.Dev), Minor: unix.Minor(st.Dev)},
		Ino:    st.Ino,
		Size:   st.Size,
		Blocks: st.Blocks,
		Nlink:  uint64(st.Nlink),
	}, nil
}

func comm(pid int) string {
	st, err := procfs.StatusPid(pid)
	if err != nil {
		return ""
	}
	return st.Name
}

func mapFilesPath(pid int, m *procfs.Mapping) string {
	return "/proc/" + strconv.Itoa(pid) + "/map_files/" + strconv.FormatUint(m.Start, 16) + "-" + strconv.FormatUint(m.End, 16)
}

// Filesystem is the mount through which a device's files are seen.
type Filesystem struct {
	Dev        string `json:"dev"`
	MountPoint string `json:"mount_point"`
	FSType     string `json:"fs_type"`
	Source     string `json:"source"`
}

// mounts maps a device number to the mount that best shows it: the one
// mounting the filesystem's root, else the shortest mount point. Bind
// mounts of subdirectories share the device, and `df` names the root.
type mounts map[procfs.Dev]*procfs.Mount

func newMounts(ms []procfs.Mount) mounts {
	t := make(mounts, len(ms))
	for i := range ms {
		m := &ms[i]
		old, ok := t[m.Dev]
		if !ok || better(m, old) {
			t[m.Dev] = m
		}
	}
	return t
}

func better(a, b *procfs.Mount) bool {
	if (a.Root == "/") != (b.Root == "/") {
		return a.Root == "/"
	}
	return len(a.MountPoint) < len(b.MountPoint)
}

// mountResolver finds mounts by device, first in the caller's mount
// namespace (what `df` shows), then in a holder's.
type mountResolver struct {
	self   mounts
	byPid  map[int]mounts
	selfOK bool
}

func newMountResolver() *mountResolver {
	r := &mountResolver{byPid: map[int]mounts{}}
	if ms, err := procfs.MountinfoPid(os.Getpid()); err == nil {
		r.self, r.selfOK = newMounts(ms), true
	}
	return r
}

// lookup returns the filesystem of dev and whether any mount shows it.
// Devices no mount shows are the kernel's internal mounts (shmem behind
// shared anonymous memory and memfds, hugetlbfs) or lazily unmounted ones.
func (r *mountResolver) lookup(dev procfs.Dev, pids []int) (Filesystem, bool) {
	if m, ok := r.self[dev]; ok {
		return fsOf(dev, m), true
	}
	for _, pid := range pids {
		t, ok := r.byPid[pid]
		if !ok {
			if ms, err := procfs.MountinfoPid(pid); err == nil {
				t = newMounts(ms)
			}
			r.byPid[pid] = t
		}
		if m, ok := t[dev]; ok {
			return fsOf(dev, m), true
		}
	}
	return Filesystem{Dev: dev.String()}, false
}

func fsOf(dev procfs.Dev, m *procfs.Mount) Filesystem {
	return Filesystem{Dev: dev.String(), MountPoint: m.MountPoint, FSType: m.FSType, Source: m.Source}
}

// memoryKind says whether a deleted file is memory rather than disk: shared
// anonymous memory ("/dev/zero (deleted)"), a memfd ("/memfd:NAME
// (deleted)") or System V shared memory ("/SYSV%08x (deleted)"). The kernel
// backs them with files on internal mounts no mount namespace shows, which
// is what tells them from a disk file that happens to have such a name.
func memoryKind(path string, mounted bool) string {
	if mounted {
		return ""
	}
	switch {
	case len(path) >= 7 && path[:7] == "/memfd:":
		return "memfd"
	case path == "/dev/zero":
		return "shared-anon"
	case len(path) >= 5 && path[:5] == "/SYSV":
		return "sysv-shm"
	}
	return ""
}
