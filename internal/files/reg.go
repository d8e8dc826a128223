package files

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/cryo-project/cryo/internal/errs"
)

// Regular files, directories, and the character devices that carry no
// state (/dev/null, zero, full, random, urandom): reopened by path with
// their flags; the offset is set back by the generic layer. A file deleted
// while open is a ghost (ghost.go): its contents come back at its old
// path, or beside it, for the time of the open.
var regKind = Kind{
	Name:    "regular file, directory or device",
	Type:    fdinfo.FdTypes_REG,
	Dump:    func() dumper { return regDump{} },
	Restore: func() opener { return regOpen{} },
	Describe: func(f *fdinfo.FileEntry) Description {
		r := f.GetReg()
		return Description{Path: r.GetName(), HasFlags: true, Flags: r.GetFlags(), Pos: r.GetPos()}
	},
}

type regDump struct{}

var simpleDevices = map[[2]uint32]bool{
	{1, 3}: true, // null
	{1, 5}: true, // zero
	{1, 7}: true, // full
	{1, 8}: true, // random
	{1, 9}: true, // urandom
}

func (regDump) match(fd *Fd) bool {
	switch fd.Stat.Mode & unix.S_IFMT {
	case unix.S_IFREG, unix.S_IFDIR:
		return strings.HasPrefix(fd.Link, "/")
	case unix.S_IFCHR:
		return simpleDevices[[2]uint32{unix.Major(fd.Stat.Rdev), unix.Minor(fd.Stat.Rdev)}]
	}
	return false
}

// mqueueMagic is the f_type of the mqueue filesystem
// (include/uapi/linux/magic.h): a POSIX message queue's fd looks like a
// regular file named /NAME.
const mqueueMagic = 0x19800202

func (regDump) dump(d *Dumper, fd *Fd) (uint32, error) {
	var fs unix.Statfs_t
	if err := unix.Statfs(fd.Path, &fs); err == nil && fs.Type == mqueueMagic {
		return 0, fmt.Errorf("a POSIX message queue, which cryo does not dump yet: %w", errs.ErrNotSupported)
	}
	if err := checkReachable(fd.Link, fd.Stat); err != nil {
		return 0, err
	}
	if fd.Flags&unix.O_TMPFILE == unix.O_TMPFILE {
		// Reopened by name it would lose __O_TMPFILE from its flags.
		return 0, fmt.Errorf("a file made with O_TMPFILE, which cryo cannot re-create yet: %w", errs.ErrNotSupported)
	}
	id := d.Add(regEntry(strings.TrimSuffix(fd.Link, " (deleted)"), fd.Flags, uint64(fd.Info.Pos), fd.Stat))
	if fd.Stat.Nlink == 0 && fd.Stat.Mode&unix.S_IFMT == unix.S_IFREG {
		f, err := os.Open(fd.Path)
		if err != nil {
			return 0, fmt.Errorf("open deleted file: %w", err)
		}
		if err := d.addGhost(id, fd.Link, f, fd.Stat); err != nil {
			return 0, err
		}
	}
	return id, nil
}

type regOpen struct{}

func (regOpen) open(r *Restorer, p Proc, f *fdinfo.FileEntry) (uint64, error) {
	return r.OpenPath(p, f, f.GetReg().GetFlags())
}
