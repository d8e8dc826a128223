package dump

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
	pipedata "github.com/checkpoint-restore/go-criu/v8/crit/images/pipe-data"

	"github.com/cryo-project/cryo/internal/image"
	"github.com/cryo-project/cryo/internal/imageset"
)

// writeFileData writes what files hold beyond their entries: unread pipe
// data (pipes-data.img) and memfd inodes with their contents.
func (p *process) writeFileData(dir *image.Dir) error {
	ft := p.files
	if err := ft.writeUnixQueues(dir); err != nil {
		return err
	}
	for _, kind := range []struct {
		f    imageset.File
		fifo bool
	}{{imageset.PipesData, false}, {imageset.FifoData, true}} {
		var states []*pipeState
		for _, ps := range ft.pipeOrder {
			if ps.fifo == kind.fifo {
				states = append(states, ps)
			}
		}
		if len(states) == 0 {
			continue
		}
		w, err := dir.Create(kind.f.Name, kind.f.Magic)
		if err != nil {
			return err
		}
		for _, ps := range states {
			if err := w.Write(&pipedata.PipeDataEntry{
				PipeId: proto.Uint32(uint32(ps.ino)), Bytes: proto.Uint32(uint32(len(ps.data))), Size: proto.Uint32(uint32(ps.capacity)),
			}); err != nil {
				w.Close()
				return err
			}
			if err := w.WriteRaw(ps.data); err != nil {
				w.Close()
				return err
			}
		}
		if err := w.Close(); err != nil {
			return err
		}
	}
	if len(ft.memfdInodes) == 0 {
		return nil
	}
	w, err := dir.Create(imageset.MemfdInode.Name, imageset.MemfdInode.Magic)
	if err != nil {
		return err
	}
	for _, ino := range ft.memfdInodes {
		if err := w.Write(ino.entry); err != nil {
			w.Close()
			return err
		}
	}
	if err := w.Close(); err != nil {
		return err
	}
	for _, ino := range ft.memfdInodes {
		if err := p.writeShmem(dir, ino); err != nil {
			return fmt.Errorf("memfd %s: %w", ino.entry.GetName(), err)
		}
	}
	return nil
}

// writeShmem dumps the data extents of a memfd as CRIU does for shared
// memory: a pagemap whose addresses are offsets in the object.
func (p *process) writeShmem(dir *image.Dir, ino *memfdInode) error {
	id := ino.entry.GetShmid()
	size := int64(ino.entry.GetSize())
	fd := int(ino.src.Fd())
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
		runs = append(runs, run{addr: uint64(data), pages: uint64(hole-data) / pageSize, file: ino.src, off: data})
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
