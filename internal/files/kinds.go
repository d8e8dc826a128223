package files

import (
	"fmt"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
)

// Kind is one kind of file descriptor. Its dump and restore halves are
// made anew for each dump and each restore, so that a kind keeps its own
// state (the pipes seen so far, the sockets made so far) in its own file.
type Kind struct {
	// Name is what errors and `cryo show` call an fd of this kind.
	Name string
	// Type is the fd_types of the kind's entries in files.img: restore
	// finds the kind by it.
	Type fdinfo.FdTypes
	// Dump makes the kind's dump half; nil for entries no fd produces by
	// itself (none yet).
	Dump func() dumper
	// Restore makes the kind's restore half; nil for entries only other
	// kinds refer to (a FIFO's path is a REG entry).
	Restore func() opener
	// Describe says what `cryo show` prints for an entry.
	Describe func(f *fdinfo.FileEntry) Description
}

// Description is what `cryo show` prints of one file.
type Description struct {
	Path     string
	HasFlags bool
	Flags    uint32 // the file status flags, O_RDWR|O_APPEND, if HasFlags
	Pos      uint64
}

// table is every kind cryo checkpoints. A dump tries their matchers in
// this order: memfd before reg, since a memfd is a regular file too.
var table = []*Kind{
	&memfdKind,
	&regKind,
	&ttyKind,
	&pipeKind,
	&fifoKind,
	&eventfdKind,
	&epollKind,
	&unixKind,
	&inetKind,
	&signalfdKind,
	&timerfdKind,
	&inotifyKind,
	&pidfdKind,
}

// dumper is a kind's dump half.
type dumper interface {
	// match says whether fd is of this kind.
	match(fd *Fd) bool
	// dump records fd, adding its entry (and any it refers to) with
	// Dumper.Add, and returns the id of the entry the fd holds.
	dump(d *Dumper, fd *Fd) (uint32, error)
}

// Optional parts of a dump half.
type (
	// checker refuses, once every process of the tree is dumped, what
	// restore could not rebuild (a peer outside the tree).
	checker interface{ check(d *Dumper) error }
	// sideWriter writes what the kind keeps beside files.img.
	sideWriter interface {
		writeSide(d *Dumper, s *Side) error
	}
)

// opener is a kind's restore half.
type opener interface {
	// open makes a new fd in p on the file of entry f and returns it.
	open(r *Restorer, p Proc, f *fdinfo.FileEntry) (uint64, error)
}

// Optional parts of a restore half.
type (
	// sideLoader reads what the kind keeps beside files.img, before any
	// process exists.
	sideLoader interface{ loadSide(r *Restorer) error }
	// processDoner runs once every fd of p is in place; fds maps each fd
	// number this kind opened to its entry.
	processDoner interface {
		processDone(r *Restorer, p Proc, fds map[uint64]*fdinfo.FileEntry) error
	}
	// treeDoner runs once every process of the tree has its fds.
	treeDoner interface{ treeDone(r *Restorer) error }
)

// ByType returns the kind whose entries have type t, or nil.
func ByType(t fdinfo.FdTypes) *Kind {
	for _, k := range table {
		if k.Type == t {
			return k
		}
	}
	return nil
}

// Kinds lists the kinds cryo knows, in the order a dump tries them.
func Kinds() []*Kind { return append([]*Kind(nil), table...) }

// Describe says what an entry refers to, for `cryo show`.
func Describe(f *fdinfo.FileEntry) Description {
	if k := ByType(f.GetType()); k != nil && k.Describe != nil {
		return k.Describe(f)
	}
	return Description{Path: fmt.Sprintf("%s id %d", f.GetType(), f.GetId())}
}
