package sysvipc

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/inventory"
	ipc_msg "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-msg"
	ipc_sem "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-sem"

	"github.com/cryo-project/cryo/internal/image"
	"github.com/cryo-project/cryo/internal/imageset"
	"github.com/cryo-project/cryo/internal/kabi"
)

// commit makes dir a complete image (an inventory, then the commit) and
// opens it as restore does.
func commit(t *testing.T, dir *image.Dir) *image.Dir {
	t.Helper()
	if err := imageset.Write(dir, imageset.Inventory, &inventory.InventoryEntry{ImgVersion: proto.Uint32(2)}); err != nil {
		t.Fatal(err)
	}
	if err := dir.Commit(); err != nil {
		t.Fatal(err)
	}
	d, err := image.Open(dir.Path())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func newDir(t *testing.T) *image.Dir {
	t.Helper()
	dir, err := image.Create(filepath.Join(t.TempDir(), "img"))
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func perm(key int32, mode uint32) unix.SysvIpcPerm {
	return unix.SysvIpcPerm{Key: key, Uid: 1, Gid: 2, Cuid: 3, Cgid: 4, Mode: mode}
}

// TestImageRoundTrip: the sets and queues written in CRIU's layouts (the
// values and texts padded to 8 bytes) read back the same, with the pids
// of their last operations.
func TestImageRoundTrip(t *testing.T) {
	d := &Dumper{
		sems: []*semSet{
			{id: 7, ds: kabi.SemidDs{Perm: perm(0x1234, 0o640)}, values: []uint16{5, 0, 2}, pids: []int32{10, 0, 11}},
			{id: 9, ds: kabi.SemidDs{Perm: perm(0, 0o600)}, values: []uint16{kabi.SEMVMX, 1, 2, 3, 4}, pids: []int32{1, 2, 3, 4, 5}},
		},
		msgs: []*msgQueue{
			{id: 3, ds: kabi.MsqidDs{Perm: perm(0x99, 0o620), Qbytes: 200, Lspid: 10, Lrpid: 12},
				msgs: []message{{3, []byte("alpha")}, {1, bytes.Repeat([]byte{0xa5}, 300)}, {7, []byte{}}, {3, []byte("omegaXYZ")}}},
			{id: 4, ds: kabi.MsqidDs{Perm: perm(0, 0o600), Qbytes: 16384}},
		},
	}
	dir := newDir(t)
	if err := d.Write(dir); err != nil {
		t.Fatal(err)
	}
	semPids, msgPids := d.SemPids(), d.MsgPids()
	r, err := Load(commit(t, dir), semPids, msgPids)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.sems) != 2 || len(r.msgs) != 2 {
		t.Fatalf("read %d sets and %d queues, want 2 and 2", len(r.sems), len(r.msgs))
	}
	for i, s := range d.sems {
		got := r.sems[i]
		if got.entry.GetDesc().GetId() != uint32(s.id) || got.entry.GetDesc().GetKey() != uint32(s.ds.Perm.Key) ||
			got.entry.GetDesc().GetMode() != s.ds.Perm.Mode || got.entry.GetDesc().GetCuid() != 3 {
			t.Errorf("set %d: desc %v", s.id, got.entry.GetDesc())
		}
		if !equal(got.values, s.values) || !equal(got.pids, s.pids) {
			t.Errorf("set %d: values %v pids %v, want %v %v", s.id, got.values, got.pids, s.values, s.pids)
		}
	}
	for i, q := range d.msgs {
		got := r.msgs[i]
		if got.entry.GetDesc().GetId() != uint32(q.id) || got.entry.GetQbytes() != uint32(q.ds.Qbytes) ||
			got.lspid != q.ds.Lspid || got.lrpid != q.ds.Lrpid || len(got.msgs) != len(q.msgs) {
			t.Fatalf("queue %d: %v lspid %d lrpid %d, %d messages", q.id, got.entry, got.lspid, got.lrpid, len(got.msgs))
		}
		for j, m := range q.msgs {
			if got.msgs[j].typ != m.typ || !bytes.Equal(got.msgs[j].text, m.text) {
				t.Errorf("queue %d message %d: type %d %q, want %d %q", q.id, j, got.msgs[j].typ, got.msgs[j].text, m.typ, m.text)
			}
		}
	}
}

func equal[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestLoadCorrupt: what no kernel makes is refused as a corrupt image,
// naming the file.
func TestLoadCorrupt(t *testing.T) {
	semEntry := func(id uint32) *ipc_sem.IpcSemEntry {
		return &ipc_sem.IpcSemEntry{Desc: desc(perm(1, 0o600), int32(id)), Nsems: proto.Uint32(1)}
	}
	for _, tc := range []struct {
		name  string
		write func(dir *image.Dir) error
	}{
		{"sem value above SEMVMX", func(dir *image.Dir) error {
			return semFile(dir, semEntry(1), []byte{0xff, 0xff, 0, 0, 0, 0, 0, 0})
		}},
		{"no semaphores", func(dir *image.Dir) error {
			e := semEntry(1)
			e.Nsems = proto.Uint32(0)
			return semFile(dir, e, nil)
		}},
		{"set twice", func(dir *image.Dir) error {
			return semFile(dir, semEntry(1), make([]byte, 8), semEntry(1), make([]byte, 8))
		}},
		{"message of type 0", func(dir *image.Dir) error {
			f := imageset.IpcMsg(NsID)
			w, err := dir.Create(f.Name, f.Magic)
			if err != nil {
				return err
			}
			if err := w.Write(&ipc_msg.IpcMsgEntry{Desc: semEntry(1).Desc, Qbytes: proto.Uint32(100), Qnum: proto.Uint32(1)}); err != nil {
				return err
			}
			if err := w.Write(&ipc_msg.IpcMsg{Mtype: proto.Uint64(0), Msize: proto.Uint32(1)}); err != nil {
				return err
			}
			if err := w.WriteRaw(make([]byte, 8)); err != nil {
				return err
			}
			return w.Close()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := newDir(t)
			if err := tc.write(dir); err != nil {
				t.Fatal(err)
			}
			_, err := Load(commit(t, dir), nil, nil)
			var fe *image.FormatError
			if !errors.Is(err, image.ErrImageCorrupt) || !errors.As(err, &fe) {
				t.Fatalf("Load: %v, want a FormatError wrapping ErrImageCorrupt", err)
			}
		})
	}
}

// semFile writes ipcns-sem-1.img of entries, each followed by its raw bytes.
func semFile(dir *image.Dir, parts ...any) error {
	f := imageset.IpcSem(NsID)
	w, err := dir.Create(f.Name, f.Magic)
	if err != nil {
		return err
	}
	for _, p := range parts {
		switch p := p.(type) {
		case *ipc_sem.IpcSemEntry:
			err = w.Write(p)
		case []byte:
			err = w.WriteRaw(p)
		}
		if err != nil {
			return err
		}
	}
	return w.Close()
}

// TestOwners: a set or queue is the tree's by a last pid of the tree or a
// thread of the tree blocked on it, and a last pid is an outsider only if
// a process outside the tree has it now.
func TestOwners(t *testing.T) {
	o := newOwners([]Task{
		{Pid: 100, Tid: 100, Syscall: -1},
		{Pid: 100, Tid: 101, Syscall: unix.SYS_SEMOP, Arg0: 5},
		{Pid: 200, Tid: 200, Syscall: unix.SYS_MSGRCV, Arg0: 9},
	}, []int{300})
	for _, c := range []struct {
		what string
		got  bool
		want bool
	}{
		{"pid 100 in the tree", o.inTree(100), true},
		{"zombie 300 in the tree", o.inTree(300), true},
		{"pid 0 in the tree", o.inTree(0), false},
		{"waiter on set 5", o.waiter(5, unix.SYS_SEMOP, unix.SYS_SEMTIMEDOP) == 101, true},
		{"waiter on set 9", o.waiter(9, unix.SYS_SEMOP, unix.SYS_SEMTIMEDOP) != 0, false},
		{"waiter on queue 9", o.waiter(9, unix.SYS_MSGSND, unix.SYS_MSGRCV) == 200, true},
		{"pid 1 is an outsider", o.outsider(1), true},
		{"pid 100 is an outsider", o.outsider(100), false},
		{"pid 1<<30 (none) is an outsider", o.outsider(1 << 30), false},
	} {
		if c.got != c.want {
			t.Errorf("%s: %v, want %v", c.what, c.got, c.want)
		}
	}
}

// FuzzLoad: any bytes in ipcns-sem-1.img and ipcns-msg-1.img load or are
// refused with an error; nothing panics or allocates past the file.
func FuzzLoad(f *testing.F) {
	d := &Dumper{
		sems: []*semSet{{id: 7, ds: kabi.SemidDs{Perm: perm(0x1234, 0o640)}, values: []uint16{5, 0, 2}, pids: []int32{10, 0, 11}}},
		msgs: []*msgQueue{{id: 3, ds: kabi.MsqidDs{Perm: perm(0x99, 0o620), Qbytes: 200},
			msgs: []message{{3, []byte("alpha")}, {7, nil}}}},
	}
	dir, err := image.Create(filepath.Join(f.TempDir(), "img"))
	if err != nil {
		f.Fatal(err)
	}
	if err := d.Write(dir); err != nil {
		f.Fatal(err)
	}
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir.Path(), name))
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	f.Add(read(imageset.IpcSem(NsID).Name), read(imageset.IpcMsg(NsID).Name))
	f.Fuzz(func(t *testing.T, sem, msg []byte) {
		dir := newDir(t)
		for _, file := range []struct {
			name string
			b    []byte
		}{{imageset.IpcSem(NsID).Name, sem}, {imageset.IpcMsg(NsID).Name, msg}} {
			w, err := dir.CreateRaw(file.name)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write(file.b); err != nil {
				t.Fatal(err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
		}
		_, _ = Load(commit(t, dir), map[int32][]int32{7: {1, 2, 3}}, nil)
	})
}
