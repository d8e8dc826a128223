package imageset

import (
	"errors"
	"fmt"

	core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/timens"
)

// CheckCRIU reports what of a loaded image CRIU's restore (4.2) would
// refuse or misread: the inventory's fields it checks, an ids image for
// every process that agrees with its core (CRIU reads the fd table and the
// clone flags from ids, not from the core), root_ids that are not the root
// task's own (CRIU takes an equal fd table for corruption), namespaces
// that are the dumper's or, of the kinds CRIU makes from an image (uts,
// ipc, time), the root task's with the image there, seccomp.img when a
// thread has filters, and timens-0.img. Every image cryo writes passes it;
// the e2e harness checks each dump with it.
func CheckCRIU(s *Set) error {
	var errs []error
	bad := func(file, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{file}, args...)...))
	}
	inv := s.Inventory
	if v := inv.GetImgVersion(); v != 1 && v != 2 {
		bad(Inventory.Name, "img_version %d, CRIU reads 1 and 2", v)
	}
	if !inv.GetFdinfoPerId() {
		bad(Inventory.Name, "no fdinfo_per_id (CRIU refuses it as too old)")
	}
	if inv.NsPerId == nil {
		bad(Inventory.Name, "no ns_per_id")
	}
	if inv.Lsmtype == nil {
		bad(Inventory.Name, "no lsmtype")
	}
	if inv.RootCgSet != nil && inv.GetRootCgSet() == 0 {
		bad(Inventory.Name, "root_cg_set 0 (CRIU refuses it)")
	}
	root := inv.GetRootIds()
	if root == nil {
		bad(Inventory.Name, "no root_ids")
		return errors.Join(errs...)
	}
	filters := false
	rootTask := root
	for i, p := range s.Procs {
		f := Ids(p.Pid())
		ids := &core.TaskKobjIdsEntry{}
		if err := ReadOne(s.Dir, f, ids); err != nil {
			bad(f.Name, "%v", err)
			continue
		}
		if i == 0 {
			for _, e := range madeNamespaces(s, ids, root) {
				bad(f.Name, "%s", e)
			}
			rootTask = ids
		} else if !sameNamespaces(ids, rootTask) {
			bad(f.Name, "namespaces %v are not the root task's %v (-1: none)", nsShown(ids), nsShown(rootTask))
		}
		if p.Zombie {
			continue
		}
		if ids.VmId == nil || ids.FilesId == nil || ids.FsId == nil || ids.SighandId == nil {
			bad(f.Name, "vm, files, fs or sighand id missing")
		}
		if c := p.Cores[0].GetIds(); c.GetFilesId() != ids.GetFilesId() || c.GetVmId() != ids.GetVmId() {
			bad(f.Name, "files %d, vm %d, but the core says files %d, vm %d", ids.GetFilesId(), ids.GetVmId(), c.GetFilesId(), c.GetVmId())
		}
		if i == 0 && (ids.GetFilesId() == root.GetFilesId() || ids.GetVmId() == root.GetVmId()) {
			bad(f.Name, "the root task's ids are root_ids: CRIU reads it as a corrupt image")
		}
		for j, c := range p.Cores {
			if c.GetThreadCore().GetSeccompMode() == core.SeccompMode_filter || (j == 0 && c.GetTc().GetOldSeccompMode() == core.SeccompMode_filter) {
				filters = true
			}
		}
	}
	if filters && s.Seccomp == nil {
		bad(Seccomp.Name, "missing, and a thread has seccomp filters")
	}
	tn := &timens.TimensEntry{}
	if err := ReadOne(s.Dir, Timens(0), tn); err != nil {
		bad(Timens(0).Name, "%v", err)
	}
	if s.Dir.Has(StatsDumpOld) {
		bad(StatsDumpOld, "CRIU names it %s", StatsDump.Name)
	}
	return errors.Join(errs...)
}

// madeNamespaces lists what CRIU would not restore of the namespaces the
// root task has and the dumper (root_ids) has not: CRIU makes such a
// namespace of kinds uts, ipc and time from its image, which must be
// there; cryo writes no other kind.
func madeNamespaces(s *Set, ids, root *core.TaskKobjIdsEntry) []string {
	var out []string
	x, y := nsOf(ids), nsOf(root)
	for k, name := range nsNames {
		if (x[k] == nil) == (y[k] == nil) && (x[k] == nil || *x[k] == *y[k]) {
			continue
		}
		var f File
		if x[k] == nil {
			out = append(out, fmt.Sprintf("no %s namespace id, the dumper's %d", name, *y[k]))
			continue
		}
		switch name {
		case "uts":
			f = Utsns(*x[k])
		case "ipc":
			f = IpcVar(*x[k])
		case "time":
			f = Timens(*x[k])
		}
		switch {
		case f.Name == "":
			out = append(out, fmt.Sprintf("%s namespace %d is not the dumper's %v (root_ids): cryo makes none of this kind", name, *x[k], nsShown(root)))
		case !s.Dir.Has(f.Name):
			out = append(out, fmt.Sprintf("%s namespace %d of the tree's own, without %s", name, *x[k], f.Name))
		}
	}
	return out
}

// nsNames are the kinds of nsOf, in its order.
var nsNames = []string{"pid", "net", "ipc", "uts", "mnt", "user", "cgroup", "time"}

func nsOf(i *core.TaskKobjIdsEntry) []*uint32 {
	return []*uint32{i.PidNsId, i.NetNsId, i.IpcNsId, i.UtsNsId, i.MntNsId, i.UserNsId, i.CgroupNsId, i.TimeNsId}
}

func sameNamespaces(a, b *core.TaskKobjIdsEntry) bool {
	x, y := nsOf(a), nsOf(b)
	for k := range x {
		if (x[k] == nil) != (y[k] == nil) || (x[k] != nil && *x[k] != *y[k]) {
			return false
		}
	}
	return true
}

func nsShown(i *core.TaskKobjIdsEntry) []int64 {
	var out []int64
	for _, v := range nsOf(i) {
		if v == nil {
			out = append(out, -1)
		} else {
			out = append(out, int64(*v))
		}
	}
	return out
}
