package files

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fown"

	"github.com/cryo-project/cryo/internal/errs"
	"github.com/cryo-project/cryo/internal/kabi"
	"github.com/cryo-project/cryo/internal/procfs"
)

// A file's owner: who gets its SIGIO (and a socket's SIGURG), set with
// F_SETOWN or F_SETOWN_EX, the signal sent instead of SIGIO (F_SETSIG),
// and the real and effective uid of whoever set the owner, which the
// kernel recorded then and checks against the receiver's at every signal.
// nginx's master owns the socketpairs it talks to its workers over, with
// O_ASYNC on them: a worker's message raises SIGIO in the master.
//
// It is a property of the open file description, the same for every fd
// that shares it, so it is not a kind: the dump reads it through cryo's
// copy of the fd and writes it into the fown field of whatever entry the
// kind made (CRIU's FownEntry: pid_type is the F_OWNER_* of F_SETOWN_EX);
// the restore sets it on the fd it opened for the entry, in the process,
// as CRIU's restore_fown does: the signal, then the owner under the
// recorded uid and euid (setresuid in the process's leader only, the
// saved uid kept, so that it can go back).
//
// An owner must be a thread, a process or a process group of the tree,
// restored with its id; anything else is refused by name. O_ASYNC itself
// is each kind's flag to give back; only unix.go does yet.

// ownedFd is an fd whose SIGIO goes to someone, to check once the whole
// tree is dumped.
type ownedFd struct {
	pid, fd int
	link    string
	own     *fown.FownEntry
}

// ownerKinds names F_OWNER_*.
var ownerKinds = map[uint32]string{kabi.F_OWNER_TID: "thread", kabi.F_OWNER_PID: "process", kabi.F_OWNER_PGRP: "process group"}

// readOwner reads fd's owner, signal and uids; nil if nobody gets its
// signals. It refuses O_ASYNC on the kinds that do not give it back, but
// on a UNIX socket (unix.go sets it again) and on a lease's file (the
// lease's restore sets it, with its holder as the owner).
func readOwner(fd *Fd) (*fown.FownEntry, error) {
	if fd.Flags&unix.O_PATH != 0 {
		return nil, nil // fcntl answers EBADF: no I/O, no owner
	}
	cp, err := fd.Copy()
	if err != nil {
		return nil, fmt.Errorf("copy the fd to read its owner: %w", err)
	}
	kind, owner, err := kabi.GetOwnerEx(cp)
	if err != nil {
		return nil, fmt.Errorf("F_GETOWN_EX: %w", err)
	}
	sig, err := unix.FcntlInt(uintptr(cp), unix.F_GETSIG, 0)
	if err != nil {
		return nil, fmt.Errorf("F_GETSIG: %w", err)
	}
	// F_SETLEASE made its holder the owner and set O_ASYNC; the lease's
	// restore does both again (locks.go checks the owner is the holder).
	lease := leaseHolder(fd)
	if lease != 0 && kind == kabi.F_OWNER_PID && sig == 0 && owner == lease {
		owner = 0
	}
	if fd.Flags&unix.O_ASYNC != 0 && lease == 0 && !isUnixSocket(fd) {
		return nil, fmt.Errorf("O_ASYNC (signal-driven I/O), which cryo does not restore on this kind of file yet: %w", errs.ErrNotSupported)
	}
	if owner == 0 && sig == 0 {
		return nil, nil
	}
	// A dead owner reads as 0: the kernel would signal nobody, and
	// neither will the restored file.
	e := &fown.FownEntry{Uid: proto.Uint32(0), Euid: proto.Uint32(0), Signum: proto.Uint32(uint32(sig)), PidType: proto.Uint32(uint32(kind)), Pid: proto.Uint32(uint32(owner))}
	if owner != 0 {
		uid, euid, err := kabi.GetOwnerUids(cp)
		if err != nil {
			return nil, fmt.Errorf("F_GETOWNER_UIDS (the ids its owner was set with; the kernel has it with CONFIG_CHECKPOINT_RESTORE): %w", errors.Join(err, errs.ErrNotSupported))
		}
		e.Uid, e.Euid = proto.Uint32(uid), proto.Uint32(euid)
	} else {
		e.PidType = proto.Uint32(0)
	}
	return e, nil
}

// fownField is the fown field of the kind's entry in f (RegFileEntry,
// UnixSkEntry...), or nil if that kind's entry has none.
func fownField(f *fdinfo.FileEntry) (protoreflect.Message, protoreflect.FieldDescriptor) {
	var msg protoreflect.Message
	var field protoreflect.FieldDescriptor
	f.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() != protoreflect.MessageKind || fd.IsList() || fd.IsMap() {
			return true
		}
		sub := v.Message()
		if ff := sub.Descriptor().Fields().ByName("fown"); ff != nil && ff.Kind() == protoreflect.MessageKind && ff.Message().FullName() == (&fown.FownEntry{}).ProtoReflect().Descriptor().FullName() {
			msg, field = sub, ff
			return false
		}
		return true
	})
	return msg, field
}

// setOwner writes own into the entry with id that fd's kind made, and
// notes it for checkOwners.
func (d *Dumper) setOwner(fd *Fd, id uint32, own *fown.FownEntry) error {
	if own == nil {
		return nil
	}
	e := d.Entry(id)
	msg, field := fownField(e)
	if msg == nil {
		return fmt.Errorf("its SIGIO goes to %s %d (F_SETOWN), signal %d (F_SETSIG), and an image entry of type %v has no place for an owner: %w",
			ownerKinds[own.GetPidType()], own.GetPid(), own.GetSignum(), e.GetType(), errs.ErrNotSupported)
	}
	msg.Set(field, protoreflect.ValueOfMessage(own.ProtoReflect()))
	if own.GetPid() != 0 {
		d.owners = append(d.owners, ownedFd{pid: fd.Pid, fd: fd.Num, link: fd.Link, own: own})
	}
	return nil
}

// checkOwners refuses an owner restore could not name again: a thread,
// process or process group that is not the tree's own, whose id the
// restored file would point at nobody, or at someone else.
func (d *Dumper) checkOwners() error {
	for _, o := range d.owners {
		id := int(o.own.GetPid())
		if !d.inTree(o.own.GetPidType(), id) {
			return fmt.Errorf("fd %d (%s) of pid %d: its SIGIO goes to %s %d, outside the dumped tree: %w", o.fd, o.link, o.pid, ownerKinds[o.own.GetPidType()], id, errs.ErrNotSupported)
		}
	}
	return nil
}

// inTree says whether id, an owner of the given F_OWNER_* kind, is a
// thread, a process or a process group of the dumped tree.
func (d *Dumper) inTree(kind uint32, id int) bool {
	for pid := range d.locks.pids {
		switch kind {
		case kabi.F_OWNER_PID:
			if pid == id {
				return true
			}
		case kabi.F_OWNER_TID:
			if _, err := os.Stat("/proc/" + strconv.Itoa(pid) + "/task/" + strconv.Itoa(id)); err == nil {
				return true
			}
		case kabi.F_OWNER_PGRP:
			if st, err := procfs.StatPid(pid); err == nil && st.Pgrp == id {
				return true
			}
		}
	}
	return false
}

// entryOwner is the owner recorded in f, or nil if nobody gets its
// signals.
func entryOwner(f *fdinfo.FileEntry) *fown.FownEntry {
	msg, field := fownField(f)
	if msg == nil || !msg.Has(field) {
		return nil
	}
	own, ok := msg.Get(field).Message().Interface().(*fown.FownEntry)
	if !ok || (own.GetPid() == 0 && own.GetSignum() == 0) {
		return nil
	}
	return own
}

// ownerInImage says whether id, an owner of the given F_OWNER_* kind, is
// a thread, a process or a process group of the image's tree: the dump
// writes no other, and an image that names another is corrupt.
func (r *Restorer) ownerInImage(kind uint32, id uint32) bool {
	for _, ip := range r.set.Procs {
		switch kind {
		case kabi.F_OWNER_PID:
			if ip.Pid() == id {
				return true
			}
		case kabi.F_OWNER_TID:
			for _, t := range ip.Tree.GetThreads() {
				if t == id {
					return true
				}
			}
		case kabi.F_OWNER_PGRP:
			if ip.Tree.GetPgid() == id {
				return true
			}
		}
	}
	return false
}

// restoreOwner gives fd of p the owner and signal of entry f, setting the
// owner under the uids it was set with. The calls run in p with p's
// privileges (the restorer's, before the creds stage): the kernel lets
// setresuid and F_SETOWN do only what the restorer could do itself.
func (r *Restorer) restoreOwner(p Proc, fd uint64, f *fdinfo.FileEntry) error {
	own := entryOwner(f)
	if own == nil {
		return nil
	}
	if sig := own.GetSignum(); sig != 0 {
		if _, err := p.Call("fcntl(F_SETSIG)", unix.SYS_FCNTL, fd, unix.F_SETSIG, uint64(sig)); err != nil {
			return err
		}
	}
	if own.GetPid() == 0 {
		return nil
	}
	if _, ok := ownerKinds[own.GetPidType()]; !ok {
		return corrupt("file id %d: owner of kind %d", f.GetId(), own.GetPidType())
	}
	if !r.ownerInImage(own.GetPidType(), own.GetPid()) {
		return corrupt("file id %d: its SIGIO goes to %s %d, not one of the image's tree", f.GetId(), ownerKinds[own.GetPidType()], own.GetPid())
	}
	ids, err := p.Arg(make([]byte, 12))
	if err != nil {
		return err
	}
	if _, err := p.Call("getresuid", unix.SYS_GETRESUID, ids, ids+4, ids+8); err != nil {
		return err
	}
	b, err := p.Out(ids, 12)
	if err != nil {
		return err
	}
	ruid, euid := uint64(binary.LittleEndian.Uint32(b)), uint64(binary.LittleEndian.Uint32(b[4:]))
	const keep = ^uint64(0) // -1: leave the saved uid
	switched := ruid != uint64(own.GetUid()) || euid != uint64(own.GetEuid())
	if switched {
		if _, err := p.Call("setresuid (the ids the file's owner was set with)", unix.SYS_SETRESUID, uint64(own.GetUid()), uint64(own.GetEuid()), keep); err != nil {
			return err
		}
	}
	ex := make([]byte, 8)
	binary.LittleEndian.PutUint32(ex, own.GetPidType())
	binary.LittleEndian.PutUint32(ex[4:], own.GetPid())
	arg, err := p.Arg(ex)
	if err == nil {
		_, err = p.Call(fmt.Sprintf("fcntl(F_SETOWN_EX, %s %d)", ownerKinds[own.GetPidType()], own.GetPid()), unix.SYS_FCNTL, fd, unix.F_SETOWN_EX, arg)
	}
	if switched {
		if _, berr := p.Call("setresuid back", unix.SYS_SETRESUID, ruid, euid, keep); berr != nil && err == nil {
			err = berr
		}
	}
	return err
}
