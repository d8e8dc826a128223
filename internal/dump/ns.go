package dump

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"google.golang.org/protobuf/proto"
)

// Namespaces. Restore builds the tree in the restorer's own namespaces, so
// a dump takes only processes that share every namespace with the dumper
// (which restore then gives them again, where it runs): a process in a
// namespace of its own — a hostname, IPC objects, network devices and
// sockets, mounts, cgroup root, clock offsets, user or pid mapping the
// restorer's do not have — would come back in the restorer's and see a
// different world. Such a process is refused, naming the namespace, until
// cryo dumps and makes namespaces.
//
// pid_for_children and time_for_children count too: a process that
// unshared them without forking would put its next child in a namespace
// restore does not make.

// namespaceKinds are the entries of /proc/PID/ns that restore must find
// equal to its own, with what each holds (for the refusal).
var namespaceKinds = []struct{ name, what string }{
	{"user", "user and group id mapping, capabilities"},
	{"mnt", "mounts"},
	{"pid", "process ids"},
	{"pid_for_children", "process ids of its future children"},
	{"net", "network devices, addresses and sockets"},
	{"ipc", "System V IPC and POSIX message queues"},
	{"uts", "host and domain name"},
	{"cgroup", "cgroup root"},
	{"time", "clock offsets"},
	{"time_for_children", "clock offsets of its future children"},
}

// checkNamespaces refuses process pid if it is in a namespace of any kind
// other than the dumper's.
func checkNamespaces(pid int) error {
	dir := "/proc/" + strconv.Itoa(pid) + "/ns/"
	for _, k := range namespaceKinds {
		own, oerr := os.Readlink("/proc/self/ns/" + k.name)
		its, err := os.Readlink(dir + k.name)
		switch {
		case errors.Is(oerr, os.ErrNotExist) && errors.Is(err, os.ErrNotExist):
			continue // a kernel without this kind of namespace
		case err != nil:
			return fmt.Errorf("process %d: %w", pid, err)
		case oerr != nil:
			return fmt.Errorf("cryo's own %s namespace: %w", k.name, oerr)
		}
		if its != own {
			return fmt.Errorf("process %d is in %s, not cryo's %s (%s namespaces, which hold %s, are not dumped yet): %w",
				pid, its, own, k.name, k.what, ErrNotSupported)
		}
	}
	return nil
}

// nsIDs is the namespace part of the ids every process of the tree and the
// dumper share (checkNamespaces refuses any other tree): CRIU numbers each
// namespace it meets from one counter, and its restore compares the root
// task's ids with the dumper's (the inventory's root_ids) to learn which
// namespaces to create; equal ids create none. A kind the kernel lacks has
// no id, as CRIU writes it.
func nsIDs(ids *core.TaskKobjIdsEntry) {
	next := uint32(0)
	id := func(kind string) *uint32 {
		if _, err := os.Readlink("/proc/self/ns/" + kind); err != nil {
			return nil
		}
		next++
		return proto.Uint32(next)
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
