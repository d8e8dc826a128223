package inspect

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/procfs"
)

func TestHumanSize(t *testing.T) {
	for _, c := range []struct {
		n    int64
		want string
	}{
		{0, "0 B"}, {512, "512 B"}, {1023, "1023 B"}, {1024, "1.0 KiB"}, {1536, "1.5 KiB"},
		{7 << 20, "7.0 MiB"}, {3<<30 + 512<<20, "3.5 GiB"}, {-2048, "-2.0 KiB"},
	} {
		if got := HumanSize(c.n); got != c.want {
			t.Errorf("HumanSize(%d) = %q, want %q", c.n, got, c.want)
		}
	}
}

func TestTableAligns(t *testing.T) {
	tb := newTable("A", "SIZE", "PATH")
	tb.right[1] = true
	tb.add("long-cell", "7.0 MiB", "/x")
	tb.add("b", "0 B", "/a path with blanks")
	var b bytes.Buffer
	if err := tb.write(&b, "  "); err != nil {
		t.Fatal(err)
	}
	want := "" +
		"  A             SIZE  PATH\n" +
		"  long-cell  7.0 MiB  /x\n" +
		"  b              0 B  /a path with blanks\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}

func TestPrintableQuotesControlBytes(t *testing.T) {
	if got := printable("/tmp/a b"); got != "/tmp/a b" {
		t.Errorf("plain name changed: %q", got)
	}
	if got := printable("/tmp/x\x1b[2J\ny"); got != `"/tmp/x\x1b[2J\ny"` {
		t.Errorf("control bytes not quoted: %q", got)
	}
}

func TestMemoryKind(t *testing.T) {
	for _, c := range []struct {
		path    string
		mounted bool
		want    string
	}{
		{"/memfd:x", false, "memfd"},
		{"/dev/zero", false, "shared-anon"},
		{"/SYSV0000002a", false, "sysv-shm"},
		{"/memfd:x", true, ""}, // a disk file that merely has such a name
		{"/dev/zero", true, ""},
		{"/tmp/a", false, ""}, // a lazily unmounted filesystem's file
	} {
		if got := memoryKind(c.path, c.mounted); got != c.want {
			t.Errorf("memoryKind(%q, %v) = %q, want %q", c.path, c.mounted, got, c.want)
		}
	}
}

func TestNewMountsPrefersRoot(t *testing.T) {
	ms, err := procfs.ParseMountinfo([]byte(
		"30 1 8:1 /sub /mnt/bind rw - ext4 /dev/sda1 rw\n" +
			"31 1 8:1 / /data/longer rw - ext4 /dev/sda1 rw\n" +
			"32 1 8:1 / /d rw - ext4 /dev/sda1 rw\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := newMounts(ms)[procfs.Dev{Major: 8, Minor: 1}].MountPoint; got != "/d" {
		t.Errorf("mount of 8:1 = %q, want /d (the filesystem's root, shortest)", got)
	}
}

// mapFile creates dir/name of size bytes and maps it shared.
func mapFile(t *testing.T, path string, size int) (fileStat, []byte, *os.File) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(bytes.Repeat([]byte{0xa5}, size)); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	st, err := statPath(path)
	if err != nil {
		t.Fatal(err)
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Munmap(mem) })
	return st, mem, f
}

func find(files []*DeletedFile, ino uint64) *DeletedFile {
	for _, f := range files {
		if f.Inode == ino {
			return f
		}
	}
	return nil
}

// TestDeletedSelf has this test process map a deleted file, keep another
// open, map a file literally named "... (deleted)" and hold a memfd, then
// checks what Deleted reports of it. Run as root, every file is measured;
// otherwise the mapped-only file must be listed as not measured.
func TestDeletedSelf(t *testing.T) {
	dir := t.TempDir()
	mappedSt, _, mf := mapFile(t, filepath.Join(dir, "mapped.bin"), 5<<20+4096)
	mf.Close()
	if err := os.Remove(filepath.Join(dir, "mapped.bin")); err != nil {
		t.Fatal(err)
	}
	openSt, _, of := mapFile(t, filepath.Join(dir, "open.bin"), 64<<10)
	defer of.Close()
	if err := os.Remove(filepath.Join(dir, "open.bin")); err != nil {
		t.Fatal(err)
	}
	liarSt, _, lf := mapFile(t, filepath.Join(dir, "liar.bin (deleted)"), 4096)
	lf.Close()

	mfd, err := unix.MemfdCreate("inspect-unit", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(mfd)
	if err := unix.Ftruncate(mfd, 1<<20); err != nil {
		t.Fatal(err)
	}

	rep, err := Deleted(DeletedOptions{Pids: []int{os.Getpid()}})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Processes.Scanned != 1 {
		t.Errorf("scanned %d processes, want 1", rep.Processes.Scanned)
	}
	if find(rep.Files, liarSt.Ino) != nil {
		t.Errorf("a file named %q that was never deleted is listed", "liar.bin (deleted)")
	}

	o := find(rep.Files, openSt.Ino)
	if o == nil {
		t.Fatalf("open deleted file (inode %d) not found in %+v", openSt.Ino, rep.Files)
	}
	// It is both mapped and open by us.
	if len(o.Holders) != 1 || o.Holders[0].PID != os.Getpid() || o.Holders[0].How != "both" || o.Holders[0].Mappings != 1 {
		t.Errorf("holders of open.bin = %+v, want this process, both, 1 mapping", o.Holders)
	}
	if !o.Measured || o.Size != openSt.Size || o.Allocated != openSt.Blocks*512 || o.Nlink != 0 {
		t.Errorf("open.bin: measured %v size %d allocated %d nlink %d, want size %d allocated %d nlink 0",
			o.Measured, o.Size, o.Allocated, o.Nlink, openSt.Size, openSt.Blocks*512)
	}
	if o.Path != filepath.Join(dir, "open.bin") || o.Kind != "file" || o.Filesystem.MountPoint == "" {
		t.Errorf("open.bin: path %q kind %q filesystem %+v", o.Path, o.Kind, o.Filesystem)
	}

	m := find(rep.Files, mappedSt.Ino)
	if m == nil {
		t.Fatalf("mapped deleted file (inode %d) not found", mappedSt.Ino)
	}
	if len(m.Holders) != 1 || m.Holders[0].How != "mapped" || m.Holders[0].MappedBytes != 5<<20+4096 {
		t.Errorf("holders of mapped.bin = %+v", m.Holders)
	}
	privileged := os.Geteuid() == 0
	if privileged {
		if !m.Measured || m.Size != mappedSt.Size || m.Allocated != mappedSt.Blocks*512 {
			t.Errorf("mapped.bin: measured %v size %d allocated %d, want %d %d", m.Measured, m.Size, m.Allocated, mappedSt.Size, mappedSt.Blocks*512)
		}
	} else if m.Measured || rep.NotMeasured.Files != 1 || rep.NotMeasured.Capability != MapFilesCapability {
		t.Errorf("unprivileged: mapped.bin measured %v, not measured %+v", m.Measured, rep.NotMeasured)
	}

	var fsTotal *FSTotal
	for _, ft := range rep.Filesystems {
		if ft.Filesystem.Dev == o.Dev {
			fsTotal = ft
		}
	}
	if fsTotal == nil {
		t.Fatalf("no total for %s in %+v", o.Dev, rep.Filesystems)
	}
	want := openSt.Blocks * 512
	if privileged {
		want += mappedSt.Blocks * 512
	}
	if fsTotal.Allocated != want || fsTotal.Files != 2 {
		t.Errorf("total of %s: %d files, %d bytes allocated; want 2 files, %d", o.Dev, fsTotal.Files, fsTotal.Allocated, want)
	}

	var memfd *DeletedFile
	for _, f := range rep.Memory {
		if f.Path == "/memfd:inspect-unit" {
			memfd = f
		}
	}
	if memfd == nil || memfd.Kind != "memfd" || memfd.Size != 1<<20 || memfd.Holders[0].How != "open" {
		t.Errorf("memfd = %+v, want kind memfd, size 1 MiB, open", memfd)
	}

	var text bytes.Buffer
	if err := WriteDeletedText(&text, rep); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"On filesystems", filepath.Join(dir, "open.bin"), "In memory", "/memfd:inspect-unit", "compare with df"} {
		if !strings.Contains(text.String(), s) {
			t.Errorf("text output lacks %q:\n%s", s, text.String())
		}
	}
}

func TestDeletedErrors(t *testing.T) {
	// A pid that cannot exist (above the kernel's PID_MAX_LIMIT).
	_, err := Deleted(DeletedOptions{Pids: []int{1 << 23}})
	if !errors.Is(err, ErrNoProcess) {
		t.Errorf("Deleted of a missing pid: %v, want %v", err, ErrNoProcess)
	}
	if _, err := Maps(1<<23, MapsOptions{}); !errors.Is(err, ErrNoProcess) {
		t.Errorf("Maps of a missing pid: %v, want %v", err, ErrNoProcess)
	}
}

// TestMapsSelf checks Maps against a shared anonymous mapping this process
// makes and fills.
func TestMapsSelf(t *testing.T) {
	const size = 3 << 20
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	for i := 0; i < size; i += 4096 {
		mem[i] = 1
	}
	rep, err := Maps(os.Getpid(), MapsOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var got *MapInfo
	for _, m := range rep.Mappings {
		if m.Start == "0x"+hex(uint64(uintptrOf(mem))) {
			got = m
		}
	}
	if got == nil {
		t.Fatalf("mapping at %#x not found", uintptrOf(mem))
	}
	if got.Backing != "shared-anon" || got.Size != size || got.Rss != size || got.Pss != size || !got.Shared || got.Perms != "rw-s" {
		t.Errorf("shared anon mapping = %+v", got)
	}
	if !contains(got.VmFlagWords, "MAP_SHARED") || !contains(got.VmFlags, "sh") {
		t.Errorf("VmFlags %v / %v lack sh / MAP_SHARED", got.VmFlags, got.VmFlagWords)
	}
	if len(got.SharedWith) != 0 {
		t.Errorf("shared with %v, want nobody", got.SharedWith)
	}
	var text bytes.Buffer
	if err := WriteMapsText(&text, rep); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text.String(), "shared-anon") || !strings.Contains(text.String(), "START-END") {
		t.Errorf("text output:\n%s", text.String())
	}
}

func contains(s []string, x string) bool {
	for _, v := range s {
		if v == x {
			return true
		}
	}
	return false
}
