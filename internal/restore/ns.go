package restore

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	ipc_var "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-var"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/timens"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/utsns"

	"github.com/cryo-project/cryo/internal/image"
	"github.com/cryo-project/cryo/internal/imageset"
	"github.com/cryo-project/cryo/internal/inject"
	"github.com/cryo-project/cryo/internal/nsenter"
	"github.com/cryo-project/cryo/internal/procfs"
	"github.com/cryo-project/cryo/internal/sysvipc"
)

// Namespaces. The tree's root task's namespace ids are compared with the
// dumper's (the inventory's root_ids), as CRIU's restore does: a kind
// whose ids differ is a namespace the tree had of its own, and restore
// makes a new one for the whole tree. The stub that gives birth to the
// root unshares them (CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWTIME) and gets
// them as dumped, before its clone3: the root, and every process forked
// from it, is born in them.
//
//   - uts: sethostname and setdomainname injected into the stub.
//   - ipc: the namespace's sysctls (ipc_var_entry), written by cryo from a
//     thread of its own inside the stub's new namespace (package nsenter),
//     then its System V objects made there with their ids (package
//     sysvipc, from ipcns-shm/sem/msg-ID.img), then the next-id sysctls.
//   - time: unshare(CLONE_NEWTIME) puts the stub's children, not the stub,
//     in the new namespace, whose offsets can be written until a task
//     enters it: cryo writes /proc/STUB/timens_offsets, with offsets that
//     make CLOCK_MONOTONIC and CLOCK_BOOTTIME go on from their values at
//     dump (timens-ID.img), as CRIU sets them. The time the tree spent
//     dumped does not pass for it.
//
// Any other kind of namespace of the tree's own is refused by name (the
// dump refuses them first).

// nsPlan is what the tree's root is to be born in; nil: cryo's namespaces.
type nsPlan struct {
	flags  uintptr
	kinds  []string
	ipcID  uint32 // the image's id of the new IPC namespace
	uts    *utsns.UtsnsEntry
	ipc    *ipc_var.IpcVarEntry
	clocks *timens.TimensEntry
	// sysv makes the System V objects, in the new IPC namespace.
	sysv *sysvipc.Restorer
}

// loadNamespaces reads which namespaces the image's tree had of its own,
// and what they held.
func loadNamespaces(set *imageset.Set) (*nsPlan, error) {
	root := set.Inventory.GetRootIds()
	if root == nil || len(set.Procs) == 0 || set.Procs[0].Ids == nil {
		return nil, nil // an image from before ids: the dumper's namespaces
	}
	ids := set.Procs[0].Ids
	for _, p := range set.Procs[1:] {
		if p.Ids != nil && !sameNS(p.Ids, ids) {
			return nil, fmt.Errorf("process %d is in other namespaces than the tree's root %d: one tree in several namespaces of a kind: %w", p.Pid(), set.Procs[0].Pid(), ErrNotSupported)
		}
	}
	plan := &nsPlan{}
	for _, k := range []struct {
		name       string
		tree, self *uint32
		flag       uintptr
	}{
		{"pid", ids.PidNsId, root.PidNsId, 0}, {"net", ids.NetNsId, root.NetNsId, 0},
		{"mnt", ids.MntNsId, root.MntNsId, 0}, {"user", ids.UserNsId, root.UserNsId, 0},
		{"cgroup", ids.CgroupNsId, root.CgroupNsId, 0},
		{"uts", ids.UtsNsId, root.UtsNsId, unix.CLONE_NEWUTS}, {"ipc", ids.IpcNsId, root.IpcNsId, unix.CLONE_NEWIPC},
		{"time", ids.TimeNsId, root.TimeNsId, unix.CLONE_NEWTIME},
	} {
		if (k.tree == nil) == (k.self == nil) && (k.tree == nil || *k.tree == *k.self) {
			continue
		}
		if k.flag == 0 || k.tree == nil {
			return nil, fmt.Errorf("the tree is in a %s namespace of its own, which cryo does not make: %w", k.name, ErrNotSupported)
		}
		plan.flags |= k.flag
		plan.kinds = append(plan.kinds, k.name)
		var err error
		switch k.name {
		case "uts":
			plan.uts = &utsns.UtsnsEntry{}
			err = imageset.ReadOne(set.Dir, imageset.Utsns(*k.tree), plan.uts)
		case "ipc":
			plan.ipc = &ipc_var.IpcVarEntry{}
			plan.ipcID = *k.tree
			err = imageset.ReadOne(set.Dir, imageset.IpcVar(*k.tree), plan.ipc)
		case "time":
			plan.clocks = &timens.TimensEntry{}
			err = imageset.ReadOne(set.Dir, imageset.Timens(*k.tree), plan.clocks)
			if err == nil && (plan.clocks.GetMonotonic() == nil || plan.clocks.GetBoottime() == nil ||
				plan.clocks.GetMonotonic().GetTvNsec() >= 1e9 || plan.clocks.GetBoottime().GetTvNsec() >= 1e9) {
				err = &image.FormatError{File: imageset.Timens(*k.tree).Name, Offset: -1, Err: fmt.Errorf("clocks %v: %w", plan.clocks, image.ErrImageCorrupt)}
			}
		}
		if err != nil {
			return nil, err
		}
	}
	if plan.flags == 0 {
		return nil, nil
	}
	return plan, nil
}

func sameNS(a, b *core.TaskKobjIdsEntry) bool {
	eq := func(x, y *uint32) bool { return (x == nil && y == nil) || (x != nil && y != nil && *x == *y) }
	return eq(a.PidNsId, b.PidNsId) && eq(a.NetNsId, b.NetNsId) && eq(a.IpcNsId, b.IpcNsId) && eq(a.UtsNsId, b.UtsNsId) &&
		eq(a.MntNsId, b.MntNsId) && eq(a.UserNsId, b.UserNsId) && eq(a.CgroupNsId, b.CgroupNsId) && eq(a.TimeNsId, b.TimeNsId)
}

// make gives the stub the tree's new namespaces, before it clones the
// root.
func (n *nsPlan) make(st *inject.Stub) error {
	pid := st.Proc.Pid
	call := func(name string, nr uintptr, args ...uint64) error {
		ret, err := st.Syscall(nr, args...)
		if err == nil {
			err = inject.Errno(ret)
		}
		if err != nil {
			return fmt.Errorf("%s in the restore stub: %w", name, err)
		}
		return nil
	}
	if err := call("unshare("+strings.Join(n.kinds, ", ")+")", unix.SYS_UNSHARE, uint64(n.flags)); err != nil {
		return err
	}
	if n.uts != nil {
		for _, s := range []struct {
			name string
			nr   uintptr
			val  string
		}{{"sethostname", unix.SYS_SETHOSTNAME, n.uts.GetNodename()}, {"setdomainname", unix.SYS_SETDOMAINNAME, n.uts.GetDomainname()}} {
			p, err := st.Mem.Put([]byte(s.val + "\x00"))
			if err != nil {
				return err
			}
			if err := call(s.name, s.nr, p, uint64(len(s.val))); err != nil {
				return err
			}
		}
	}
	if n.ipc != nil {
		if err := nsenter.Run(pid, "ipc", func() error { return writeIpcVar(n.ipc, false) }); err != nil {
			return fmt.Errorf("IPC namespace sysctls: %w", err)
		}
		// The System V objects, with their ids, in the namespace
		// (held open until the restore ends: a failed one removes
		// them there), then the next ids as they were.
		f, err := os.Open(fmt.Sprintf("/proc/%d/ns/ipc", pid))
		if err != nil {
			return err
		}
		n.sysv.Namespace(f)
		if err := n.sysv.Create(); err != nil {
			return err
		}
		if err := nsenter.Run(pid, "ipc", func() error { return writeIpcVar(n.ipc, true) }); err != nil {
			return fmt.Errorf("IPC namespace sysctls: %w", err)
		}
	}
	if n.clocks != nil {
		if err := setClocks(pid, n.clocks); err != nil {
			return err
		}
	}
	return nil
}

// writeIpcVar writes e's sysctls into the calling thread's IPC namespace:
// the limits, or the next ids (nextIDs), which the objects' creation sets.
func writeIpcVar(e *ipc_var.IpcVarEntry, nextIDs bool) error {
	write := func(name, v string) error {
		if err := os.WriteFile("/proc/sys/"+strings.ReplaceAll(name, ".", "/"), []byte(v), 0); err != nil {
			return fmt.Errorf("%s = %s: %w", name, v, err)
		}
		return nil
	}
	if len(e.SemCtls) > 0 && !nextIDs {
		if len(e.SemCtls) != 4 {
			return fmt.Errorf("kernel.sem of %d values, not 4: %w", len(e.SemCtls), image.ErrImageCorrupt)
		}
		v := make([]string, 4)
		for i, x := range e.SemCtls {
			v[i] = strconv.FormatUint(uint64(x), 10)
		}
		if err := write("kernel.sem", strings.Join(v, " ")); err != nil {
			return err
		}
	}
	for _, s := range imageset.IpcVarSysctls(e) {
		v, ok := s.Text()
		next := strings.HasSuffix(s.Name, "_next_id")
		if next != nextIDs {
			continue
		}
		if !ok || (v == "-1" && next) {
			continue // -1 is a new namespace's (and cannot be written)
		}
		if _, err := os.Stat("/proc/sys/" + strings.ReplaceAll(s.Name, ".", "/")); os.IsNotExist(err) && s.Optional {
			continue // auto_msgmni, gone from the kernel since 4.1
		}
		if err := write(s.Name, v); err != nil {
			return err
		}
	}
	return nil
}

// setClocks sets the offsets of the time namespace stub pid made for its
// children so that its clocks read what they read at dump.
func setClocks(pid int, c *timens.TimensEntry) error {
	var mono, boot unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &mono); err != nil {
		return err
	}
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &boot); err != nil {
		return err
	}
	diff := func(want *timens.Timespec, now unix.Timespec) (int64, int64) {
		s, ns := int64(want.GetTvSec())-now.Sec, int64(want.GetTvNsec())-now.Nsec
		if ns < 0 {
			s, ns = s-1, ns+1e9
		}
		return s, ns
	}
	var o procfs.TimensOffsets
	o.MonotonicSec, o.MonotonicNsec = diff(c.GetMonotonic(), mono)
	o.BoottimeSec, o.BoottimeNsec = diff(c.GetBoottime(), boot)
	if err := os.WriteFile("/proc/"+strconv.Itoa(pid)+"/timens_offsets", procfs.FormatTimensOffsets(o), 0); err != nil {
		return fmt.Errorf("time namespace offsets %+v: %w", o, err)
	}
	return nil
}
