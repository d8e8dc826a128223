package image_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	core_x86 "github.com/checkpoint-restore/go-criu/v8/crit/images/core-x86"
	criu_core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/inventory"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/mm"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pstree"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"
	"google.golang.org/protobuf/proto"

	"github.com/cryo-project/cryo/internal/image"
	"github.com/cryo-project/cryo/internal/image/imagetest"
)

func sample(t testing.TB) string {
	dir := filepath.Join(t.TempDir(), "img")
	imagetest.Write(t, dir)
	return dir
}

func u32(v uint32) *uint32 { return &v }
func u64(v uint64) *uint64 { return &v }

// writeOne commits an image holding the given files plus an inventory.
func writeImage(t *testing.T, dir string, files map[string][]proto.Message, magics map[string]string) {
	t.Helper()
	d, err := image.Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Abort()
	for name, ms := range files {
		w, err := d.Create(name, magics[name])
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range ms {
			if err := w.Write(m); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Commit(); err != nil {
		t.Fatal(err)
	}
}

func TestRoundTrip(t *testing.T) {
	regs := &core_x86.UserX86RegsEntry{}
	for _, p := range []**uint64{&regs.R15, &regs.R14, &regs.R13, &regs.R12, &regs.Bp, &regs.Bx, &regs.R11, &regs.R10,
		&regs.R9, &regs.R8, &regs.Ax, &regs.Cx, &regs.Dx, &regs.Si, &regs.Di, &regs.OrigAx, &regs.Ip, &regs.Cs,
		&regs.Flags, &regs.Sp, &regs.Ss, &regs.FsBase, &regs.GsBase, &regs.Ds, &regs.Es, &regs.Fs, &regs.Gs} {
		*p = u64(0x1111)
	}
	regs.Ip = u64(0x401136)
	core := &criu_core.CoreEntry{
		Mtype: criu_core.CoreEntry_X86_64.Enum(),
		ThreadInfo: &core_x86.ThreadInfoX86{ClearTidAddr: u64(0x7f00), Gpregs: regs,
			Fpregs: &core_x86.UserX86FpregsEntry{Cwd: u32(1), Swd: u32(2), Twd: u32(3), Fop: u32(4), Rip: u64(5),
				Rdp: u64(6), Mxcsr: u32(7), MxcsrMask: u32(8), XmmSpace: make([]uint32, 64)}},
		Tc: &criu_core.TaskCoreEntry{TaskState: u32(1), ExitCode: u32(0), Personality: u32(0), Flags: u32(0),
			BlkSigset: u64(0xfffe), Comm: proto.String("counter")},
	}
	mmE := &mm.MmEntry{MmStartCode: u64(1), MmEndCode: u64(2), MmStartData: u64(3), MmEndData: u64(4),
		MmStartStack: u64(5), MmStartBrk: u64(6), MmBrk: u64(7), MmArgStart: u64(8), MmArgEnd: u64(9),
		MmEnvStart: u64(10), MmEnvEnd: u64(11), ExeFileId: u32(12), MmSavedAuxv: []uint64{33, 4096, 0, 0},
		Vmas: []*vma.VmaEntry{{Start: u64(0x400000), End: u64(0x401000), Pgoff: u64(0), Shmid: u64(5),
			Prot: u32(5), Flags: u32(2), Status: u32(0x41), Fd: proto.Int64(-1)}}}
	head := &pagemap.PagemapHead{PagesId: u32(1)}
	pm := []proto.Message{head,
		&pagemap.PagemapEntry{Vaddr: u64(0x400000), CompatNrPages: u32(1), NrPages: u64(1), Flags: u32(4)},
		&pagemap.PagemapEntry{Vaddr: u64(0x7ffd1000), CompatNrPages: u32(3), NrPages: u64(3), Flags: u32(4)},
	}
	ps := []proto.Message{
		&pstree.PstreeEntry{Pid: u32(412), Ppid: u32(1), Pgid: u32(412), Sid: u32(300), Threads: []uint32{412, 413}},
		&pstree.PstreeEntry{Pid: u32(415), Ppid: u32(412), Pgid: u32(412), Sid: u32(300), Threads: []uint32{415}},
	}
	inv := &inventory.InventoryEntry{ImgVersion: u32(2), FdinfoPerId: proto.Bool(true), DumpUptime: u64(99)}

	dir := filepath.Join(t.TempDir(), "img")
	writeImage(t, dir, map[string][]proto.Message{
		"core-412.img":    {core},
		"mm-412.img":      {mmE},
		"pagemap-412.img": pm,
		"pstree.img":      ps,
		"inventory.img":   {inv},
	}, map[string]string{"core-412.img": "CORE", "mm-412.img": "MM", "pagemap-412.img": "PAGEMAP", "pstree.img": "PSTREE", "inventory.img": "INVENTORY"})

	d, err := image.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	one := func(name, magic string, want, got proto.Message) {
		t.Helper()
		if err := d.ReadOne(name, magic, got); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(want, got) {
			t.Errorf("%s: got %v, want %v", name, got, want)
		}
	}
	one("core-412.img", "CORE", core, &criu_core.CoreEntry{})
	one("mm-412.img", "MM", mmE, &mm.MmEntry{})
	one("inventory.img", "INVENTORY", inv, &inventory.InventoryEntry{})

	many := func(name, magic string, want []proto.Message, next func(i int) proto.Message) {
		t.Helper()
		r, err := d.Open(name, magic)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		for i := 0; ; i++ {
			m := next(i)
			err := r.Next(m)
			if errors.Is(err, io.EOF) {
				if i != len(want) {
					t.Errorf("%s: %d entries, want %d", name, i, len(want))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if i >= len(want) || !proto.Equal(want[i], m) {
				t.Errorf("%s entry %d: got %v", name, i, m)
			}
		}
	}
	many("pagemap-412.img", "PAGEMAP", pm, func(i int) proto.Message {
		if i == 0 {
			return &pagemap.PagemapHead{}
		}
		return &pagemap.PagemapEntry{}
	})
	many("pstree.img", "PSTREE", ps, func(int) proto.Message { return &pstree.PstreeEntry{} })

	if err := d.ReadOne("pstree.img", "PSTREE", &pstree.PstreeEntry{}); !errors.Is(err, image.ErrImageCorrupt) {
		t.Errorf("ReadOne of a two-entry image: %v, want ErrImageCorrupt", err)
	}
	var fe *image.FormatError
	if _, err := d.Open("core-412.img", "MM"); !errors.Is(err, image.ErrWrongMagic) || !errors.As(err, &fe) || fe.File != "core-412.img" || fe.Offset != 4 {
		t.Errorf("core opened as MM: %v, want ErrWrongMagic at offset 4", err)
	}
}

func TestSamplePagesAndGhost(t *testing.T) {
	d, err := image.Open(sample(t))
	if err != nil {
		t.Fatal(err)
	}
	pr, err := d.OpenPages(1)
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, pr); err != nil {
		t.Fatal(err)
	}
	var want []byte
	i := 0
	for _, e := range imagetest.Pagemap412 {
		for range e.Pages {
			want = append(want, bytes.Repeat([]byte{imagetest.PageByte(412, i)}, 4096)...)
			i++
		}
	}
	if !bytes.Equal(buf.Bytes(), want) {
		t.Errorf("pages-1.img: %d bytes differ from the %d written", buf.Len(), len(want))
	}

	var ghost writerAt
	e, err := d.ReadGhostFile(9, &ghost)
	if err != nil {
		t.Fatal(err)
	}
	if !e.GetChunks() || e.GetSize() != uint64(len(imagetest.GhostContents)) {
		t.Errorf("ghost entry chunks=%v size=%d, want chunked, %d", e.GetChunks(), e.GetSize(), len(imagetest.GhostContents))
	}
	if !bytes.Equal(ghost.b, imagetest.GhostContents) {
		t.Errorf("ghost contents differ (%d bytes, want %d)", len(ghost.b), len(imagetest.GhostContents))
	}
}

type writerAt struct{ b []byte }

func (w *writerAt) WriteAt(p []byte, off int64) (int, error) {
	if end := int(off) + len(p); end > len(w.b) {
		w.b = append(w.b, make([]byte, end-len(w.b))...)
	}
	return copy(w.b[off:], p), nil
}

func TestSmallGhostFileRaw(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "img")
	d, err := image.Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(t.TempDir(), "small")
	os.WriteFile(src, []byte("tiny contents"), 0o600)
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ge := imagetestGhost()
	if err := d.WriteGhostFile(0x1f, ge, f); err != nil {
		t.Fatal(err)
	}
	writeInventory(t, d)
	if err := d.Commit(); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(filepath.Join(dir, "ghost-file-1f.img"))
	if !bytes.HasSuffix(raw, []byte("tiny contents")) {
		t.Errorf("small ghost file not stored raw after its entry: %q", raw)
	}
	rd, err := image.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	var w writerAt
	e, err := rd.ReadGhostFile(0x1f, &w)
	if err != nil {
		t.Fatal(err)
	}
	if e.GetChunks() || string(w.b) != "tiny contents" {
		t.Errorf("chunks=%v contents %q", e.GetChunks(), w.b)
	}
}

func writeInventory(t *testing.T, d *image.Dir) {
	t.Helper()
	w, err := d.Create("inventory.img", "INVENTORY")
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(&inventory.InventoryEntry{ImgVersion: u32(2)}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestTruncatedFraming cuts a real image at every byte offset and reads
// it with the framing alone (no sidecar). A cut between entries is a valid
// shorter image as far as framing can tell (the sidecar catches it, see
// TestTruncatedDir); every other cut must be corruption of that file.
func TestTruncatedFraming(t *testing.T) {
	dir := sample(t)
	for _, tc := range []struct {
		name, magic string
		msg         func() proto.Message
	}{
		{"pstree.img", "PSTREE", func() proto.Message { return &pstree.PstreeEntry{} }},
		{"core-413.img", "CORE", func() proto.Message { return &criu_core.CoreEntry{} }},
		{"mm-415.img", "MM", func() proto.Message { return &mm.MmEntry{} }},
		{"inventory.img", "INVENTORY", func() proto.Message { return &inventory.InventoryEntry{} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(dir, tc.name))
			if err != nil {
				t.Fatal(err)
			}
			boundaries := map[int]bool{}
			if err := readAllAt(tc.name, b, tc.magic, tc.msg, func(off int64) { boundaries[int(off)] = true }); err != nil {
				t.Fatalf("whole file: %v", err)
			}
			for n := range len(b) {
				err := readAll(tc.name, b[:n], tc.magic, tc.msg)
				if boundaries[n] {
					if err != nil {
						t.Fatalf("cut at entry boundary %d: %v", n, err)
					}
					continue
				}
				var fe *image.FormatError
				if !errors.Is(err, image.ErrImageCorrupt) || !errors.As(err, &fe) || fe.File != tc.name || fe.Offset > int64(n) {
					t.Fatalf("cut at %d of %d: %v, want ErrImageCorrupt in %s at an offset <= %d", n, len(b), err, tc.name, n)
				}
			}
		})
	}
}

func readAll(name string, b []byte, magic string, msg func() proto.Message) error {
	return readAllAt(name, b, magic, msg, func(int64) {})
}

// readAllAt reads every entry, telling at the offset where each ends.
func readAllAt(name string, b []byte, magic string, msg func() proto.Message, at func(int64)) error {
	r, err := image.NewReader(name, bytes.NewReader(b), int64(len(b)), magic)
	if err != nil {
		return err
	}
	for {
		at(r.Offset())
		if err := r.Next(msg()); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return err
		}
	}
}

// TestTruncatedDir cuts a file of a committed image at every byte offset
// (pages and ghost files at a few): Open must refuse the directory as
// corrupt, naming the file.
func TestTruncatedDir(t *testing.T) {
	dir := sample(t)
	for _, name := range []string{"pstree.img", "core-413.img", "inventory.img", "pagemap-415.img", "pages-2.img", "ghost-file-9.img"} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(dir, name)
			orig, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			defer os.WriteFile(p, orig, 0o600)
			cuts := []int{0, 1, len(orig) / 2, len(orig) - 1}
			if len(orig) < 1000 {
				cuts = cuts[:0]
				for n := range len(orig) {
					cuts = append(cuts, n)
				}
			}
			for _, n := range cuts {
				if err := os.WriteFile(p, orig[:n], 0o600); err != nil {
					t.Fatal(err)
				}
				_, err := image.Open(dir)
				var fe *image.FormatError
				if !errors.Is(err, image.ErrChecksum) || !errors.Is(err, image.ErrImageCorrupt) || !errors.As(err, &fe) || fe.File != name {
					t.Fatalf("cut at %d: %v, want ErrChecksum naming %s", n, err, name)
				}
			}
		})
	}
}

func TestEntryLengthError(t *testing.T) {
	b := []byte{0x19, 0x43, 0x56, 0x54, 0x47, 0x38, 0x05, 0x55, 0xff, 0xff, 0xff, 0xff}
	r, err := image.NewReader("core-412.img", bytes.NewReader(b), int64(len(b)), "CORE")
	if err != nil {
		t.Fatal(err)
	}
	err = r.Next(&criu_core.CoreEntry{})
	const want = "core-412.img: offset 0x8: entry length 4294967295 exceeds file size 12: image corrupt"
	if err == nil || err.Error() != want {
		t.Errorf("got %v\nwant %s", err, want)
	}
	// Under the file size but over the entry limit.
	big := append(b[:8:8], 0, 0, 0, 0x05)
	big = append(big, make([]byte, 0x05000000)...)
	r, _ = image.NewReader("core-412.img", bytes.NewReader(big), int64(len(big)), "CORE")
	if err := r.Next(&criu_core.CoreEntry{}); !errors.Is(err, image.ErrImageCorrupt) || !strings.Contains(err.Error(), "limit") {
		t.Errorf("80 MiB entry: %v, want the entry limit refused", err)
	}
}

func TestPagesBitFlip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "img")
	d, err := image.Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 2*image.ChunkSize+12345)
	for i := range data {
		data[i] = byte(i * 7)
	}
	pw, err := d.CreatePages(3)
	if err != nil {
		t.Fatal(err)
	}
	// Odd-sized writes, so chunk boundaries fall inside them.
	for rest := data; len(rest) > 0; {
		n := min(len(rest), 100003)
		if _, err := pw.Write(rest[:n]); err != nil {
			t.Fatal(err)
		}
		rest = rest[n:]
	}
	if err := pw.Close(); err != nil {
		t.Fatal(err)
	}
	writeInventory(t, d)
	if err := d.Commit(); err != nil {
		t.Fatal(err)
	}

	for _, flip := range []int64{0, image.ChunkSize - 1, image.ChunkSize + 4096, int64(len(data)) - 1} {
		p := filepath.Join(dir, "pages-3.img")
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteAt([]byte{data[flip] ^ 0x10}, flip)
		rd, err := image.Open(dir) // pages are not checked whole at Open
		if err != nil {
			t.Fatal(err)
		}
		pr, err := rd.OpenPages(3)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(pr)
		pr.Close()
		chunkStart := flip / image.ChunkSize * image.ChunkSize
		var fe *image.FormatError
		if !errors.Is(err, image.ErrChecksum) || !errors.As(err, &fe) || fe.File != "pages-3.img" || fe.Offset != chunkStart {
			t.Errorf("flip at %#x: %v, want ErrChecksum in pages-3.img at %#x", flip, err, chunkStart)
		}
		if int64(len(got)) != chunkStart || !bytes.Equal(got, data[:chunkStart]) {
			t.Errorf("flip at %#x: handed out %d bytes before the error, want the %d verified ones", flip, len(got), chunkStart)
		}
		f.WriteAt([]byte{data[flip]}, flip)
		f.Close()
	}
	rd, _ := image.Open(dir)
	pr, _ := rd.OpenPages(3)
	defer pr.Close()
	if got, err := io.ReadAll(pr); err != nil || !bytes.Equal(got, data) {
		t.Errorf("restored file: %v, %d bytes", err, len(got))
	}
}

func TestAbort(t *testing.T) {
	t.Run("existing dir", func(t *testing.T) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "dump.log"), []byte("log"), 0o644)
		d, err := image.Create(dir)
		if err != nil {
			t.Fatal(err)
		}
		w, _ := d.Create("core-1.img", "CORE")
		w.Write(&pstree.PstreeEntry{Pid: u32(1), Ppid: u32(0), Pgid: u32(1), Sid: u32(1)})
		w.Close()
		pw, _ := d.CreatePages(1)
		pw.Write(make([]byte, 5000)) // left open and partly written
		raw, _ := d.CreateRaw("cryo-extra")
		raw.Write([]byte("x"))
		raw.Close()
		w2, _ := d.Create("inventory.img", "INVENTORY")
		w2.Write(&inventory.InventoryEntry{ImgVersion: u32(2)})
		d.Abort()
		pw.Close()
		ents, _ := os.ReadDir(dir)
		if len(ents) != 1 || ents[0].Name() != "dump.log" {
			t.Errorf("after Abort: %v, want only dump.log", names(ents))
		}
	})
	t.Run("after failed commit", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "new")
		d, err := image.Create(dir)
		if err != nil {
			t.Fatal(err)
		}
		w, _ := d.Create("pstree.img", "PSTREE")
		w.Close()
		if err := d.Commit(); err == nil {
			t.Fatal("Commit without inventory.img succeeded")
		}
		d.Abort()
		if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("dir that Create made survives Abort: %v", err)
		}
	})
	t.Run("after commit", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "img")
		d, _ := image.Create(dir)
		writeInventory(t, d)
		if err := d.Commit(); err != nil {
			t.Fatal(err)
		}
		d.Abort()
		if _, err := image.Open(dir); err != nil {
			t.Errorf("Abort after Commit broke the image: %v", err)
		}
	})
}

func names(ents []os.DirEntry) []string {
	var s []string
	for _, e := range ents {
		s = append(s, e.Name())
	}
	return s
}

// TestForeign: a complete image without the sidecar and without any file of
// cryo's is another tool's (CRIU's): Open checksums it as it finds it, so a
// file that changes after Open is caught as in a cryo image.
func TestForeign(t *testing.T) {
	dir := sample(t)
	os.Remove(filepath.Join(dir, "cryo-checksums"))
	d, err := image.Open(dir)
	if err != nil || !d.Foreign() {
		t.Fatalf("Open without sidecar: %v, foreign %v; want a foreign image", err, d != nil && d.Foreign())
	}
	if err := d.ReadOne("inventory.img", "INVENTORY", &inventory.InventoryEntry{}); err != nil {
		t.Errorf("inventory of a foreign image: %v", err)
	}
	f, _ := os.OpenFile(filepath.Join(dir, "inventory.img"), os.O_APPEND|os.O_WRONLY, 0)
	f.Write([]byte{0})
	f.Close()
	if err := d.ReadOne("inventory.img", "INVENTORY", &inventory.InventoryEntry{}); !errors.Is(err, image.ErrChecksum) {
		t.Errorf("inventory changed after Open: %v, want ErrChecksum", err)
	}
}

func TestIncomplete(t *testing.T) {
	dir := sample(t)
	for _, name := range []string{"inventory.img", "cryo-checksums"} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(dir, name)
			b, _ := os.ReadFile(p)
			os.Remove(p)
			defer os.WriteFile(p, b, 0o600)
			// A file of cryo's own says the image is cryo's (not
			// another tool's, see TestForeign).
			own := filepath.Join(dir, "cryo-meta.json")
			os.WriteFile(own, []byte("{}"), 0o600)
			defer os.Remove(own)
			_, err := image.Open(dir)
			var fe *image.FormatError
			if !errors.Is(err, image.ErrIncomplete) || !errors.As(err, &fe) || fe.File != name {
				t.Errorf("without %s: %v, want ErrIncomplete naming it", name, err)
			}
		})
	}
	t.Run("uncommitted", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "img")
		d, _ := image.Create(dir)
		writeInventory(t, d)
		if _, err := image.Open(dir); !errors.Is(err, image.ErrIncomplete) {
			t.Errorf("before Commit: %v, want ErrIncomplete", err)
		}
		d.Abort()
	})
	t.Run("unlisted", func(t *testing.T) {
		os.WriteFile(filepath.Join(dir, "core-999.img"), []byte("x"), 0o600)
		defer os.Remove(filepath.Join(dir, "core-999.img"))
		if _, err := image.Open(dir); !errors.Is(err, image.ErrImageCorrupt) || !strings.Contains(err.Error(), "core-999.img") {
			t.Errorf("with an unlisted image file: %v", err)
		}
	})
	if _, err := image.Open(dir); err != nil {
		t.Errorf("restored image: %v", err)
	}
}

func TestCreateExisting(t *testing.T) {
	dir := sample(t)
	if _, err := image.Create(dir); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("Create over an image: %v, want ErrExist", err)
	}
	d, err := image.CreateOverwrite(dir)
	if err != nil {
		t.Fatal(err)
	}
	writeInventory(t, d)
	if err := d.Commit(); err != nil {
		t.Fatal(err)
	}
	rd, err := image.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := rd.Names(); len(got) != 1 { // inventory.img and nothing stale
		t.Errorf("after overwrite: %v", got)
	}
}

func TestModes(t *testing.T) {
	old := umask(0)
	defer umask(old)
	dir := sample(t)
	st, _ := os.Stat(dir)
	if st.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %v, want 0700", st.Mode().Perm())
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != len(imagetest.Files)+3 { // + two pages files + sidecar
		t.Errorf("files %v", names(ents))
	}
	for _, e := range ents {
		info, _ := e.Info()
		if info.Mode() != 0o600 {
			t.Errorf("%s: mode %v, want -rw-------", e.Name(), info.Mode())
		}
	}
}

// TestCritDecodes checks that CRIU's own decoder reads what Writer writes.
func TestCritDecodes(t *testing.T) {
	crit := imagetest.Crit(t)
	dir := sample(t)
	for name := range imagetest.Files {
		t.Run(name, func(t *testing.T) {
			out, err := exec.Command(crit, "decode", "-i", filepath.Join(dir, name), "--pretty").CombinedOutput()
			if err != nil {
				t.Fatalf("crit decode %s: %v\n%s", name, err, out)
			}
			var img struct {
				Magic   string            `json:"magic"`
				Entries []json.RawMessage `json:"entries"`
			}
			if err := json.Unmarshal(out, &img); err != nil {
				t.Fatalf("crit output: %v\n%s", err, out)
			}
			if img.Magic != imagetest.Files[name] {
				t.Errorf("crit says magic %s, want %s", img.Magic, imagetest.Files[name])
			}
			if name == "ghost-file-9.img" {
				var c struct {
					Len   uint64 `json:"len"`
					Extra string `json:"extra"`
				}
				if len(img.Entries) != 2 || json.Unmarshal(img.Entries[1], &c) != nil {
					t.Fatalf("crit reads %d ghost entries, want the file entry and one chunk", len(img.Entries))
				}
				data, err := base64.StdEncoding.DecodeString(strings.ReplaceAll(c.Extra, "\n", ""))
				if err != nil || c.Len != uint64(len(imagetest.GhostContents)) || !bytes.Equal(data, imagetest.GhostContents) {
					t.Errorf("crit reads a %d-byte chunk (%v), want the %d bytes written", c.Len, err, len(imagetest.GhostContents))
				}
			}
			if name == "pagemap-412.img" {
				if len(img.Entries) != 1+len(imagetest.Pagemap412) {
					t.Fatalf("%d entries", len(img.Entries))
				}
				for i, want := range imagetest.Pagemap412 {
					var e struct {
						Vaddr   string `json:"vaddr"`
						NrPages uint64 `json:"nr_pages"`
					}
					json.Unmarshal(img.Entries[i+1], &e)
					if e.Vaddr != "0x"+strconvHex(want.VAddr) || e.NrPages != want.Pages {
						t.Errorf("entry %d: crit reads vaddr %s nr_pages %d, want %#x %d", i, e.Vaddr, e.NrPages, want.VAddr, want.Pages)
					}
				}
			}
		})
	}
}

func TestPagesReadFromWriteTo(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "img")
	d, err := image.Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("0123456789abcdef"), (image.ChunkSize+100)/16)
	pw, err := d.CreatePages(7)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := io.Copy(pw, bytes.NewReader(data)); err != nil || n != int64(len(data)) {
		t.Fatalf("copy into pages: %d, %v", n, err)
	}
	if err := pw.Close(); err != nil {
		t.Fatal(err)
	}
	writeInventory(t, d)
	if err := d.Commit(); err != nil {
		t.Fatal(err)
	}
	rd, err := image.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	pr, err := rd.OpenPages(7)
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	var got bytes.Buffer
	if _, err := io.Copy(&got, pr); err != nil || !bytes.Equal(got.Bytes(), data) || pr.Size() != int64(len(data)) {
		t.Errorf("pages read back: %v, %d of %d bytes", err, got.Len(), len(data))
	}
	if _, err := rd.OpenPages(8); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("OpenPages of a missing id: %v", err)
	}
}
