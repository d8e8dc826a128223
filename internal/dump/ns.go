package dump

import (
	"errors"
	"fmt"
	"os"
	"strconv"
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
