package inspect

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/procfs"
)

// DeletedOptions select what [Deleted] scans.
type DeletedOptions struct {
	// Pids are the processes to scan. Nil scans every process in /proc
	// and skips those the caller may not read; a pid named here that does
	// not exist or may not be read is an error.
	Pids []int
	// Workers bounds how many processes are read at once. Zero means
	// GOMAXPROCS.
	Workers int
}

// DeletedReport is the result of [Deleted]. Field names in JSON are stable.
type DeletedReport struct {
	// Files are deleted files on filesystems, one per (device, inode),
	// ordered by filesystem, then allocated size (largest first).
	Files []*DeletedFile `json:"files"`
	// Memory are memfds, shared anonymous and System V shared memory:
	// they use RAM (or swap), not disk.
	Memory []*DeletedFile `json:"memory"`
	// Filesystems total, per device, the space only the listed files
	// hold: what closing them would give back to `df`.
	Filesystems []*FSTotal `json:"filesystems"`
	// MemoryTotal totals Memory the same way.
	MemoryTotal FSTotal     `json:"memory_total"`
	NotMeasured NotMeasured `json:"not_measured"`
	Processes   ProcCounts  `json:"processes"`
}

// DeletedFile is one deleted file and who holds it.
type DeletedFile struct {
	Dev   string `json:"dev"`
	Inode uint64 `json:"inode"`
	// Path is the name the file had, without " (deleted)".
	Path string `json:"path"`
	// Kind is "file" for a file on a filesystem, or "memfd",
	// "shared-anon" or "sysv-shm".
	Kind       string     `json:"kind"`
	Filesystem Filesystem `json:"filesystem"`
	// Measured is false when only a mapping holds the file and the caller
	// may not follow map_files: Size, Allocated and Nlink are then 0.
	Measured bool  `json:"measured"`
	Size     int64 `json:"size"`
	// Allocated is st_blocks*512: the space the file occupies.
	Allocated int64 `json:"allocated"`
	// Nlink is the file's link count. It is 0 for a deleted file; more
	// means another name still links it, so closing it frees nothing
	// and it is left out of the totals.
	Nlink   uint64   `json:"nlink"`
	Holders []Holder `json:"holders"`
}

// Holder is one process holding a deleted file.
type Holder struct {
	PID  int    `json:"pid"`
	Comm string `json:"comm"`
	// How is "mapped", "open" or "both".
	How string `json:"how"`
	// Fds are the descriptors open on the file, ascending.
	Fds []int `json:"fds,omitempty"`
	// Mappings counts the VMAs mapping it; MappedBytes is their length.
	Mappings    int    `json:"mappings"`
	MappedBytes uint64 `json:"mapped_bytes"`
}

// FSTotal sums the files of one filesystem.
type FSTotal struct {
	Filesystem Filesystem `json:"filesystem"`
	Files      int        `json:"files"`
	// Size and Allocated sum the measured files that no other name links.
	Size      int64 `json:"size"`
	Allocated int64 `json:"allocated"`
	// NotMeasured counts files whose space is unknown and not in the sums.
	NotMeasured int `json:"not_measured"`
	// StillLinked counts files another name still links.
	StillLinked int `json:"still_linked"`
}

// NotMeasured says what could not be sized and what would allow it.
type NotMeasured struct {
	Files    int `json:"files"`
	Mappings int `json:"mappings"`
	// Capability is set when Files > 0.
	Capability string `json:"capability,omitempty"`
}

// ProcCounts says which processes were looked at.
type ProcCounts struct {
	Scanned int `json:"scanned"`
	// NotPermitted processes belong to other users; reading them needs
	// PtraceCapability.
	NotPermitted int `json:"not_permitted"`
	// Errors are processes whose /proc could not be read for another
	// reason, with the reason.
	Errors []string `json:"errors,omitempty"`
}

type fileKey struct {
	dev procfs.Dev
	ino uint64
}

// held is one file as seen by one process.
type held struct {
	key         fileKey
	path        string
	st          *fileStat
	mappings    int
	mappedBytes uint64
	fds         []int
}

type procResult struct {
	pid   int
	comm  string
	state procErr
	err   error
	files []*held
}

const deletedSuffix = " (deleted)"

// Deleted finds every deleted file held by the processes opts selects. It
// reads /proc/PID/maps (not smaps: smaps walks page tables) and
// /proc/PID/fd, and stats only what is deleted.
func Deleted(opts DeletedOptions) (*DeletedReport, error) {
	pids := opts.Pids
	explicit := pids != nil
	if !explicit {
		var err error
		if pids, err = allPids(); err != nil {
			return nil, fmt.Errorf("list processes: %w", err)
		}
	}
	res := make([]procResult, len(pids))
	var denied atomic.Bool // map_files refused once: it will be refused again
	forEach(len(pids), opts.Workers, func(i int) {
		res[i] = scanDeleted(pids[i], &denied)
	})

	rep := &DeletedReport{Files: []*DeletedFile{}, Memory: []*DeletedFile{}, Filesystems: []*FSTotal{}}
	files := map[fileKey]*DeletedFile{}
	var order []fileKey
	holderPids := map[fileKey][]int{}
	for i := range res {
		r := &res[i]
		switch r.state {
		case procGone:
			if explicit {
				return nil, fmt.Errorf("pid %d: %w", r.pid, ErrNoProcess)
			}
			continue
		case procDenied:
			if explicit {
				return nil, fmt.Errorf("pid %d: %w (reading another user's process needs %s): %w", r.pid, ErrNotPermitted, PtraceCapability, r.err)
			}
			rep.Processes.NotPermitted++
			continue
		case procOther:
			if explicit {
				return nil, fmt.Errorf("pid %d: %w", r.pid, r.err)
			}
			rep.Processes.Errors = append(rep.Processes.Errors, fmt.Sprintf("pid %d: %v", r.pid, r.err))
			continue
		}
		rep.Processes.Scanned++
		for _, h := range r.files {
			f, ok := files[h.key]
			if !ok {
				f = &DeletedFile{Dev: h.key.dev.String(), Inode: h.key.ino, Path: h.path}
				files[h.key] = f
				order = append(order, h.key)
			}
			if h.st != nil && !f.Measured {
				f.Measured, f.Size, f.Allocated, f.Nlink = true, h.st.Size, h.st.Blocks*512, h.st.Nlink
			}
			how := "mapped"
			switch {
			case h.mappings > 0 && len(h.fds) > 0:
				how = "both"
			case h.mappings == 0:
				how = "open"
			}
			sort.Ints(h.fds)
			f.Holders = append(f.Holders, Holder{PID: r.pid, Comm: r.comm, How: how, Fds: h.fds, Mappings: h.mappings, MappedBytes: h.mappedBytes})
			holderPids[h.key] = append(holderPids[h.key], r.pid)
		}
	}

	mr := newMountResolver()
	totals := map[procfs.Dev]*FSTotal{}
	for _, k := range order {
		f := files[k]
		if !confirmDeleted(f, k, holderPids[k]) {
			continue
		}
		fsys, mounted := mr.lookup(k.dev, holderPids[k])
		f.Filesystem = fsys
		f.Kind = memoryKind(f.Path, mounted)
		t := &rep.MemoryTotal
		if f.Kind == "" {
			f.Kind = "file"
			rep.Files = append(rep.Files, f)
			if t = totals[k.dev]; t == nil {
				t = &FSTotal{Filesystem: fsys}
				totals[k.dev] = t
				rep.Filesystems = append(rep.Filesystems, t)
			}
		} else {
			rep.Memory = append(rep.Memory, f)
		}
		t.Files++
		switch {
		case !f.Measured:
			t.NotMeasured++
			rep.NotMeasured.Files++
			for _, h := range f.Holders {
				rep.NotMeasured.Mappings += h.Mappings
			}
		case f.Nlink > 0:
			t.StillLinked++
		default:
			t.Size += f.Size
			t.Allocated += f.Allocated
		}
	}
	if rep.NotMeasured.Files > 0 {
		rep.NotMeasured.Capability = MapFilesCapability
	}
	sortFiles(rep.Files)
	sortFiles(rep.Memory)
	sort.Slice(rep.Filesystems, func(i, j int) bool {
		return rep.Filesystems[i].Filesystem.MountPoint < rep.Filesystems[j].Filesystem.MountPoint
	})
	return rep, nil
}

func sortFiles(fs []*DeletedFile) {
	sort.SliceStable(fs, func(i, j int) bool {
		a, b := fs[i], fs[j]
		if a.Filesystem.MountPoint != b.Filesystem.MountPoint {
			return a.Filesystem.MountPoint < b.Filesystem.MountPoint
		}
		if a.Allocated != b.Allocated {
			return a.Allocated > b.Allocated
		}
		if a.Path != b.Path {
			return a.Path < b.Path
		}
		return a.Inode < b.Inode
	})
}

// confirmDeleted rules out the two ways " (deleted)" misleads. A measured
// file with no links is deleted. Otherwise the name may be a file's real
// name, suffix included, which the kernel prints unchanged: if a file of
// that literal name has the same inode, it was never deleted. Failing that,
// a measured file with links was unlinked from the name shown but is still
// reachable by another (a hard link), and is kept with its Nlink.
func confirmDeleted(f *DeletedFile, k fileKey, pids []int) bool {
	if f.Measured && f.Nlink == 0 {
		return true
	}
	for _, pid := range pids {
		st, err := statPath("/proc/" + strconv.Itoa(pid) + "/root" + f.Path + deletedSuffix)
		if err != nil {
			continue
		}
		if st.Dev == k.dev && st.Ino == k.ino {
			return false
		}
		break
	}
	return true
}

func scanDeleted(pid int, denied *atomic.Bool) procResult {
	r := procResult{pid: pid}
	mapsPath := "/proc/" + strconv.Itoa(pid) + "/maps"
	data, err := procfs.ReadFileBounded(mapsPath, procfs.MaxMapsSize)
	if r.state = classify(err); r.state != procOK {
		r.err = err
		return r
	}
	byKey := map[fileKey]*held{}
	add := func(k fileKey, path string) *held {
		h := byKey[k]
		if h == nil {
			h = &held{key: k, path: path}
			byKey[k] = h
			r.files = append(r.files, h)
		}
		return h
	}
	// Most processes hold nothing deleted; skip parsing their maps.
	if bytes.Contains(data, []byte(deletedSuffix)) {
		ms, err := procfs.ParseMaps(data)
		if err != nil {
			r.state, r.err = procOther, fmt.Errorf("%s: %w", mapsPath, err)
			return r
		}
		// The same file mapped several times (an ELF's segments) is
		// stat'ed once: group by the dev:inode maps prints.
		seen := map[fileKey]*held{}
		for i := range ms {
			m := &ms[i]
			if !m.Deleted || m.Kind != procfs.KindFile {
				continue
			}
			mk := fileKey{m.Dev, m.Inode}
			h := seen[mk]
			if h == nil {
				k := mk
				var st *fileStat
				if !denied.Load() {
					s, err := statPath(mapFilesPath(pid, m))
					switch {
					case err == nil:
						st, k = &s, fileKey{s.Dev, s.Ino}
					case errors.Is(err, unix.EPERM):
						denied.Store(true)
					}
				}
				h = add(k, m.Path)
				if st != nil {
					h.st = st
				}
				seen[mk] = h
			}
			h.mappings++
			h.mappedBytes += m.Len()
		}
	}
	scanFds(pid, add)
	if len(r.files) > 0 {
		r.comm = comm(pid)
	}
	return r
}

// scanFds adds the deleted files pid holds open. A process may close an fd
// between readdir and readlink; such fds are skipped.
func scanFds(pid int, add func(fileKey, string) *held) {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd/"
	d, err := os.Open(dir)
	if err != nil {
		return
	}
	names, _ := d.Readdirnames(-1)
	d.Close()
	buf := make([]byte, unix.PathMax)
	for _, n := range names {
		p := dir + n
		nb, err := unix.Readlink(p, buf)
		if err != nil || nb == 0 || buf[0] != '/' || !bytes.HasSuffix(buf[:nb], []byte(deletedSuffix)) {
			continue
		}
		fd, err := strconv.Atoi(n)
		if err != nil {
			continue
		}
		st, err := statPath(p)
		if err != nil {
			continue
		}
		h := add(fileKey{st.Dev, st.Ino}, strings.TrimSuffix(string(buf[:nb]), deletedSuffix))
		if h.st == nil {
			h.st = &st
		}
		h.fds = append(h.fds, fd)
	}
}
