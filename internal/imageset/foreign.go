package imageset

import (
	"fmt"
	"regexp"

	core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"google.golang.org/protobuf/proto"

	"github.com/cryo-project/cryo/internal/image"
)

// An image another tool wrote (CRIU's; image.Dir.Foreign) is read as one of
// cryo's, with every check the same, and these on top, for what cryo's
// sidecar and cryo-meta.json would have told: every file is one cryo
// restores (anything else CRIU writes is refused by name, never ignored),
// and the tree stays in the restorer's namespaces.

// knownFile matches the names of the files cryo restores from.
var knownFile = regexp.MustCompile(`^(` +
	`inventory|pstree|files|seccomp|pipes-data|fifo-data|sk-queues|memfd-inode|file-locks|timens-0|` +
	`(core|mm|pagemap|pages|fdinfo|fs|ids)-[0-9]+|pagemap-shmem-[0-9]+|ghost-file-[0-9a-f]+` +
	`)\.img$|^stats-(dump|restore)$`)

// whatIs names what some of CRIU's files hold, for the refusal.
var whatIs = map[string]string{
	"cgroup.img":      "cgroups (cryo restores a tree in the restorer's cgroup)",
	"remap-fpath.img": "remapped paths of deleted or linked-away files",
	"tty-info.img":    "terminals", "mountpoints": "mounts", "netns": "a network namespace",
	"utsns": "a UTS namespace", "ipcns": "IPC namespace objects", "userns": "a user namespace",
	"tcp-stream": "TCP connections", "inetsk.img": "inet sockets",
}

// checkForeign refuses what of another tool's image cryo cannot restore.
func (s *Set) checkForeign() error {
	for _, n := range s.Dir.Names() {
		if knownFile.MatchString(n) {
			continue
		}
		what := "entries cryo does not restore"
		for k, v := range whatIs {
			if len(n) >= len(k) && n[:len(k)] == k {
				what = v
			}
		}
		return &image.FormatError{File: n, Offset: -1, Err: fmt.Errorf("holds %s, in an image cryo did not write: %w", what, ErrNotSupported)}
	}
	root := s.Inventory.GetRootIds()
	if root == nil {
		return corrupt(Inventory.Name, "no root_ids")
	}
	for _, p := range s.Procs {
		if p.Ids == nil {
			return corrupt(Ids(p.Pid()).Name, "missing")
		}
		if !sameNamespaces(p.Ids, root) {
			return &image.FormatError{File: Ids(p.Pid()).Name, Offset: -1, Err: fmt.Errorf(
				"process %d is in namespaces %v, not the dumper's %v (-1: none): creating namespaces: %w", p.Pid(), nsShown(p.Ids), nsShown(root), ErrNotSupported)}
		}
	}
	return nil
}

// CRIU's pagemap_entry flags (criu/include/pagemap.h).
const (
	peParent  = 1 << 0
	peLazy    = 1 << 1
	pePresent = 1 << 2
)

// checkPages checks that the pages file of p holds exactly the pages its
// pagemap lists, as restore reads them: every entry's pages in order.
func (s *Set) checkPages(p *Proc) error {
	var n uint64
	f := Pagemap(p.Pid())
	for _, e := range p.Pagemap {
		if fl := e.GetFlags(); e.Flags != nil && (fl&pePresent == 0 || fl&(peLazy|peParent) != 0) {
			return &image.FormatError{File: f.Name, Offset: -1, Err: fmt.Errorf("pages at %#x with flags %#x (lazy or in a parent image; cryo reads only present pages): %w", e.GetVaddr(), fl, ErrNotSupported)}
		}
		if e.GetNrPages() > 1<<40 || n+e.GetNrPages() > 1<<40 {
			return corrupt(f.Name, "%d pages at %#x", e.GetNrPages(), e.GetVaddr())
		}
		n += e.GetNrPages()
	}
	name := image.PagesName(p.PagesID)
	size, ok := s.Dir.Size(name)
	if !ok {
		if n == 0 {
			return nil
		}
		return corrupt(name, "missing, and %s lists %d pages", f.Name, n)
	}
	if size != n*4096 {
		return corrupt(name, "%d bytes, but %s lists %d pages (%d bytes)", size, f.Name, n, n*4096)
	}
	return nil
}

// useIds reads ids-PID.img, where CRIU keeps a process's ids (its core has
// none), and checks it against the core's copy that cryo also writes.
func (s *Set) useIds(p *Proc) error {
	f := Ids(p.Pid())
	if !s.Dir.Has(f.Name) {
		return nil
	}
	ids := &core.TaskKobjIdsEntry{}
	if err := ReadOne(s.Dir, f, ids); err != nil {
		return err
	}
	p.Ids = ids
	c := p.Cores[0]
	if c.Ids == nil {
		c.Ids = proto.Clone(ids).(*core.TaskKobjIdsEntry)
		return nil
	}
	if c.Ids.GetVmId() != ids.GetVmId() || c.Ids.GetFilesId() != ids.GetFilesId() ||
		c.Ids.GetFsId() != ids.GetFsId() || c.Ids.GetSighandId() != ids.GetSighandId() {
		return corrupt(f.Name, "ids differ from those of %s", Core(p.Pid()).Name)
	}
	return nil
}
