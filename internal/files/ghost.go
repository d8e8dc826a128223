package files

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	ghost_file "github.com/checkpoint-restore/go-criu/v8/crit/images/ghost-file"
	criutime "github.com/checkpoint-restore/go-criu/v8/crit/images/time"

	"github.com/cryo-project/cryo/internal/image"
	"github.com/cryo-project/cryo/internal/imageset"
)

// Ghosts: files that were deleted while a process held them open or
// mapped. map_files and /proc/PID/fd still open them (nlink 0, contents
// intact), but they cannot be linked back into the filesystem (linkat
// gives ENOENT), so their whole contents go into the image, whatever their
// size: a restore that cannot bring the file back is worse than a large
// image. criu's --ghost-limit sets a size above which the dump fails
// instead; cryo's default is no limit (criu's is 1 MiB).

type ghost struct {
	src   *os.File
	entry *ghost_file.GhostFileEntry
}

// addGhost records that file id (at path, as its link names it) is
// deleted; src reads its contents and is closed with the dump. A file
// larger than DumpOptions.GhostLimit fails the dump.
func (d *Dumper) addGhost(id uint32, path string, src *os.File, st *unix.Stat_t) error {
	if d.opts.GhostLimit > 0 && st.Size > d.opts.GhostLimit {
		src.Close()
		return fmt.Errorf("deleted file %s holds %d bytes, more than --ghost-limit %d allows in the image", path, st.Size, d.opts.GhostLimit)
	}
	d.keep(src)
	d.ghosts[id] = ghost{src: src, entry: &ghost_file.GhostFileEntry{
		Uid:  proto.Uint32(st.Uid),
		Gid:  proto.Uint32(st.Gid),
		Mode: proto.Uint32(st.Mode),
		Dev:  proto.Uint32(uint32(st.Dev)),
		Ino:  proto.Uint64(st.Ino),
		Size: proto.Uint64(uint64(st.Size)),
		Atim: &criutime.Timeval{TvSec: proto.Uint64(uint64(st.Atim.Sec)), TvUsec: proto.Uint64(uint64(st.Atim.Nsec / 1000))},
		Mtim: &criutime.Timeval{TvSec: proto.Uint64(uint64(st.Mtim.Sec)), TvUsec: proto.Uint64(uint64(st.Mtim.Nsec / 1000))},
	}}
	return nil
}

func (d *Dumper) writeGhosts(dir *image.Dir) error {
	for id, g := range d.ghosts {
		if err := dir.WriteGhostFile(id, g.entry, g.src); err != nil {
			return fmt.Errorf("copy deleted file %d: %w", id, err)
		}
	}
	return nil
}

// ghosts are the deleted files of an image, put back on disk for the time
// it takes the processes to open them, then unlinked again.
type ghosts struct {
	paths   map[uint32]string // file id → where its contents are now
	created []string
}

// prepareGhosts writes each ghost file's saved contents to a file. The
// original path is used when it is free, so /proc/PID/fd and maps show the
// same "PATH (deleted)" as before the dump; otherwise a unique name beside it.
func prepareGhosts(set *imageset.Set) (*ghosts, error) {
	g := &ghosts{paths: map[uint32]string{}}
	for id, f := range set.Files {
		if !set.Dir.Has(image.GhostName(id)) {
			continue
		}
		name := f.GetReg().GetName()
		path := name
		file, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			var b [6]byte
			rand.Read(b[:])
			path = filepath.Join(filepath.Dir(name), "."+filepath.Base(name)+".cryo-ghost-"+hex.EncodeToString(b[:]))
			if file, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600); err != nil {
				g.cleanup()
				return nil, fmt.Errorf("re-create deleted file %s: %w", name, err)
			}
		}
		g.created = append(g.created, path)
		e, err := set.Dir.ReadGhostFile(id, file)
		if err == nil {
			err = giveBack(file, e)
		}
		file.Close()
		if err != nil {
			g.cleanup()
			return nil, fmt.Errorf("re-create deleted file %s: %w", name, err)
		}
		g.paths[id] = path
	}
	return g, nil
}

// giveBack gives a re-created deleted file the owner, mode and times it
// had (times to the microsecond, as CRIU's image keeps them). A restorer
// that may not give it its owner fails: the program would find the file
// another user's.
func giveBack(file *os.File, e *ghost_file.GhostFileEntry) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(file.Fd()), &st); err != nil {
		return err
	}
	if st.Uid != e.GetUid() || st.Gid != e.GetGid() {
		if err := file.Chown(int(e.GetUid()), int(e.GetGid())); err != nil {
			return fmt.Errorf("give it its owner %d:%d: %w", e.GetUid(), e.GetGid(), err)
		}
	}
	// After chown, which clears set-user-id and set-group-id.
	if err := file.Chmod(fileMode(e.GetMode())); err != nil {
		return err
	}
	if e.Atim == nil || e.Mtim == nil {
		return nil // an image without them (CRIU's are optional)
	}
	ts := []unix.Timespec{timeval(e.GetAtim()), timeval(e.GetMtim())}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, file.Name(), ts, 0); err != nil {
		return fmt.Errorf("give it its times: %w", err)
	}
	return nil
}

// fileMode is os.FileMode of a st_mode's permission and set-id bits.
func fileMode(m uint32) os.FileMode {
	fm := os.FileMode(m & 0o777)
	if m&unix.S_ISUID != 0 {
		fm |= os.ModeSetuid
	}
	if m&unix.S_ISGID != 0 {
		fm |= os.ModeSetgid
	}
	if m&unix.S_ISVTX != 0 {
		fm |= os.ModeSticky
	}
	return fm
}

func timeval(tv *criutime.Timeval) unix.Timespec {
	return unix.Timespec{Sec: int64(tv.GetTvSec()), Nsec: int64(tv.GetTvUsec()) * 1000}
}

func (g *ghosts) cleanup() {
	if g == nil {
		return
	}
	for _, p := range g.created {
		os.Remove(p)
	}
	g.created = nil
}
