// Package meta reads and writes cryo-meta.json, cryo's own note beside the
// CRIU images: the kernel, CPU features and vdso the image was taken on, so
// that restore can refuse an image this machine cannot run, with a reason,
// before it starts anything. CRIU tools ignore the file.
//
// # Security
//
// The file is untrusted input like every image file: it is size-bounded and
// its integrity is covered by the image directory's checksums.
package meta

import (
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"

	"github.com/cryo-project/cryo/internal/image"
)

// Name is the file name in the image directory.
const Name = "cryo-meta.json"

// Meta describes the machine an image was taken on.
type Meta struct {
	// Kernel is the release (uname -r) and Machine the architecture.
	Kernel  string `json:"kernel"`
	Machine string `json:"machine"`
	// VdsoHash is the SHA-256 of the dumped process's [vdso]; empty if it
	// had none. Restore re-creates the running kernel's vdso at the same
	// address, so the two must be the same code.
	VdsoHash string `json:"vdso_sha256,omitempty"`
	// XFeatures is the XCR0 of the dumping CPU.
	XFeatures uint64 `json:"xfeatures"`
	// AccountedReadOnly lists, by pid, the start of private VMAs that are
	// not writable now but were (VM_ACCOUNT, "ac" in smaps: RELRO after
	// relocation). CRIU's vma_entry cannot say so; restore maps them
	// writable and then takes the write permission away, as the program
	// did, so their flags and merging match.
	AccountedReadOnly map[int][]uint64 `json:"accounted_read_only,omitempty"`
	// Inherited lists, by pid, the runs of pages (address, count) a process
	// shares copy-on-write with its parent: the very same physical page at
	// the same address, in an Inheritable VMA. They are not in the
	// process's pages: restore forks the process from its restored parent,
	// which gives it these pages, still shared.
	Inherited map[int][][2]uint64 `json:"inherited,omitempty"`
	// LockOnFault lists, by pid, the start of the VMAs locked on fault
	// (mlock2 MLOCK_ONFAULT, mlockall MCL_ONFAULT: "lf" in smaps). Their
	// vma_entry has MAP_LOCKED, as every locked VMA's.
	LockOnFault map[int][]uint64 `json:"lock_on_fault,omitempty"`
	// Sealed lists, by pid, the start of the VMAs sealed with mseal ("sl",
	// 6.10), which CRIU's vma_entry cannot say.
	Sealed map[int][]uint64 `json:"sealed,omitempty"`
	// SemPids holds, by System V semaphore set id, the pid of the last
	// operation on each semaphore (semctl GETPID), and MsgPids, by queue
	// id, its last sender and receiver: CRIU's ipc entries have no field
	// for them, and restore has those processes of the tree do a last
	// operation again (package sysvipc).
	SemPids map[int32][]int32  `json:"sem_pids,omitempty"`
	MsgPids map[int32][2]int32 `json:"msg_pids,omitempty"`
	// BootID is the dumping machine's /proc/sys/kernel/random/boot_id: a
	// restore on the same boot may find the outside ends of the tree's
	// pipes still open, by their inode numbers.
	BootID string `json:"boot_id,omitempty"`
	// Keeper is the abstract socket of the process that holds the tree's
	// ends of pipes to the outside until the restore (package keeper), and
	// KeptPipes their keys (pipe:[ID], socket:[INO]); empty: none.
	Keeper    string   `json:"keeper,omitempty"`
	KeptPipes []string `json:"kept_pipes,omitempty"`
	// NetworkLock is the network lock the dump left on the tree's
	// established TCP connections (package netlock), which the restore
	// removes once the restored tree runs; empty if none.
	NetworkLock string    `json:"network_lock,omitempty"`
	Cmdline     string    `json:"cmdline"`
	Created     time.Time `json:"created"`

	// Tasks holds, by tid, what CRIU's core entry has no field for (see
	// Task).
	Tasks map[int]*Task `json:"tasks,omitempty"`
}

// Write stores m in dir.
func Write(dir *image.Dir, m *Meta) error {
	w, err := dir.CreateRaw(Name)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(m); err != nil {
		w.Close()
		return fmt.Errorf("write %s: %w", Name, err)
	}
	return w.Close()
}

// Read loads the note from dir.
func Read(dir *image.Dir) (*Meta, error) {
	r, err := dir.OpenRaw(Name)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var m Meta
	if err := json.NewDecoder(io.LimitReader(r, 1<<20)).Decode(&m); err != nil {
		return nil, fmt.Errorf("%s: %w", Name, err)
	}
	return &m, nil
}

// Inheritable says whether a child's VMA is the one it inherited from its
// parent across fork, as far as restore can reproduce it: restore forks the
// child from its restored parent and keeps such a VMA, with the pages that
// are still shared, instead of mapping it anew. Dump declares pages
// inherited only in VMAs that pass this same test.
func Inheritable(parent, child *vma.VmaEntry) bool {
	const (
		madvDontfork   = 1 << 10             // MADV_DONTFORK: not copied to the child
		madvWipeonfork = 1 << 18             // MADV_WIPEONFORK: copied empty
		special        = 1<<2 | 1<<3 | 1<<12 // vsyscall, vdso, vvar
		// MAP_LOCKED: fork never copies a lock (the child's VMA is
		// unlocked, its pages still shared); restore locks each
		// process's VMAs after its memory is in.
		mapLocked = 0x2000
	)
	return parent.GetStart() == child.GetStart() && parent.GetEnd() == child.GetEnd() &&
		parent.GetPgoff() == child.GetPgoff() && parent.GetProt() == child.GetProt() &&
		parent.GetFlags()&^mapLocked == child.GetFlags()&^mapLocked && parent.GetStatus() == child.GetStatus() &&
		parent.GetShmid() == child.GetShmid() && parent.GetStatus()&special == 0 &&
		parent.GetMadv()&(madvDontfork|madvWipeonfork) == 0
}
