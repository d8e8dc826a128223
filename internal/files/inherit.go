package files

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"

	"github.com/cryo-project/cryo/internal/errs"
	"github.com/cryo-project/cryo/internal/procfs"
)

// Inherited files, criu's --inherit-fd fd[N]:KEY: a file of the image
// whose other side lives outside the tree — the pipe a shell or a
// supervisor reads the program's output from, a container's stdio that
// runc hands over — is not re-created at restore but replaced by an open
// file the caller of the restore gives (fd N of `cryo restore`). The key
// names the image's file as criu does: pipe:[ID] for a pipe.
//
// cryo holds the given file itself (the *os.File of RestoreOptions.Inherit)
// and hands it to the root at its birth (package restore puts it among the
// stub's fds), from where the other processes take it like any shared
// file. What the file must be for the restore to be exact is checked on
// cryo's own copy, before anything is built: the same kind, the same end
// of a pipe. What the process saw of it is set again there too: the pipe's
// status flags and capacity, and the bytes that were unread when the tree
// held the read end (they were written by the outside writer and, the
// reader being gone, are lost from the old pipe).

// InheritKey is the key criu gives f for --inherit-fd, or "" for a kind
// that has none here.
func InheritKey(f *fdinfo.FileEntry) string {
	switch f.GetType() {
	case fdinfo.FdTypes_PIPE:
		return fmt.Sprintf("pipe:[%d]", f.GetPipe().GetPipeId())
	case fdinfo.FdTypes_UNIXSK:
		if u := f.GetUsk(); u.GetUflags()&uskExtern != 0 {
			return fmt.Sprintf("socket:[%d]", u.GetIno())
		}
	}
	return ""
}

var inheritArg = regexp.MustCompile(`^fd\[(\d+)\]:(.+)$`)

// ParseInheritFd parses criu's fd[N]:KEY.
func ParseInheritFd(s string) (fd int, key string, err error) {
	m := inheritArg.FindStringSubmatch(s)
	if m == nil {
		return 0, "", fmt.Errorf("--inherit-fd %q: want fd[N]:KEY, e.g. fd[3]:pipe:[1234]", s)
	}
	fd, err = strconv.Atoi(m[1])
	if err != nil || fd > 1<<20 {
		return 0, "", fmt.Errorf("--inherit-fd %q: bad fd number", s)
	}
	return fd, m[2], nil
}

// inherited is one given file, once placed in the root.
type inherited struct {
	file *os.File
	// owner is where the root holds it (parked above its image's fds);
	// Pid is 0 until Inherit placed it.
	owner Owner
	// apply sets on it what the program saw of the image's file.
	apply func() error
}

// checkInherited matches the given files with the image before anything is
// built: every key names a file of the image, every file whose other side
// was outside the tree is given one, and each given file is the kind the
// image's is.
func (r *Restorer) checkInherited() error {
	byKey := map[string][]*fdinfo.FileEntry{}
	for _, f := range r.set.Files {
		if k := InheritKey(f); k != "" {
			byKey[k] = append(byKey[k], f)
		}
	}
	for key := range r.opts.Inherit {
		if byKey[key] == nil {
			return fmt.Errorf("--inherit-fd for %s: no file of the image has that key (see cryo show)", key)
		}
	}
	// Keys in order: the fds restore parks them on, and the refusal, are
	// the same from run to run.
	var missing []string
	for _, key := range slices.Sorted(maps.Keys(byKey)) {
		fs := byKey[key]
		if fs[0].GetType() == fdinfo.FdTypes_UNIXSK {
			if err := r.inheritSocket(key, fs[0]); err != nil {
				missing = append(missing, err.Error())
			}
			continue
		}
		if fs[0].GetType() != fdinfo.FdTypes_PIPE {
			continue
		}
		end, external := pipeEnd(fs)
		given, ok := r.opts.Inherit[key]
		if !external && ok {
			return fmt.Errorf("--inherit-fd for %s: the tree holds both ends of that pipe; there is nothing outside it to inherit", key)
		}
		if !external {
			continue
		}
		if !ok {
			var err error
			if given, err = r.outsidePipe(key, fs[0], end); err != nil {
				missing = append(missing, err.Error())
				continue
			}
			if given == nil {
				// CRIU's default: the pipe comes back with its data,
				// without the end nobody holds any more.
				r.log().Info("pipe restored without its outside end: no process holds it", "pipe", key, "outside", otherEnd(end))
				continue
			}
		}
		apply, err := r.adoptPipe(key, fs[0], end, given)
		if err != nil {
			return err
		}
		r.inherit[key] = &inherited{file: given, apply: apply}
		r.inheritOrder = append(r.inheritOrder, key)
	}
	if len(missing) > 0 {
		return fmt.Errorf("%s: give this restore the pipe to use instead of each with --inherit-fd fd[N]:KEY: %w", strings.Join(missing, "; "), errs.ErrNotSupported)
	}
	return nil
}

// inheritSocket finds the socket that stands for a UNIX socket whose peer
// was outside the tree: the one given with --inherit-fd, or the socket
// itself, which the dump's keeper held (then it must be that very socket).
// Without either the restore cannot make it: its peer is not there to be
// connected to.
func (r *Restorer) inheritSocket(key string, f *fdinfo.FileEntry) error {
	given, ok := r.opts.Inherit[key]
	kept := false
	if !ok {
		if given, kept = r.opts.Kept[key]; !kept {
			return fmt.Errorf("%s (connected to a peer outside the tree, and the dump's keeper that held it is gone)", key)
		}
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(given.Fd()), &st); err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return fmt.Errorf("--inherit-fd for %s: the file given is not a socket (mode %#o)", key, st.Mode&unix.S_IFMT)
	}
	if kept && st.Ino != uint64(f.GetUsk().GetIno()) {
		return fmt.Errorf("%s: the keeper handed socket:[%d]", key, st.Ino)
	}
	r.inherit[key] = &inherited{file: given, apply: func() error { return nil }}
	r.inheritOrder = append(r.inheritOrder, key)
	return nil
}

// outsidePipe finds what stands for the outside end of a pipe of which the
// tree held one end, when the restore was given nothing for it: the tree's
// own end, if the dump's keeper held it; else, on the boot the image was
// taken on, the same pipe reached through a process that holds its other
// end (the `tee` of `prog | tee`), reopened for the tree's end. nil, nil:
// no process holds it, so none will see the restored end, as after the
// dump; the pipe is made again. An error: an outside end is there but the
// tree may not have it.
func (r *Restorer) outsidePipe(key string, f *fdinfo.FileEntry, end int) (*os.File, error) {
	if k, ok := r.opts.Kept[key]; ok {
		return k, nil
	}
	if !r.opts.SameBoot {
		return nil, nil
	}
	id := f.GetPipe().GetPipeId()
	holders, err := pipeHolders(id)
	if err != nil {
		return nil, fmt.Errorf("%s: look for its outside end: %w", key, err)
	}
	if len(holders) == 0 {
		return nil, nil
	}
	// The tree is to have an end of the very pipe another process holds:
	// only if every process of the tree could have opened that process's
	// fd itself, having its uid; else an edited image could hand an
	// unprivileged tree a pipe of root's.
	for _, h := range holders {
		if !r.treeIsUser(h.uids) {
			return nil, fmt.Errorf("%s (its %s end is held by pid %d, of another user)", key, otherEnd(end), h.pid)
		}
	}
	mode := os.O_RDONLY
	if end == 1 {
		mode = os.O_WRONLY
	}
	var errsSeen []error
	for _, h := range holders {
		pf, err := os.OpenFile(fmt.Sprintf("/proc/%d/fd/%d", h.pid, h.fd), mode|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			errsSeen = append(errsSeen, err)
			continue
		}
		var st unix.Stat_t
		if err := unix.Fstat(int(pf.Fd()), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO || st.Ino != uint64(id) {
			pf.Close() // the holder closed it meanwhile, and the fd is another file
			continue
		}
		// O_NONBLOCK was for the open only; adoptPipe sets the image's.
		if _, err := unix.FcntlInt(pf.Fd(), unix.F_SETFL, 0); err != nil {
			pf.Close()
			return nil, err
		}
		// A 64-bit kernel sets O_LARGEFILE on every open, and F_SETFL
		// cannot clear it: a pipe made by pipe(2) lacks it, so the
		// program's F_GETFL shows one flag more. Said, not hidden.
		r.log().Warn("pipe re-attached to its outside end by reopening it: its file status flags gain O_LARGEFILE, which no open can leave out",
			"pipe", key, "holder", h.pid, "fd", h.fd)
		return pf, nil
	}
	return nil, fmt.Errorf("%s: reopen its outside end: %w", key, errors.Join(errsSeen...))
}

// pipeHolder is an fd of a process of this machine on a pipe.
type pipeHolder struct {
	pid, fd int
	uids    [3]uint32 // real, effective, saved
}

// pipeHolders lists the fds of every process that are on pipe:[id].
func pipeHolders(id uint32) ([]pipeHolder, error) {
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	want := fmt.Sprintf("pipe:[%d]", id)
	var out []pipeHolder
	for _, e := range procs {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		dir := fmt.Sprintf("/proc/%d/fd", pid)
		fds, err := os.ReadDir(dir)
		if err != nil {
			continue // gone, or not ours to look at
		}
		for _, fe := range fds {
			if link, err := os.Readlink(dir + "/" + fe.Name()); err != nil || link != want {
				continue
			}
			n, _ := strconv.Atoi(fe.Name())
			st, err := procfs.StatusPid(pid)
			if err != nil {
				continue
			}
			out = append(out, pipeHolder{pid: pid, fd: n, uids: [3]uint32{st.Uid[0], st.Uid[1], st.Uid[2]}})
		}
	}
	return out, nil
}

// treeIsUser says whether every process of the image has real, effective
// and saved uid all uids.
func (r *Restorer) treeIsUser(uids [3]uint32) bool {
	for _, ip := range r.set.Procs {
		if len(ip.Cores) == 0 {
			continue
		}
		c := ip.Cores[0].GetThreadCore().GetCreds()
		if c == nil || c.GetUid() != uids[1] || c.GetEuid() != uids[1] || c.GetSuid() != uids[1] || uids[0] != uids[1] || uids[2] != uids[1] {
			return false
		}
	}
	return true
}

func (r *Restorer) log() *slog.Logger {
	if r.opts.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.opts.Log
}

// pipeEnd says which end (0 read, 1 write) the tree held of a pipe whose
// open file descriptions are fs, and whether the other one was outside.
func pipeEnd(fs []*fdinfo.FileEntry) (end int, external bool) {
	var held [2]bool
	for _, f := range fs {
		if f.GetPipe().GetFlags()&unix.O_ACCMODE == unix.O_WRONLY {
			held[1] = true
		} else {
			held[0] = true
		}
	}
	if held[0] && held[1] {
		return 0, false
	}
	if held[1] {
		return 1, true
	}
	return 0, true
}

func otherEnd(end int) string {
	if end == 0 {
		return "write"
	}
	return "read"
}

// adoptPipe checks the given file against the image's pipe, and returns
// what makes it the pipe the program saw — its status flags, capacity and
// unread bytes — to be set on it once the tree is built (applyInherited):
// a restore that fails before then leaves the caller's pipe as it was.
func (r *Restorer) adoptPipe(key string, f *fdinfo.FileEntry, end int, given *os.File) (func() error, error) {
	fd := int(given.Fd())
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("--inherit-fd for %s: %w", key, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFIFO {
		return nil, fmt.Errorf("--inherit-fd for %s: the file given is not a pipe (mode %#o)", key, st.Mode&unix.S_IFMT)
	}
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return nil, fmt.Errorf("--inherit-fd for %s: %w", key, err)
	}
	if givenEnd := b2i(fl&unix.O_ACCMODE == unix.O_WRONLY); givenEnd != end {
		return nil, fmt.Errorf("--inherit-fd for %s: the pipe given is open for its %s end; the tree held the %s end", key, endName(givenEnd), endName(end))
	}
	d := restoreHalf[*pipeOpen](r).data[f.GetPipe().GetPipeId()]
	// Unread bytes were written by the outside writer for the tree to
	// read; they go into the new pipe first, so it must hold nothing yet.
	// When the tree held the write end, the bytes are the outside
	// reader's, still in the old pipe it holds: not copied. Nor are they
	// when the file given is the very pipe the tree had (a keeper's, or
	// one reached through its outside end): they are still in it.
	same := r.opts.SameBoot && st.Ino == uint64(f.GetPipe().GetPipeId())
	refill := end == 0 && len(d.data) > 0 && !same
	if refill {
		if n, err := unix.IoctlGetInt(fd, unix.TIOCINQ); err != nil { // FIONREAD
			return nil, fmt.Errorf("--inherit-fd for %s: %w", key, err)
		} else if n != 0 {
			return nil, fmt.Errorf("--inherit-fd for %s: the pipe given already holds %d bytes; the %d bytes the tree had not read must come first: %w", key, n, len(d.data), errs.ErrNotSupported)
		}
	}
	want := int(f.GetPipe().GetFlags())
	return func() error {
		// The description is shared with the caller; its status flags are
		// what the program set, and the program is who relies on them.
		if fl&unix.O_NONBLOCK != want&unix.O_NONBLOCK {
			if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl&^unix.O_NONBLOCK|want&unix.O_NONBLOCK); err != nil {
				return fmt.Errorf("--inherit-fd for %s: set its flags: %w", key, err)
			}
		}
		if d.capacity != 0 {
			if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETPIPE_SZ, int(d.capacity)); err != nil {
				return fmt.Errorf("--inherit-fd for %s: set its capacity to %d: %w", key, d.capacity, err)
			}
		}
		if refill {
			if err := writeThrough(os.Getpid(), uint64(fd), os.O_WRONLY, d.data); err != nil {
				return fmt.Errorf("--inherit-fd for %s: refill %d unread bytes: %w", key, len(d.data), err)
			}
		}
		return nil
	}, nil
}

func endName(end int) string {
	if end == 1 {
		return "write"
	}
	return "read"
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// InheritFiles are the given files in the order the root's birth gets
// them, at fds 3, 4, ... of the stub; Inherit takes them from there.
func (r *Restorer) InheritFiles() []*os.File {
	out := make([]*os.File, 0, len(r.inherit))
	for _, key := range r.inheritOrder {
		out = append(out, r.inherit[key].file)
	}
	return out
}

// Inherit records that the root p holds the given files at fds first,
// first+1, ... (as InheritFiles ordered them) and moves them above its
// image's fds, where its own fds will not close them.
func (r *Restorer) Inherit(p Proc, first uint64) error {
	for i, key := range r.inheritOrder {
		fd, err := r.Park(p, first+uint64(i))
		if err != nil {
			return fmt.Errorf("inherited %s: %w", key, err)
		}
		r.inherit[key].owner = Owner{Pid: p.Pid(), Fd: fd}
	}
	return nil
}

// openInherited gives p the inherited file of key, if one was given.
func (r *Restorer) openInherited(p Proc, key string) (uint64, bool, error) {
	in, ok := r.inherit[key]
	if !ok {
		return 0, false, nil
	}
	if in.owner.Pid == 0 {
		return 0, true, errors.New("inherited " + key + ": not handed to the root")
	}
	if in.owner.Pid == p.Pid() {
		fd, err := p.Call("fcntl(F_DUPFD_CLOEXEC)", unix.SYS_FCNTL, in.owner.Fd, unix.F_DUPFD_CLOEXEC, r.base[p.Pid()])
		return fd, true, err
	}
	fd, err := r.Take(p, in.owner)
	return fd, true, err
}

// finishInherited closes the root's parked copies, once every process has
// its fds, and sets on each given file what the program saw of its own.
func (r *Restorer) finishInherited() error {
	for _, key := range r.inheritOrder {
		in := r.inherit[key]
		if p := r.procs[in.owner.Pid]; p != nil {
			if _, err := p.Call("close inherited", unix.SYS_CLOSE, in.owner.Fd); err != nil {
				return err
			}
		}
		if err := in.apply(); err != nil {
			return err
		}
	}
	return nil
}
