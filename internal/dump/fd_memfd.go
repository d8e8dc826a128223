package dump

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/memfd"
)

// A memfd is an open file description on a shmem inode. The inode (name,
// size, seals, contents) is dumped once however many fds and mappings use
// it, as CRIU does: memfd-inode.img, and the contents in
// pagemap-shmem-<inode id>.img with its pages file.
type memfdInode struct {
	entry *memfd.MemfdInodeEntry
	src   *os.File // reads the contents
}

// memfdFile registers a description of the memfd reached through path
// (an fd or a map_files link) and returns its file id.
func (ft *fileTable) memfdFile(p *process, path, link string, flags uint32, pos uint64) (uint32, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("open memfd %s: %w", link, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return 0, err
	}
	ino, ok := ft.memfdByIno[st.Ino]
	if !ok {
		seals, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0)
		if err != nil {
			seals = 0 // created without MFD_ALLOW_SEALING: F_SEAL_SEAL, which reads back as EINVAL on some kernels
		}
		ft.nextInode++
		ino = &memfdInode{src: f, entry: &memfd.MemfdInodeEntry{
			Name:    proto.String(strings.TrimSuffix(strings.TrimPrefix(link, "/memfd:"), " (deleted)")),
			Uid:     proto.Uint32(st.Uid),
			Gid:     proto.Uint32(st.Gid),
			Size:    proto.Uint64(uint64(st.Size)),
			Shmid:   proto.Uint32(ft.nextInode),
			Seals:   proto.Uint32(uint32(seals)),
			InodeId: proto.Uint64(uint64(ft.nextInode)),
			Mode:    proto.Uint32(st.Mode),
		}}
		ft.memfdByIno[st.Ino] = ino
		ft.memfdInodes = append(ft.memfdInodes, ino)
		p.closers = append(p.closers, f)
	} else {
		f.Close()
	}
	return ft.add(&fdinfo.FileEntry{
		Type: fdinfo.FdTypes_MEMFD.Enum(),
		Memfd: &memfd.MemfdFileEntry{
			Flags: proto.Uint32(flags), Pos: proto.Uint64(pos), Fown: noOwner(),
			InodeId: proto.Uint32(uint32(ino.entry.GetInodeId())),
		},
	}), nil
}

func dumpMemfd(e *fdEnv) (uint32, error) {
	return e.p.files.memfdFile(e.p, e.path, e.link, e.flags, uint64(e.info.Pos))
}
