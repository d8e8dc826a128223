package dump

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"

	"github.com/cryo-project/cryo/internal/image"
	"github.com/cryo-project/cryo/internal/imageset"
)

// writeShmem dumps the data extents of a shared object (a memfd) of size
// bytes, read from src, as CRIU does for shared memory: a pagemap whose addresses are offsets in the object.
func (p *process) writeShmem(dir *image.Dir, id uint32, src *os.File, size int64) error {
	fd := int(src.Fd())
	var runs []run
	for off := int64(0); off < size; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break
		}
		if err != nil {
			return err
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return err
		}
		data &^= pageSize - 1
		hole = min((hole+pageSize-1)&^(pageSize-1), (size+pageSize-1)&^(pageSize-1))
		if hole <= data {
			break
		}
		runs = append(runs, run{addr: uint64(data), pages: uint64(hole-data) / pageSize, file: src, off: data})
		off = hole
	}
	pm := []proto.Message{&pagemap.PagemapHead{PagesId: proto.Uint32(shmemPagesID(id))}}
	for _, e := range pagemapEntries(runs) {
		pm = append(pm, e)
	}
	if err := imageset.Write(dir, imageset.PagemapShmem(id), pm...); err != nil {
		return err
	}
	pw, err := dir.CreatePages(shmemPagesID(id))
	if err != nil {
		return err
	}
	if _, err := p.writePages(runs, pw); err != nil {
		pw.Close()
		return err
	}
	return pw.Close()
}

// shmemPagesID numbers the pages files of shared objects after the
// process's own.
func shmemPagesID(shmid uint32) uint32 { return shmemPagesBase + shmid }
