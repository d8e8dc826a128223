package image

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

const (
	// InventoryName is written last: its presence (with the sidecar) is what
	// makes a directory a complete image.
	InventoryName = "inventory.img"

	// inventoryPart is where inventory.img is written until Commit. It does
	// not end in .img so that no tool mistakes it for an image.
	inventoryPart = "inventory.img.part"

	fileMode = 0o600
	dirMode  = 0o700

	// MaxEntrySize bounds one protobuf entry. CRIU's largest entries (an
	// mm_entry with tens of thousands of VMAs) stay far below it; anything
	// larger is corruption, and refusing it bounds what a reader allocates.
	MaxEntrySize = 64 << 20

	// inMemoryLimit: files up to this size are read whole on restore and
	// checked against the sidecar on exactly the bytes that are parsed.
	inMemoryLimit = 16 << 20
)

// Dir is an image directory, either being written by a dump (Create) or read
// by a restore (Open). A Dir being written is safe for concurrent use by
// several goroutines, each with its own Writers; a Writer itself is not.
type Dir struct {
	path string

	mu      sync.Mutex
	writing bool
	made    bool            // Create made the directory, so Abort removes it
	created map[string]bool // on-disk names this Dir created (dump side)
	open    map[string]bool // names with a writer not yet closed
	done    bool            // committed or aborted
	sums    *sums           // recorded (dump) or read (restore)
	// foreign: an image another tool (CRIU) wrote, without a sidecar; its
	// sums were taken by Open (see openForeign).
	foreign bool
}

// Foreign says whether the image was written by another tool than cryo
// (CRIU): it had no sidecar, and Open checksummed it as it found it.
func (d *Dir) Foreign() bool { return d != nil && d.foreign }

// Path returns the directory's path.
func (d *Dir) Path() string { return d.path }

// Create prepares dir for a dump. dir is created 0700 if missing; if it
// exists (CRIU's tools expect to be given an existing directory) it must not
// already hold an image: a complete one (inventory.img or the sidecar) or the
// *.img leftovers of one that never completed. Use CreateOverwrite to replace
// an image.
func Create(dir string) (*Dir, error) { return create(dir, false) }

// CreateOverwrite is Create for a directory that may hold an earlier image.
// That image is made incomplete at once (its inventory.img and sidecar are
// removed), and Commit removes those of its *.img files that the new dump did
// not rewrite. An aborted overwrite therefore leaves no usable image.
func CreateOverwrite(dir string) (*Dir, error) { return create(dir, true) }

func create(dir string, overwrite bool) (*Dir, error) {
	made := true
	if err := os.Mkdir(dir, dirMode); errors.Is(err, fs.ErrExist) {
		made = false
	} else if err != nil {
		return nil, fmt.Errorf("create image dir: %w", err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("create image dir: %w", err)
	}
	for _, e := range ents {
		n := e.Name()
		if n != InventoryName && n != SumsName && n != inventoryPart && !strings.HasSuffix(n, ".img") {
			continue // logs and other people's files are not ours to judge
		}
		if !overwrite {
			if made {
				os.Remove(dir)
			}
			return nil, fmt.Errorf("create image in %s: %s already exists (an earlier image; overwrite it explicitly): %w", dir, n, fs.ErrExist)
		}
	}
	if overwrite {
		for _, n := range []string{InventoryName, SumsName, inventoryPart} {
			if err := os.Remove(filepath.Join(dir, n)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("overwrite image in %s: %w", dir, err)
			}
		}
	}
	return &Dir{
		path:    dir,
		made:    made,
		writing: true,
		created: map[string]bool{},
		open:    map[string]bool{},
		sums:    &sums{chunk: ChunkSize, files: map[string]*fileSum{}},
	}, nil
}

// createFile opens name for writing and records it so that Abort can remove
// it. diskName differs from name only for inventory.img.
func (d *Dir) createFile(name string) (*os.File, string, error) {
	if err := checkName(name); err != nil {
		return nil, "", fmt.Errorf("create %s: %w: %w", name, errBadName, err)
	}
	if name == SumsName || name == inventoryPart {
		return nil, "", fmt.Errorf("create %s: name reserved by cryo: %w", name, errBadName)
	}
	disk := name
	if name == InventoryName {
		disk = inventoryPart
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.writing || d.done {
		return nil, "", fmt.Errorf("create %s: image directory is not open for writing", name)
	}
	if d.open[name] || d.sums.files[name] != nil {
		return nil, "", fmt.Errorf("create %s: written twice in one dump", name)
	}
	// O_EXCL would refuse overwriting; CreateOverwrite may replace older files.
	f, err := os.OpenFile(filepath.Join(d.path, disk), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, fileMode)
	if err != nil {
		return nil, "", fmt.Errorf("create %s: %w", name, err)
	}
	// The umask cannot widen 0600, but a pre-existing file keeps its mode.
	if err := f.Chmod(fileMode); err != nil {
		f.Close()
		return nil, "", fmt.Errorf("create %s: %w", name, err)
	}
	d.created[disk] = true
	d.open[name] = true
	return f, disk, nil
}

// closed records the sum of a finished file.
func (d *Dir) closed(s *fileSum) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.open, s.name)
	d.sums.files[s.name] = s
}

// Commit makes the image complete: it writes the sidecar, makes every file
// durable, and only then renames inventory.img into place, so that a crash
// at any point leaves a directory Open refuses rather than a damaged image.
// Every Writer must have been closed.
func (d *Dir) Commit() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.writing || d.done {
		return errors.New("commit image: not open for writing")
	}
	if len(d.open) > 0 {
		return fmt.Errorf("commit image: %d files still open (%s...)", len(d.open), anyKey(d.open))
	}
	if d.sums.files[InventoryName] == nil {
		return fmt.Errorf("commit image: %s was not written", InventoryName)
	}
	// Files were closed without fsync so that writeback of all of them
	// overlaps; syncing them now costs one wait, not one per file.
	for disk := range d.created {
		if err := syncFile(filepath.Join(d.path, disk)); err != nil {
			return fmt.Errorf("commit image: %w", err)
		}
	}
	if err := d.writeSums(); err != nil {
		return fmt.Errorf("commit image: %w", err)
	}
	if overwritten, err := d.removeStale(); err != nil {
		return fmt.Errorf("commit image: remove %s of the image overwritten: %w", overwritten, err)
	}
	if err := os.Rename(filepath.Join(d.path, inventoryPart), filepath.Join(d.path, InventoryName)); err != nil {
		return fmt.Errorf("commit image: %w", err)
	}
	delete(d.created, inventoryPart)
	d.created[InventoryName] = true
	if err := syncFile(d.path); err != nil {
		return fmt.Errorf("commit image: %w", err)
	}
	d.done = true
	return nil
}

func (d *Dir) writeSums() error {
	// Written to its final name directly: without inventory.img the
	// directory is incomplete whatever the sidecar holds.
	p := filepath.Join(d.path, SumsName)
	d.created[SumsName] = true
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, fileMode)
	if err != nil {
		return err
	}
	if _, err := f.Write(d.sums.marshal()); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// removeStale deletes *.img files that an overwritten image left and this
// dump did not rewrite; Open would refuse them as unlisted.
func (d *Dir) removeStale() (string, error) {
	ents, err := os.ReadDir(d.path)
	if err != nil {
		return "", err
	}
	for _, e := range ents {
		n := e.Name()
		if strings.HasSuffix(n, ".img") && d.sums.files[n] == nil {
			if err := os.Remove(filepath.Join(d.path, n)); err != nil {
				return n, err
			}
		}
	}
	return "", nil
}

// Abort removes every file this Dir created, including partly written ones,
// and leaves the directory as it was: anything else in it stays, and a
// directory that Create made is removed if nothing else is in it. It is
// safe to call after Commit failed, and a no-op after Commit succeeded, so a
// dump can `defer d.Abort()`. Writers still open are left to their owners,
// but their files are unlinked.
func (d *Dir) Abort() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.writing || d.done {
		return
	}
	d.done = true
	for disk := range d.created {
		_ = os.Remove(filepath.Join(d.path, disk))
	}
	d.created = map[string]bool{}
	if d.made {
		_ = os.Remove(d.path) // fails, rightly, if someone else put files in it
	}
}

func syncFile(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	// fsync through a read-only descriptor flushes the inode's dirty pages
	// all the same (Linux syncs the inode, not the descriptor).
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func anyKey(m map[string]bool) string {
	for k := range m {
		return k
	}
	return ""
}

// Open opens a complete image directory for restore. An image another tool
// wrote (inventory.img, no sidecar, no cryo-* file: see openForeign) is
// checksummed as found and opened as Foreign. Otherwise it refuses a
// directory without inventory.img or the sidecar (ErrIncomplete), *.img files the
// sidecar does not list, and any non-pages file whose size or CRC32C differs
// from the sidecar (ErrChecksum). Pages files are checked chunk by chunk as
// OpenPages reads them.
func Open(dir string) (*Dir, error) {
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("open image: %w", err)
	}
	if d, err := openForeign(dir); d != nil || err != nil {
		return d, err
	}
	for _, n := range []string{InventoryName, SumsName} {
		if _, err := os.Stat(filepath.Join(dir, n)); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("open image %s: %w", dir, &FormatError{File: n, Offset: -1, Err: fmt.Errorf("missing (the dump never committed): %w", ErrIncomplete)})
			}
			return nil, fmt.Errorf("open image %s: %w", dir, err)
		}
	}
	raw, err := readBounded(filepath.Join(dir, SumsName), maxSumsSize)
	if err != nil {
		return nil, fmt.Errorf("open image %s: %w", dir, err)
	}
	s, err := parseSums(raw)
	if err != nil {
		return nil, fmt.Errorf("open image %s: %w", dir, err)
	}
	d := &Dir{path: dir, sums: s}
	if err := d.verify(); err != nil {
		return nil, fmt.Errorf("open image %s: %w", dir, err)
	}
	return d, nil
}

// verify checks the directory against the sidecar.
func (d *Dir) verify() error {
	ents, err := os.ReadDir(d.path)
	if err != nil {
		return err
	}
	for _, e := range ents {
		n := e.Name()
		if strings.HasSuffix(n, ".img") && d.sums.files[n] == nil {
			return &FormatError{File: n, Offset: -1, Err: fmt.Errorf("not listed in %s: %w", SumsName, ErrImageCorrupt)}
		}
	}
	if d.sums.files[InventoryName] == nil {
		return &FormatError{File: InventoryName, Offset: -1, Err: fmt.Errorf("not listed in %s: %w", SumsName, ErrImageCorrupt)}
	}
	for _, n := range d.sums.sortedNames() {
		s := d.sums.files[n]
		f, err := os.Open(filepath.Join(d.path, n))
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return &FormatError{File: n, Offset: -1, Err: fmt.Errorf("listed in %s but missing: %w", SumsName, ErrImageCorrupt)}
			}
			return err
		}
		err = checkFile(f, s, s.chunks == nil)
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// checkFile compares f's size with s, and if whole is set, its CRC32C too.
func checkFile(f *os.File, s *fileSum, whole bool) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return &FormatError{File: s.name, Offset: -1, Err: fmt.Errorf("not a regular file (%v): %w", st.Mode().Type(), ErrImageCorrupt)}
	}
	if uint64(st.Size()) != s.size {
		return &FormatError{File: s.name, Offset: min(st.Size(), int64(min(s.size, 1<<62))), Err: fmt.Errorf("size %d, recorded %d: %w", st.Size(), s.size, ErrChecksum)}
	}
	if !whole {
		return nil
	}
	h := newCRC()
	if _, err := io.Copy(h, f); err != nil {
		return fmt.Errorf("%s: %w", s.name, err)
	}
	if got := h.Sum32(); got != s.crc {
		return &FormatError{File: s.name, Offset: -1, Err: fmt.Errorf("crc32c %#08x, recorded %#08x: %w", got, s.crc, ErrChecksum)}
	}
	return nil
}

// readBounded reads a whole file that must not exceed limit bytes, without
// trusting its size before reading.
func readBounded(p string, limit int64) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(io.LimitReader(f, limit+1)); err != nil {
		return nil, err
	}
	if int64(b.Len()) > limit {
		return nil, corrupt(filepath.Base(p), 0, "larger than %d bytes", limit)
	}
	return b.Bytes(), nil
}

// lookup returns the sidecar record of a file a restore asks for.
func (d *Dir) lookup(name string) (*fileSum, error) {
	if d.writing {
		return nil, fmt.Errorf("open %s: image directory is open for writing", name)
	}
	if err := checkName(name); err != nil {
		return nil, fmt.Errorf("open %s: %w: %w", name, errBadName, err)
	}
	s := d.sums.files[name]
	if s == nil {
		return nil, fmt.Errorf("open %s in %s: %w", name, d.path, fs.ErrNotExist)
	}
	return s, nil
}

// Has reports whether the image holds name (for optional files such as
// seccomp.img).
func (d *Dir) Has(name string) bool {
	_, err := d.lookup(name)
	return err == nil
}

// Names lists the files of an opened image, sorted.
func (d *Dir) Names() []string { return d.sums.sortedNames() }

// Size is the recorded size of name, and whether the image holds it.
func (d *Dir) Size(name string) (uint64, bool) {
	s, err := d.lookup(name)
	if err != nil {
		return 0, false
	}
	return s.size, true
}
