package inspect

import (
	"fmt"
	"sort"
	"strconv"

	"github.com/cryo-project/cryo/internal/procfs"
)

// MapsOptions select what [Maps] does.
type MapsOptions struct {
	// Workers bounds how many other processes are read at once when
	// looking for sharers. Zero means GOMAXPROCS.
	Workers int
}

// MapsReport describes one process's mappings. Field names in JSON are
// stable.
type MapsReport struct {
	PID      int        `json:"pid"`
	Comm     string     `json:"comm"`
	Mappings []*MapInfo `json:"mappings"`
	Total    MapTotals  `json:"total"`
	// SharingScan says how many other processes were compared; sharers
	// among those the caller may not read are not found.
	SharingScan ProcCounts `json:"sharing_scan"`
}

// MapTotals sums the mappings.
type MapTotals struct {
	Size uint64 `json:"size"`
	Rss  uint64 `json:"rss"`
	Pss  uint64 `json:"pss"`
	Swap uint64 `json:"swap"`
}

// MapInfo is one mapping. Addresses are hex strings because JSON numbers
// lose precision above 2^53.
type MapInfo struct {
	Start  string `json:"start"`
	End    string `json:"end"`
	Size   uint64 `json:"size"`
	Perms  string `json:"perms"`
	Offset uint64 `json:"offset"`
	Dev    string `json:"dev"`
	Inode  uint64 `json:"inode"`
	// Backing is "file", "anon", "heap", "stack", "shared-anon",
	// "memfd", "sysv-shm", "anon-named", "anon_shmem-named", "vdso",
	// "vvar", "vvar_vclock", "vsyscall", "uprobes" or "special".
	Backing string `json:"backing"`
	// Path is the file's name (without " (deleted)"), the memfd's
	// "/memfd:NAME", or the bracketed name of a special mapping.
	Path    string `json:"path,omitempty"`
	Deleted bool   `json:"deleted"`
	// Shared is the 's' of the permissions (MAP_SHARED).
	Shared bool   `json:"shared"`
	Rss    uint64 `json:"rss"`
	Pss    uint64 `json:"pss"`
	Swap   uint64 `json:"swap"`
	// VmFlags are the kernel's mnemonics; VmFlagWords the same in words.
	VmFlags     []string `json:"vm_flags"`
	VmFlagWords []string `json:"vm_flag_words"`
	// SharedWith lists the other processes that map the same object
	// (same device and inode) shared, ascending. Only set for shared
	// mappings of an object with an inode.
	SharedWith []int `json:"shared_with,omitempty"`

	key fileKey
}

// Maps describes pid's mappings from /proc/PID/smaps and finds, for each
// shared mapping, the other processes mapping the same object. The object
// is identified by the device and inode maps prints, which are those of the
// file behind /proc/PID/map_files: for shared anonymous memory that is the
// shmem inode the kernel created at mmap and every process that inherited
// the mapping sees.
func Maps(pid int, opts MapsOptions) (*MapsReport, error) {
	ms, err := procfs.SmapsPid(pid)
	switch classify(err) {
	case procOK:
	case procGone:
		return nil, fmt.Errorf("pid %d: %w", pid, ErrNoProcess)
	case procDenied:
		return nil, fmt.Errorf("pid %d: %w (reading another user's process needs %s): %w", pid, ErrNotPermitted, PtraceCapability, err)
	default:
		return nil, fmt.Errorf("pid %d: %w", pid, err)
	}
	rep := &MapsReport{PID: pid, Comm: comm(pid), Mappings: make([]*MapInfo, 0, len(ms))}
	mr := newMountResolver()
	want := map[fileKey][]*MapInfo{}
	for i := range ms {
		m := &ms[i]
		mi := &MapInfo{
			Start: "0x" + strconv.FormatUint(m.Start, 16), End: "0x" + strconv.FormatUint(m.End, 16),
			Size: m.Len(), Perms: m.Perms.Raw, Offset: m.Offset, Dev: m.Dev.String(), Inode: m.Inode,
			Backing: m.Kind.String(), Deleted: m.Deleted, Shared: m.Perms.Shared,
			Rss: m.Rss, Pss: m.Pss, Swap: m.Swap,
			VmFlags: m.VmFlags.Mnemonics(), VmFlagWords: m.VmFlags.Words(),
			key: fileKey{m.Dev, m.Inode},
		}
		if mi.VmFlags == nil {
			mi.VmFlags, mi.VmFlagWords = []string{}, []string{}
		}
		// Keep flags this package does not know, so nothing is hidden.
		mi.VmFlags = append(mi.VmFlags, m.UnknownVmFlags...)
		mi.VmFlagWords = append(mi.VmFlagWords, m.UnknownVmFlags...)
		if m.Kind != procfs.KindAnon {
			mi.Path = m.Path
		}
		if m.Kind == procfs.KindFile && m.Deleted {
			_, mounted := mr.lookup(m.Dev, []int{pid})
			if k := memoryKind(m.Path, mounted); k != "" {
				mi.Backing = k
			}
		}
		if m.Perms.Shared && m.Inode != 0 {
			want[mi.key] = append(want[mi.key], mi)
		}
		rep.Mappings = append(rep.Mappings, mi)
		rep.Total.Size += mi.Size
		rep.Total.Rss += m.Rss
		rep.Total.Pss += m.Pss
		rep.Total.Swap += m.Swap
	}
	if len(want) > 0 {
		findSharers(pid, want, opts.Workers, &rep.SharingScan)
	}
	return rep, nil
}

// findSharers reads every other process's maps (not smaps: only the
// dev:inode is needed) and records who maps a wanted object shared.
func findSharers(self int, want map[fileKey][]*MapInfo, workers int, counts *ProcCounts) {
	pids, err := allPids()
	if err != nil {
		counts.Errors = append(counts.Errors, fmt.Sprintf("list processes: %v", err))
		return
	}
	type found struct {
		state procErr
		keys  []fileKey
	}
	res := make([]found, len(pids))
	forEach(len(pids), workers, func(i int) {
		pid := pids[i]
		if pid == self {
			res[i].state = procGone
			return
		}
		ms, err := procfs.MapsPid(pid)
		if res[i].state = classify(err); err != nil {
			return
		}
		for j := range ms {
			m := &ms[j]
			k := fileKey{m.Dev, m.Inode}
			if m.Perms.Shared && m.Inode != 0 && want[k] != nil {
				res[i].keys = append(res[i].keys, k)
			}
		}
	})
	for i, r := range res {
		switch r.state {
		case procOK:
			counts.Scanned++
		case procDenied:
			counts.NotPermitted++
			continue
		default:
			continue
		}
		for _, k := range r.keys {
			for _, mi := range want[k] {
				if n := len(mi.SharedWith); n == 0 || mi.SharedWith[n-1] != pids[i] {
					mi.SharedWith = append(mi.SharedWith, pids[i])
				}
			}
		}
	}
	for _, mis := range want {
		for _, mi := range mis {
			sort.Ints(mi.SharedWith)
		}
	}
}
