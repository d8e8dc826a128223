package image_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	criu_core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	ghost_file "github.com/checkpoint-restore/go-criu/v8/crit/images/ghost-file"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/inventory"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/mm"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pstree"
	"google.golang.org/protobuf/proto"

	"github.com/cryo-project/cryo/internal/image"
	"github.com/cryo-project/cryo/internal/image/imagetest"
)

// fuzzTypes are the image types FuzzReader tries every input as.
var fuzzTypes = []struct {
	magic string
	msg   func() proto.Message
}{
	{"CORE", func() proto.Message { return &criu_core.CoreEntry{} }},
	{"MM", func() proto.Message { return &mm.MmEntry{} }},
	{"PAGEMAP", func() proto.Message { return &pagemap.PagemapEntry{} }},
	{"PSTREE", func() proto.Message { return &pstree.PstreeEntry{} }},
	{"INVENTORY", func() proto.Message { return &inventory.InventoryEntry{} }},
	{"FILES", func() proto.Message { return &fdinfo.FileEntry{} }},
	{"GHOST_FILE", func() proto.Message { return &ghost_file.GhostChunkEntry{} }},
}

func FuzzReader(f *testing.F) {
	dir := sample(f)
	for name := range imagetest.Files {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, ft := range fuzzTypes {
			r, err := image.NewReader("f.img", bytes.NewReader(b), int64(len(b)), ft.magic)
			if err != nil {
				checkFormatError(t, err, len(b))
				continue
			}
			for {
				before := r.Offset()
				err := r.Next(ft.msg())
				if errors.Is(err, io.EOF) {
					if r.Offset() != int64(len(b)) {
						t.Fatalf("EOF at %d of %d", r.Offset(), len(b))
					}
					break
				}
				if err != nil {
					checkFormatError(t, err, len(b))
					break
				}
				if r.Offset() <= before || r.Offset() > int64(len(b)) {
					t.Fatalf("offset moved from %d to %d in %d bytes", before, r.Offset(), len(b))
				}
			}
		}
	})
}

func checkFormatError(t *testing.T, err error, size int) {
	t.Helper()
	var fe *image.FormatError
	if !errors.As(err, &fe) || !errors.Is(err, image.ErrImageCorrupt) || fe.File != "f.img" || fe.Offset > int64(size) {
		t.Fatalf("error %v is not an ErrImageCorrupt FormatError within the %d-byte input", err, size)
	}
}
