package feature

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/kabi"
	"github.com/cryo-project/cryo/internal/procfs"
)

// Caps are the capability sets of a process (/proc/PID/status), one bit
// per capability number.
type Caps struct {
	Eff, Prm, Inh, Bnd, Amb uint64
}

// ErrMalformed is wrapped by the errors of the parsers of this package
// (status lines, the security.capability xattr).
var ErrMalformed = errors.New("malformed")

// ownCaps reads the capability sets of cryo's process, with the status
// parser dump uses.
func ownCaps() (Caps, error) {
	st, err := procfs.StatusPid(os.Getpid())
	if err != nil {
		return Caps{}, err
	}
	return Caps{Eff: st.CapEff, Prm: st.CapPrm, Inh: st.CapInh, Bnd: st.CapBnd, Amb: st.CapAmb}, nil
}

// Has reports whether capability n is effective.
func (c Caps) Has(n int) bool { return c.Eff&(1<<uint(n)) != 0 }

// FileCaps are the capabilities a binary carries in its
// security.capability extended attribute.
type FileCaps struct {
	Revision    int // 1, 2 or 3
	Effective   bool
	Permitted   uint64
	Inheritable uint64
	RootUID     uint32 // revision 3: uid 0 of the user namespace they apply in
}

// ParseFileCaps decodes a security.capability xattr value
// (struct vfs_ns_cap_data, little-endian).
func ParseFileCaps(b []byte) (FileCaps, error) {
	if len(b) < 4 {
		return FileCaps{}, fmt.Errorf("security.capability: %d bytes: %w", len(b), ErrMalformed)
	}
	le := binary.LittleEndian
	magic := le.Uint32(b)
	fc := FileCaps{Effective: magic&kabi.VFS_CAP_FLAGS_EFFECTIVE != 0}
	want := 0
	switch magic & kabi.VFS_CAP_REVISION_MASK {
	case kabi.VFS_CAP_REVISION_1:
		fc.Revision, want = 1, kabi.XATTR_CAPS_SZ_1
	case kabi.VFS_CAP_REVISION_2:
		fc.Revision, want = 2, kabi.XATTR_CAPS_SZ_2
	case kabi.VFS_CAP_REVISION_3:
		fc.Revision, want = 3, kabi.XATTR_CAPS_SZ_3
	default:
		return FileCaps{}, fmt.Errorf("security.capability: revision %#x at offset 0: %w", magic&kabi.VFS_CAP_REVISION_MASK, ErrMalformed)
	}
	if len(b) != want {
		return FileCaps{}, fmt.Errorf("security.capability revision %d: %d bytes, want %d: %w", fc.Revision, len(b), want, ErrMalformed)
	}
	fc.Permitted = uint64(le.Uint32(b[4:]))
	fc.Inheritable = uint64(le.Uint32(b[8:]))
	if fc.Revision >= 2 {
		fc.Permitted |= uint64(le.Uint32(b[12:])) << 32
		fc.Inheritable |= uint64(le.Uint32(b[16:])) << 32
	}
	if fc.Revision == 3 {
		fc.RootUID = le.Uint32(b[20:])
	}
	return fc, nil
}

// ownFileCaps returns the file capabilities of cryo's binary, or nil if it
// has none.
func ownFileCaps() (*FileCaps, error) {
	b := make([]byte, 64)
	n, err := unix.Getxattr("/proc/self/exe", "security.capability", b)
	if errors.Is(err, unix.ENODATA) || errors.Is(err, unix.ENOTSUP) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("security.capability of /proc/self/exe: %w", err)
	}
	fc, err := ParseFileCaps(b[:n])
	if err != nil {
		return nil, err
	}
	return &fc, nil
}

// Capability numbers cryo cares about (include/uapi/linux/capability.h).
const (
	capSetgid            = 6
	capSetuid            = 7
	capSysPtrace         = 19
	capSysAdmin          = 21
	capSysResource       = 24
	capCheckpointRestore = 40
)

// capUses says, for each capability that matters to cryo, what it allows.
var capUses = []struct {
	n    int
	name string
	use  string
}{
	{capCheckpointRestore, "CAP_CHECKPOINT_RESTORE", "follow map_files, clone3 with set_tid, write ns_last_pid, set the exe link with PR_SET_MM_MAP"},
	{capSysPtrace, "CAP_SYS_PTRACE", "trace other users' processes, and past yama.ptrace_scope 1 and 2"},
	{capSysAdmin, "CAP_SYS_ADMIN", "all of CAP_CHECKPOINT_RESTORE's, plus PTRACE_O_SUSPEND_SECCOMP and reading seccomp filters"},
	{capSysResource, "CAP_SYS_RESOURCE", "raise rlimits above the hard limit, lower oom_score_adj"},
	{capSetuid, "CAP_SETUID", "restore another user's uids"},
	{capSetgid, "CAP_SETGID", "restore another user's gids and groups"},
}

// CapLines describes, one line per capability that matters to cryo,
// whether c has it and what it allows.
func CapLines(c Caps) []string {
	var out []string
	for _, u := range capUses {
		mark := "✗"
		if c.Has(u.n) {
			mark = "✓"
		}
		out = append(out, fmt.Sprintf("%s %-22s %s", mark, u.name, u.use))
	}
	return out
}

func capNames(mask uint64) string {
	var names []string
	for _, u := range capUses {
		if mask&(1<<uint(u.n)) != 0 {
			names = append(names, u.name)
		}
	}
	if len(names) == 0 {
		return "none that matter to cryo"
	}
	return strings.Join(names, ",")
}

func probeCapabilities() (string, error) {
	c, err := ownCaps()
	if err != nil {
		return "", err
	}
	detail := fmt.Sprintf("CapEff %#x CapPrm %#x CapAmb %#x", c.Eff, c.Prm, c.Amb)
	fc, err := ownFileCaps()
	if err != nil {
		return detail, err
	}
	if fc != nil {
		detail += fmt.Sprintf("; file caps v%d permitted %#x (%s) effective=%v", fc.Revision, fc.Permitted, capNames(fc.Permitted), fc.Effective)
		if fc.Revision == 3 {
			detail += fmt.Sprintf(" rootid %d", fc.RootUID)
		}
	}
	if !c.Has(capCheckpointRestore) && !c.Has(capSysAdmin) {
		return detail, fmt.Errorf("%w: neither CAP_CHECKPOINT_RESTORE nor CAP_SYS_ADMIN is effective", ErrNotPermitted)
	}
	return detail, nil
}
