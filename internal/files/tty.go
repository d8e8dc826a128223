package files

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/tty"

	"github.com/cryo-project/cryo/internal/errs"
	"github.com/cryo-project/cryo/internal/procfs"
)

// Terminals. A pseudo-terminal whose master the tree holds comes back as
// it was, pair and all (pty.go): a tty_file_entry per open file
// description, with CRIU's tty-info.img and tty-data.img. A terminal the
// tree only inherited (a shell's, whose master is outside: the job's
// stdio) needs --shell-job: its fds are opened on the terminal of `cryo
// restore` itself, as criu does, and are written as a regular file entry
// naming the terminal. Without the flag such a terminal is refused by
// name, at dump and at restore.
//
// Whether a slave's master is in the tree is known only once the whole
// tree is dumped: the slave's entry gets its form in check.
var ttyKind = Kind{
	Name:    "terminal",
	Type:    fdinfo.FdTypes_TTY,
	Dump:    func() dumper { return &ttyDump{ptys: map[int]*ptyPair{}} },
	Restore: func() opener { return &ttyOpen{ptys: map[int]*ptyRestore{}} },
	Describe: func(f *fdinfo.FileEntry) Description {
		if t := f.GetTty(); t != nil {
			return Description{Path: ptyInfoName(t.GetTtyInfoId()), HasFlags: true, Flags: t.GetFlags()}
		}
		r := f.GetReg()
		return Description{Path: r.GetName(), HasFlags: true, Flags: r.GetFlags(), Pos: r.GetPos()}
	},
}

// isTTY says whether rdev is a terminal: /dev/tty (5), the console and
// virtual terminals (4), pseudo-terminal slaves (136-143).
func isTTY(rdev uint64) bool {
	maj := unix.Major(rdev)
	return maj == 4 || maj == 5 || isPtySlave(rdev)
}

func isPtySlave(rdev uint64) bool {
	maj := unix.Major(rdev)
	return maj >= 136 && maj <= 143
}

// ptySlaveIndex is the index N of /dev/pts/N from its device number: the
// kernel numbers slaves from MKDEV(136, 0) on.
func ptySlaveIndex(rdev uint64) int {
	return int(unix.Major(rdev)-136)<<20 | int(unix.Minor(rdev))
}

const (
	ttyMajorAux = 5 // TTYAUX_MAJOR: /dev/tty 0, /dev/console 1, /dev/ptmx 2
	ttyMinorTTY = 0
	ttyMinorPTM = 2
)

type ttyDump struct {
	ptys  map[int]*ptyPair // by index
	order []*ptyPair
	// files are the slave and /dev/tty entries, whose form check decides.
	files []*ttyFile
	infos []*tty.TtyInfoEntry
	data  []*tty.TtyDataEntry
}

// ttyFile is one open file description of a terminal that is not a pty
// master.
type ttyFile struct {
	e        *fdinfo.FileEntry
	pid, num int
	link     string
	flags    uint32
	st       unix.Stat_t
	index    int  // the pty it is on; -1: not a pty
	ctty     bool // /dev/tty, the holder's controlling terminal
	hung     bool // a slave hung up: its master was closed
}

func (*ttyDump) match(fd *Fd) bool {
	return fd.Stat.Mode&unix.S_IFMT == unix.S_IFCHR && isTTY(fd.Stat.Rdev)
}

func (td *ttyDump) dump(d *Dumper, fd *Fd) (uint32, error) {
	maj, min := unix.Major(fd.Stat.Rdev), unix.Minor(fd.Stat.Rdev)
	if maj == ttyMajorAux && min == ttyMinorPTM {
		return td.master(d, fd)
	}
	tf := &ttyFile{pid: fd.Pid, num: fd.Num, link: fd.Link, flags: fd.Flags, st: *fd.Stat, index: -1}
	switch {
	case isPtySlave(fd.Stat.Rdev):
		tf.index = ptySlaveIndex(fd.Stat.Rdev)
		// Its master closed, the slave is hung up and its name gone: the
		// kernel keeps its index while the slave is open.
		tf.hung = strings.HasSuffix(fd.Link, " (deleted)")
		if !tf.hung {
			td.keepSlave(fd, tf.index, true)
		}
	case maj == ttyMajorAux && min == ttyMinorTTY:
		// /dev/tty: the controlling terminal of its holder, as it is now
		// (the kernel shows no other link from the file to its terminal).
		tf.ctty = true
		st, err := procfs.StatPid(fd.Pid)
		if err != nil {
			return 0, err
		}
		if rdev := uint64(st.TtyNr); isPtySlave(rdev) {
			tf.index = ptySlaveIndex(rdev)
			td.keepSlave(fd, tf.index, false)
		} else if st.TtyNr == 0 {
			return 0, fmt.Errorf("/dev/tty opened by a process that has no controlling terminal now: %w", errs.ErrNotSupported)
		}
	}
	tf.e = &fdinfo.FileEntry{Type: fdinfo.FdTypes_TTY.Enum()}
	td.files = append(td.files, tf)
	return d.Add(tf.e), nil
}

// check gives every slave and /dev/tty entry its form: on a pty of the
// tree, a tty_file_entry; on an inherited terminal, with --shell-job, a
// regular file entry naming it; else the dump is refused. Then each pty of
// the tree is read (pty.go).
func (td *ttyDump) check(d *Dumper) error {
	for _, tf := range td.files {
		if tf.hung {
			if err := td.hungSlave(tf); err != nil {
				return fmt.Errorf("fd %d (%s) of pid %d: %w", tf.num, tf.link, tf.pid, err)
			}
			continue
		}
		if p := td.ptys[tf.index]; p != nil && p.master >= 0 {
			info := uint32(tf.index) << 1
			if tf.ctty {
				info = cttyInfoID
				p.ctty = true
			}
			tf.e.Tty = &tty.TtyFileEntry{Id: proto.Uint32(tf.e.GetId()), TtyInfoId: proto.Uint32(info), Flags: proto.Uint32(tf.flags), Fown: noOwner()}
			continue
		}
		if !d.opts.ShellJob {
			return fmt.Errorf("fd %d (%s) of pid %d: a terminal: dump with --shell-job to re-attach it to the terminal of cryo restore: %w", tf.num, tf.link, tf.pid, errs.ErrNotSupported)
		}
		e := regEntry(tf.link, tf.flags, 0, &tf.st)
		e.Reg.Id = proto.Uint32(tf.e.GetId())
		tf.e.Reg = e.Reg
	}
	return td.checkPtys(d)
}

type ttyOpen struct {
	ptys  map[int]*ptyRestore // by index
	infos map[uint32]*tty.TtyInfoEntry
	data  map[uint32][]byte // tty-data.img, by tty info id
	// bySid is the pty whose slave is the controlling terminal of each
	// session.
	bySid map[int]*ptyRestore
}

func (to *ttyOpen) open(r *Restorer, p Proc, f *fdinfo.FileEntry) (uint64, error) {
	if t := f.GetTty(); t != nil {
		return to.openPty(r, p, t)
	}
	if !r.opts.ShellJob {
		return 0, fmt.Errorf("a terminal (%s): restore with --shell-job to attach it to this terminal: %w", f.GetReg().GetName(), errs.ErrNotSupported)
	}
	tty, err := ttyPath()
	if err != nil {
		return 0, err
	}
	s, err := p.Str(tty)
	if err != nil {
		return 0, err
	}
	return p.Call("open "+tty, unix.SYS_OPENAT, atFdcwd, s, uint64(f.GetReg().GetFlags()|unix.O_CLOEXEC|unix.O_NOCTTY), 0)
}

// ttyPath is the terminal of cryo itself, for --shell-job.
func ttyPath() (string, error) {
	for fd := 0; fd < 3; fd++ {
		if _, err := unix.IoctlGetTermios(fd, unix.TCGETS); err == nil {
			return os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
		}
	}
	return "", errors.New("--shell-job: cryo restore has no terminal on stdin, stdout or stderr")
}
