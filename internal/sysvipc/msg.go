package sysvipc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	ipc_msg "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-msg"

	"github.com/cryo-project/cryo/internal/errs"
	"github.com/cryo-project/cryo/internal/feature"
	"github.com/cryo-project/cryo/internal/image"
	"github.com/cryo-project/cryo/internal/imageset"
	"github.com/cryo-project/cryo/internal/kabi"
	"github.com/cryo-project/cryo/internal/procfs"
)

// maxQueueBytes bounds the messages of a queue, dumped or read from an
// image (kernel.msgmnb, the default qbytes, is 16 KiB).
const maxQueueBytes = 1 << 30

// maxInjected bounds a message that a process of the tree sends itself at
// restore (it goes through the process's scratch area); a larger one is
// sent by cryo.
const maxInjected = 64 << 10

type message struct {
	typ  int64
	text []byte
}

// msgQueue is a message queue of the tree's, as dumped.
type msgQueue struct {
	id   int32
	ds   kabi.MsqidDs
	msgs []message
}

func msgName(key, id uint32) string {
	return fmt.Sprintf("System V message queue (key %#x, id %d)", key, id)
}

func (q *msgQueue) name() string { return msgName(uint32(q.ds.Perm.Key), uint32(q.id)) }

// checkMsgs reads the namespace's queues, keeps the tree's, refuses one
// another live process used last, and copies the messages of the others
// (msgrcv MSG_COPY, which leaves them queued).
func (d *Dumper) checkMsgs(o *owners) error {
	all, err := procfs.SysvMsg()
	if err != nil {
		return fmt.Errorf("list System V message queues: %w", err)
	}
	d.msgs = d.msgs[:0]
	for _, s := range all {
		if !o.all && !o.inTree(s.LSpid) && !o.inTree(s.LRpid) && o.waiter(s.ID, unix.SYS_MSGSND, unix.SYS_MSGRCV) == 0 {
			continue
		}
		q := &msgQueue{id: s.ID}
		if q.ds, err = kabi.MsgStat(int(s.ID)); err != nil {
			if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EIDRM) {
				continue // removed meanwhile
			}
			return fmt.Errorf("msgctl(IPC_STAT) of %s: %w", msgName(uint32(s.Key), uint32(s.ID)), err)
		}
		for _, pid := range []int32{q.ds.Lspid, q.ds.Lrpid} {
			if o.outsider(pid) {
				return fmt.Errorf("%s: pid %d, not of the tree, was its last sender or receiver; a restored copy would not be shared with it: %w", q.name(), pid, errs.ErrNotSupported)
			}
		}
		if q.ds.Qnum == 0 {
			d.msgs = append(d.msgs, q)
			continue
		}
		if q.ds.Cbytes > maxQueueBytes || q.ds.Qnum > maxQueueBytes {
			return fmt.Errorf("%s: %d messages, %d bytes: %w", q.name(), q.ds.Qnum, q.ds.Cbytes, errs.ErrNotSupported)
		}
		if err := feature.MsgCopy.Check(); err != nil {
			return fmt.Errorf("%s holds %d messages, which cannot be read without taking them: %w", q.name(), q.ds.Qnum, err)
		}
		// No message is larger than all of them together.
		buf := make([]byte, 8+q.ds.Cbytes)
		for i := uint64(0); i < q.ds.Qnum; i++ {
			n, err := kabi.MsgRcv(int(s.ID), buf, int64(i), unix.IPC_NOWAIT|kabi.MSG_COPY)
			if err != nil {
				return fmt.Errorf("msgrcv(MSG_COPY) of message %d of %s: %w", i, q.name(), err)
			}
			q.msgs = append(q.msgs, message{typ: int64(binary.NativeEndian.Uint64(buf)), text: append([]byte(nil), buf[8:8+n]...)})
		}
		d.msgs = append(d.msgs, q)
	}
	return nil
}

// writeMsgs writes ipcns-msg-1.img: each queue's entry, then each message
// (ipc_msg, then its text padded to 8 bytes), CRIU's layout.
func (d *Dumper) writeMsgs(dir *image.Dir) error {
	if len(d.msgs) == 0 {
		return nil
	}
	f := imageset.IpcMsg(d.id())
	w, err := dir.Create(f.Name, f.Magic)
	if err != nil {
		return err
	}
	defer w.Close()
	for _, q := range d.msgs {
		e := &ipc_msg.IpcMsgEntry{Desc: desc(q.ds.Perm, q.id), Qbytes: proto.Uint32(uint32(min(q.ds.Qbytes, 1<<32-1))), Qnum: proto.Uint32(uint32(len(q.msgs)))}
		if err := w.Write(e); err != nil {
			return err
		}
		for _, m := range q.msgs {
			if err := w.Write(&ipc_msg.IpcMsg{Mtype: proto.Uint64(uint64(m.typ)), Msize: proto.Uint32(uint32(len(m.text)))}); err != nil {
				return err
			}
			b := make([]byte, (len(m.text)+7)&^7)
			copy(b, m.text)
			if err := w.WriteRaw(b); err != nil {
				return err
			}
		}
	}
	return w.Close()
}

// MsgPids are the last sender and receiver of each dumped queue, by id,
// for meta.Meta.MsgPids.
func (d *Dumper) MsgPids() map[int32][2]int32 {
	if len(d.msgs) == 0 {
		return nil
	}
	m := map[int32][2]int32{}
	for _, q := range d.msgs {
		m[q.id] = [2]int32{q.ds.Lspid, q.ds.Lrpid}
	}
	return m
}

// msgRestore is a queue of the image.
type msgRestore struct {
	entry        *ipc_msg.IpcMsgEntry
	msgs         []message
	lspid, lrpid int32
	made         bool
}

func (q *msgRestore) name() string {
	return msgName(q.entry.GetDesc().GetKey(), q.entry.GetDesc().GetId())
}

func (r *Restorer) loadMsgs(pids map[int32][2]int32) error {
	f := imageset.IpcMsg(r.nsID)
	if !r.dir.Has(f.Name) {
		return nil
	}
	rd, err := r.dir.Open(f.Name, f.Magic)
	if err != nil {
		return err
	}
	defer rd.Close()
	seen := map[uint32]bool{}
	for rd.Remaining() > 0 {
		e := &ipc_msg.IpcMsgEntry{}
		at := rd.Offset()
		if err := rd.Next(e); err != nil {
			return err
		}
		id := e.GetDesc().GetId()
		bad := func(at int64, format string, args ...any) error {
			return &image.FormatError{File: f.Name, Offset: at, Err: fmt.Errorf(format+": %w", append(args, image.ErrImageCorrupt)...)}
		}
		switch {
		case e.GetDesc() == nil:
			return bad(at, "message queue without ipc_desc_entry")
		case id > 1<<31-1 || seen[id]:
			return bad(at, "message queue id %d (twice?)", id)
		case e.GetQnum() > maxQueueBytes:
			return bad(at, "message queue id %d with %d messages", id, e.GetQnum())
		}
		seen[id] = true
		p := pids[int32(id)]
		q := &msgRestore{entry: e, lspid: p[0], lrpid: p[1]}
		total := uint64(0)
		for i := uint32(0); i < e.GetQnum(); i++ {
			m := &ipc_msg.IpcMsg{}
			at := rd.Offset()
			if err := rd.Next(m); err != nil {
				return err
			}
			size := uint64(m.GetMsize())
			if total += size; total > maxQueueBytes || int64(m.GetMtype()) <= 0 {
				return bad(at, "message %d of queue id %d: type %d, %d bytes", i, id, int64(m.GetMtype()), size)
			}
			b, err := rd.Raw(int64((size + 7) &^ 7))
			if err != nil {
				return err
			}
			text := make([]byte, size)
			if size > 0 { // a SectionReader's ReadAt at its end is io.EOF
				if _, err := b.ReadAt(text, 0); err != nil {
					return err
				}
			}
			q.msgs = append(q.msgs, message{typ: int64(m.GetMtype()), text: text})
		}
		r.msgs = append(r.msgs, q)
	}
	return nil
}

func (r *Restorer) checkMsgs() error {
	if len(r.msgs) == 0 {
		return nil
	}
	all, err := procfs.SysvMsg()
	if err != nil {
		return fmt.Errorf("list System V message queues: %w", err)
	}
	for _, q := range r.msgs {
		d := q.entry.GetDesc()
		if err := taken(q.name(), d.GetId(), d.GetKey(), "message queue", all, func(o procfs.MsgQueue) (int32, int32) { return o.ID, o.Key }); err != nil {
			return err
		}
	}
	return nil
}

// create makes queue q with its key, id, creator, owner and mode, and a
// qbytes that holds its messages (Last sends them and sets the dumped
// qbytes, which may be lower than what they take).
func (q *msgRestore) create(ns *os.File) error {
	d := q.entry.GetDesc()
	want := int(d.GetId())
	if err := nextID("msg", d.GetId()); err != nil {
		return err
	}
	if err := asCreator(ns, d.GetCuid(), d.GetCgid(), func() error {
		id, err := kabi.MsgGet(int32(d.GetKey()), unix.IPC_CREAT|unix.IPC_EXCL|0o600)
		if err != nil {
			return fmt.Errorf("msgget: %w", err)
		}
		q.made = true
		if id != want {
			_ = kabi.MsgRemove(id)
			q.made = false
			return fmt.Errorf("the kernel gave id %d (another queue was made meanwhile): %w", id, unix.EEXIST)
		}
		return nil
	}); err != nil {
		return err
	}
	total := uint64(0)
	for _, m := range q.msgs {
		total += uint64(len(m.text))
	}
	// msgsnd needs cbytes+size <= qbytes and qnum+1 <= qbytes; one more
	// for the empty message Last may send and take again.
	return q.setPerm(max(uint64(q.entry.GetQbytes()), total, uint64(len(q.msgs))+1, 1))
}

// setPerm sets owner, mode and qbytes (IPC_SET; a qbytes above
// kernel.msgmnb needs CAP_SYS_RESOURCE).
func (q *msgRestore) setPerm(qbytes uint64) error {
	d := q.entry.GetDesc()
	id := int(d.GetId())
	ds, err := kabi.MsgStat(id)
	if err != nil {
		return fmt.Errorf("IPC_STAT: %w", err)
	}
	ds.Perm.Uid, ds.Perm.Gid, ds.Perm.Mode, ds.Qbytes = d.GetUid(), d.GetGid(), d.GetMode()&0o777, qbytes
	if err := kabi.MsgSetPerm(id, &ds); err != nil {
		return fmt.Errorf("IPC_SET (qbytes %d): %w", qbytes, err)
	}
	return nil
}

// last queues the messages again in their order, with the dumped last
// sender and receiver doing the last send and receive as the kernel
// records them (lspid, lrpid): the receiver sends itself an empty message
// of a type no message has and takes it back (or takes the sender's, if
// the queue is empty), and the sender sends the last message. cryo does
// what a process outside the tree, gone, did.
func (q *msgRestore) last(as As, ns *os.File) error {
	id := uint64(q.entry.GetDesc().GetId())
	used := map[int64]bool{}
	for _, m := range q.msgs {
		used[m.typ] = true
	}
	dummy := int64(1)
	for used[dummy] {
		dummy++
	}
	empty := make([]byte, 8)
	binary.NativeEndian.PutUint64(empty, uint64(dummy))
	send := func(pid int32, buf []byte) error {
		if pid > 0 && len(buf) <= maxInjected {
			done, err := as(int(pid), "msgsnd", unix.SYS_MSGSND, buf, 1, id, 0, uint64(len(buf)-8), unix.IPC_NOWAIT)
			if err != nil || done {
				return err
			}
		}
		return in(ns, func() error { return kabi.MsgSnd(int(id), buf, unix.IPC_NOWAIT) })
	}
	recv := func(pid int32) error {
		if pid > 0 {
			done, err := as(int(pid), "msgrcv", unix.SYS_MSGRCV, make([]byte, 8), 1, id, 0, 0, uint64(dummy), unix.IPC_NOWAIT)
			if err != nil || done {
				return err
			}
		}
		return in(ns, func() error {
			_, err := kabi.MsgRcv(int(id), make([]byte, 8), dummy, unix.IPC_NOWAIT)
			return err
		})
	}
	if q.lrpid != 0 {
		from := q.lrpid
		if len(q.msgs) == 0 && q.lspid != 0 {
			from = q.lspid
		}
		if err := send(from, empty); err != nil {
			return fmt.Errorf("send an empty message as pid %d: %w", from, err)
		}
		if err := recv(q.lrpid); err != nil {
			return fmt.Errorf("take it back as pid %d: %w", q.lrpid, err)
		}
	}
	for i, m := range q.msgs {
		buf := make([]byte, 8+len(m.text))
		binary.NativeEndian.PutUint64(buf, uint64(m.typ))
		copy(buf[8:], m.text)
		by := int32(0)
		if i == len(q.msgs)-1 {
			by = q.lspid
		}
		if err := send(by, buf); err != nil {
			return fmt.Errorf("message %d (type %d, %d bytes): %w", i, m.typ, len(m.text), err)
		}
	}
	return in(ns, func() error { return q.setPerm(uint64(q.entry.GetQbytes())) })
}

func (q *msgRestore) remove() {
	if q.made {
		_ = kabi.MsgRemove(int(q.entry.GetDesc().GetId()))
		q.made = false
	}
}
