package dump

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	ipc_var "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-var"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/timens"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/utsns"

	"github.com/cryo-project/cryo/internal/image"
	"github.com/cryo-project/cryo/internal/imageset"
	"github.com/cryo-project/cryo/internal/nsenter"
	"github.com/cryo-project/cryo/internal/procfs"
)

// Namespaces. A process of the tree shares each namespace with the dumper,
// or has it with the whole tree, in the kinds restore makes: uts (host and
// domain name), ipc (its sysctls) and time (clock offsets). Restore gives
// the tree one new namespace of each such kind, made as the dump found it
// (utsns-ID.img, ipcns-var-ID.img, timens-ID.img, CRIU's images), and the
// dumper's namespaces of every other kind. So the dump refuses, naming
// the namespace:
//
//   - a process in a user, mount, pid, net or cgroup namespace not the
//     dumper's (or whose pid_for_children is not), which cryo does not make;
//   - a tree whose processes are in different uts, ipc or time namespaces:
//     restore makes one of each;
//   - a process whose time_for_children is not its time namespace (it
//     unshared CLONE_NEWTIME and has not forked into it yet);
//   - a namespace of the tree's that a process outside the tree is in too:
//     the restored one would not be shared with it.
//
// In an IPC namespace of the tree's own, every System V segment, semaphore
// set and message queue is the tree's (ipcns-shm/sem/msg-ID.img, package
// sysvipc), attached or used by it or not. POSIX message queues of the
// namespace's mqueue filesystem that no fd of the tree holds are not seen
// (nor by CRIU): they are not restored.
//
// An outside process whose time_for_children is the tree's time namespace
// (the parent that unshared it and forked the tree's root) is not refused:
// its children forked after the restore join the old namespace, not the
// tree's.

// namespaceKinds are the entries of /proc/PID/ns, with what each holds
// (for the refusal) and whether restore makes one for the tree.
var namespaceKinds = []struct {
	name, what string
	made       bool
}{
	{"user", "user and group id mapping, capabilities", false},
	{"mnt", "mounts", false},
	{"pid", "process ids", false},
	{"pid_for_children", "process ids of its future children", false},
	{"net", "network devices, addresses and sockets", false},
	{"ipc", "System V IPC and POSIX message queues", true},
	{"uts", "host and domain name", true},
	{"cgroup", "cgroup root", false},
	{"time", "clock offsets", true},
	{"time_for_children", "clock offsets of its future children", true},
}

// idKinds are the namespace kinds of task_kobj_ids_entry, in the order
// cryo numbers the dumper's (as before namespaces were made: an image of
// a tree in the dumper's namespaces is unchanged).
var idKinds = []string{"pid", "net", "ipc", "uts", "mnt", "user", "cgroup", "time"}

// treeNS is what the dump knows of the tree's namespaces.
type treeNS struct {
	own  map[string]string // kind → the dumper's /proc/self/ns link ("" none)
	tree map[string]string // kind → the tree's (the root's)
	ids  map[string]uint32 // link → id
	next uint32
	// What the tree's own namespaces hold, nil for a kind it shares
	// with the dumper.
	uts    *utsns.UtsnsEntry
	ipc    *ipc_var.IpcVarEntry
	clocks *timens.TimensEntry
}

// private says whether the tree has a kind namespace of its own.
func (n *treeNS) private(kind string) bool { return n.tree[kind] != n.own[kind] }

func nsLinks(dir string) (map[string]string, error) {
	links := map[string]string{}
	for _, k := range namespaceKinds {
		l, err := os.Readlink(dir + k.name)
		if errors.Is(err, os.ErrNotExist) {
			continue // a kernel without this kind of namespace
		}
		if err != nil {
			return nil, err
		}
		links[k.name] = l
	}
	return links, nil
}

// checkNamespaces reads the namespaces of every process of the frozen
// tree, refuses what restore cannot make (see above), and reads what the
// tree's own namespaces hold.
func (t *tree) checkNamespaces() error {
	own, err := nsLinks("/proc/self/ns/")
	if err != nil {
		return fmt.Errorf("cryo's own namespaces: %w", err)
	}
	n := t.ns
	n.own, n.ids = own, map[string]uint32{}
	for _, k := range idKinds {
		if l, ok := own[k]; ok {
			n.next++
			n.ids[l] = n.next
		}
	}
	root := t.procs[0]
	for _, p := range t.procs {
		links, err := nsLinks("/proc/" + strconv.Itoa(p.pid) + "/ns/")
		if err != nil {
			return fmt.Errorf("process %d: %w", p.pid, err)
		}
		if p == root {
			n.tree = links
		}
		for _, k := range namespaceKinds {
			its := links[k.name]
			if !k.made && its != own[k.name] {
				return fmt.Errorf("process %d is in %s, not cryo's %s (%s namespaces, which hold %s, are not dumped yet): %w",
					p.pid, its, own[k.name], k.name, k.what, ErrNotSupported)
			}
			if k.made && its != n.tree[k.name] {
				return fmt.Errorf("process %d is in %s, the tree's root %d in %s: a tree in several %s namespaces (restore makes one): %w",
					p.pid, its, root.pid, n.tree[k.name], k.name, ErrNotSupported)
			}
		}
		if links["time"] != links["time_for_children"] {
			return fmt.Errorf("process %d is in %s but its children go to %s (it unshared CLONE_NEWTIME and forked none since), which restore does not make: %w",
				p.pid, links["time"], links["time_for_children"], ErrNotSupported)
		}
	}
	var kinds []string
	for _, k := range []string{"uts", "ipc", "time"} {
		if n.private(k) {
			kinds = append(kinds, k)
			n.next++
			n.ids[n.tree[k]] = n.next
		}
	}
	if len(kinds) == 0 {
		return nil
	}
	if err := t.checkOutsiders(kinds); err != nil {
		return err
	}
	if n.private("uts") {
		if n.uts, err = readUts(root.pid); err != nil {
			return err
		}
	}
	if n.private("ipc") {
		if n.ipc, err = readIpcVar(root.pid); err != nil {
			return err
		}
		// Every System V object of the namespace is the tree's, as
		// CRIU dumps them (package sysvipc).
		t.sysv.Namespace(n.ids[n.tree["ipc"]], root.pid)
	}
	if n.private("time") {
		if n.clocks, err = readClocks(root.pid); err != nil {
			return err
		}
	}
	t.log.Info("namespaces of the tree's own", "kinds", kinds)
	return nil
}

// checkOutsiders refuses a namespace of the tree's that a process outside
// it is in too.
func (t *tree) checkOutsiders(kinds []string) error {
	in := map[int]bool{os.Getpid(): true}
	for _, p := range t.procs {
		in[p.pid] = true
	}
	for _, z := range t.zombies {
		in[z.pid] = true
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return err
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || in[pid] {
			continue
		}
		for _, k := range kinds {
			l, err := os.Readlink("/proc/" + e.Name() + "/ns/" + k)
			if err != nil {
				continue // gone, a zombie, or a kernel thread
			}
			if l == t.ns.tree[k] {
				name := "?"
				if st, err := procfs.StatusPid(pid); err == nil {
					name = st.Name
				}
				return fmt.Errorf("the tree's %s is also that of process %d (%s), outside the tree: a restored namespace would not be shared with it: %w",
					l, pid, name, ErrNotSupported)
			}
		}
	}
	return nil
}

// readUts reads the host and domain name of pid's UTS namespace.
func readUts(pid int) (*utsns.UtsnsEntry, error) {
	var u unix.Utsname
	if err := nsenter.Run(pid, "uts", func() error { return unix.Uname(&u) }); err != nil {
		return nil, fmt.Errorf("UTS namespace of process %d: %w", pid, err)
	}
	return &utsns.UtsnsEntry{
		Nodename:   proto.String(unix.ByteSliceToString(u.Nodename[:])),
		Domainname: proto.String(unix.ByteSliceToString(u.Domainname[:])),
	}, nil
}

// readIpcVar reads the sysctls of pid's IPC namespace.
func readIpcVar(pid int) (*ipc_var.IpcVarEntry, error) {
	e := &ipc_var.IpcVarEntry{}
	err := nsenter.Run(pid, "ipc", func() error {
		sem4, err := procfs.SysctlInts("kernel.sem")
		if err != nil {
			return err
		}
		for _, v := range sem4 {
			e.SemCtls = append(e.SemCtls, uint32(v))
		}
		for _, s := range imageset.IpcVarSysctls(e) {
			var v uint64
			var err error
			if s.Wide() {
				v, err = procfs.SysctlUint(s.Name)
			} else {
				var i int64
				i, err = procfs.SysctlInt(s.Name)
				v = uint64(i)
			}
			if errors.Is(err, os.ErrNotExist) && s.Optional {
				continue
			}
			if err != nil {
				return err
			}
			s.Set(v)
		}
		if e.AutoMsgmni == nil {
			e.AutoMsgmni = proto.Uint32(0) // required in CRIU's image; gone from the kernel since 4.1
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("IPC namespace of process %d: %w", pid, err)
	}
	return e, nil
}

// readClocks reads the clocks as pid's time namespace shows them: the
// host's plus the namespace's offsets. Restore sets offsets that make
// them go on from there.
func readClocks(pid int) (*timens.TimensEntry, error) {
	off, err := procfs.TimensOffsetsPid(pid)
	if err != nil {
		return nil, fmt.Errorf("time namespace of process %d: %w", pid, err)
	}
	var mono, boot unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &mono); err != nil {
		return nil, fmt.Errorf("clock_gettime(CLOCK_MONOTONIC): %w", err)
	}
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &boot); err != nil {
		return nil, fmt.Errorf("clock_gettime(CLOCK_BOOTTIME): %w", err)
	}
	add := func(t unix.Timespec, sec, nsec int64) *timens.Timespec {
		s, ns := t.Sec+sec, t.Nsec+nsec
		if ns >= 1e9 {
			s, ns = s+1, ns-1e9
		}
		return &timens.Timespec{TvSec: proto.Uint64(uint64(s)), TvNsec: proto.Uint64(uint64(ns))}
	}
	return &timens.TimensEntry{
		Monotonic: add(mono, off.MonotonicSec, off.MonotonicNsec),
		Boottime:  add(boot, off.BoottimeSec, off.BoottimeNsec),
	}, nil
}

// nsIDs fills the namespace part of ids, for a process of the tree or for
// the dumper (self). CRIU numbers each namespace it meets from one
// counter, and its restore compares the root task's ids with the
// dumper's (the inventory's root_ids) to learn which namespaces to
// create; equal ids create none. A kind the kernel lacks has no id, as
// CRIU writes it.
func (n *treeNS) nsIDs(ids *core.TaskKobjIdsEntry, self bool) {
	id := func(kind string) *uint32 {
		l, ok := n.own[kind]
		if !self {
			l, ok = n.tree[kind]
		}
		if !ok {
			return nil
		}
		return proto.Uint32(n.ids[l])
	}
	ids.PidNsId = id("pid")
	ids.NetNsId = id("net")
	ids.IpcNsId = id("ipc")
	ids.UtsNsId = id("uts")
	ids.MntNsId = id("mnt")
	ids.UserNsId = id("user")
	ids.CgroupNsId = id("cgroup")
	ids.TimeNsId = id("time")
}

// writeNamespaces writes what the tree's own namespaces hold: its time
// namespace's clocks in timens-ID.img, beside timens-0.img (the host's).
func (t *tree) writeNamespaces(dir *image.Dir) error {
	n := t.ns
	if n.uts != nil {
		if err := imageset.Write(dir, imageset.Utsns(n.ids[n.tree["uts"]]), n.uts); err != nil {
			return err
		}
	}
	if n.ipc != nil {
		if err := imageset.Write(dir, imageset.IpcVar(n.ids[n.tree["ipc"]]), n.ipc); err != nil {
			return err
		}
	}
	if n.clocks != nil {
		if err := imageset.Write(dir, imageset.Timens(n.ids[n.tree["time"]]), n.clocks); err != nil {
			return err
		}
	}
	return writeTimens(dir)
}
