package show

// The JSON form of these types is an interface: rename nothing, only add.
// Addresses are hex strings, because JSON numbers lose precision above 2^53
// in most consumers and a person compares them with /proc/PID/maps.

// Image is what an image directory holds.
type Image struct {
	Dir       string     `json:"dir"`
	Files     int        `json:"files"` // files listed in the checksum sidecar
	Processes []*Process `json:"processes"`
	Stats     *DumpStats `json:"dump_stats,omitempty"` // nil without stats-dump
}

// Process is one process of the dumped tree.
type Process struct {
	PID            uint32       `json:"pid"`
	PPID           uint32       `json:"ppid"`
	PGID           uint32       `json:"pgid"`
	SID            uint32       `json:"sid"`
	Comm           string       `json:"comm"`
	Exe            string       `json:"exe,omitempty"`
	SharedPending  int          `json:"shared_pending_signals"`
	Threads        []Thread     `json:"threads"`
	Mappings       []Mapping    `json:"mappings"`
	FDs            []FD         `json:"fds"`
	SignalHandlers []SigHandler `json:"signal_handlers"`
	Umask          *uint32      `json:"umask,omitempty"`
	Cwd            string       `json:"cwd,omitempty"`
	// Zombie is set for a process that had exited, unreaped; ExitStatus is
	// the wait status its parent will see. A zombie has no memory or files.
	Zombie     bool   `json:"zombie,omitempty"`
	ExitStatus uint32 `json:"exit_status,omitempty"`
	// StoppedBy names the signal of the group stop the process was in
	// (SIGSTOP, SIGTSTP...); empty if it was running.
	StoppedBy string `json:"stopped_by,omitempty"`
}

// Thread is one thread (the first is the thread-group leader).
type Thread struct {
	TID     uint32 `json:"tid"`
	IP      string `json:"ip"`
	SP      string `json:"sp"`
	SigMask string `json:"sigmask"` // blocked signals, hex bit mask (bit n-1 = signal n)
	Pending int    `json:"pending_signals"`
}

// Mapping is one VMA.
type Mapping struct {
	Start       string `json:"start"`
	End         string `json:"end"`
	Size        uint64 `json:"size"`
	Prot        string `json:"prot"`  // "rwx" with '-' for missing rights
	Share       string `json:"share"` // "private" or "shared"
	Kind        string `json:"kind"`  // file, anon, heap, stack, vdso, vvar, vsyscall, sysvipc, socket, memfd
	Path        string `json:"path,omitempty"`
	PagesDumped uint64 `json:"pages_dumped"`
}

// FD is one open file descriptor.
type FD struct {
	FD      uint32 `json:"fd"`
	Type    string `json:"type"` // CRIU's fd_types name: REG, PIPE, UNIXSK...
	Path    string `json:"path,omitempty"`
	Flags   string `json:"flags,omitempty"` // open flags, O_RDWR|O_APPEND
	Pos     uint64 `json:"pos"`
	CloExec bool   `json:"cloexec"`
}

// SigHandler is a signal whose disposition is not SIG_DFL.
type SigHandler struct {
	Signal  string `json:"signal"`
	Handler string `json:"handler"` // SIG_IGN or the handler's address
	Flags   string `json:"flags,omitempty"`
	Mask    string `json:"mask"`
}

// DumpStats is stats-dump: times in microseconds, counts in pages.
type DumpStats struct {
	FreezingTimeUS uint32 `json:"freezing_time_us"`
	FrozenTimeUS   uint32 `json:"frozen_time_us"`
	MemdumpTimeUS  uint32 `json:"memdump_time_us"`
	MemwriteTimeUS uint32 `json:"memwrite_time_us"`
	PagesScanned   uint64 `json:"pages_scanned"`
	PagesSkipped   uint64 `json:"pages_skipped_parent"`
	PagesWritten   uint64 `json:"pages_written"`
	PagesLazy      uint64 `json:"pages_lazy"`
}
