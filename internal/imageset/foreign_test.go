package imageset

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"google.golang.org/protobuf/proto"

	"github.com/cryo-project/cryo/internal/image"
	"github.com/cryo-project/cryo/internal/image/imagetest"
)

// TestLoadForeign: an image without cryo's sidecar or any cryo-* file (one
// CRIU wrote) loads with the same checks, and these: ids-PID.img for every
// process, CRIU's files that cryo does not restore refused by name, and the
// pages file holding exactly what the pagemap lists.
func TestLoadForeign(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "img")
	imagetest.Write(t, dir)
	if err := os.Remove(filepath.Join(dir, image.SumsName)); err != nil {
		t.Fatal(err)
	}
	var fe *image.FormatError
	if _, err := Load(dir); !errors.Is(err, image.ErrImageCorrupt) || !errors.As(err, &fe) || fe.File != "ids-412.img" {
		t.Fatalf("without ids: %v, want ids-412.img corrupt", err)
	}
	for pid, files := range map[uint32]uint32{412: 2, 415: 6} {
		ids := &core.TaskKobjIdsEntry{VmId: proto.Uint32(pid), FilesId: proto.Uint32(files), FsId: proto.Uint32(3), SighandId: proto.Uint32(4)}
		if err := WriteLoose(dir, Ids(pid), ids); err != nil {
			t.Fatal(err)
		}
	}
	s, err := Load(dir)
	if err != nil {
		t.Fatalf("foreign image: %v", err)
	}
	if !s.Dir.Foreign() || s.Meta != nil || s.Procs[1].Ids.GetFilesId() != 6 {
		t.Errorf("foreign %v, meta %v, ids of 415 %v", s.Dir.Foreign(), s.Meta, s.Procs[1].Ids)
	}

	cg := filepath.Join(dir, "cgroup.img")
	os.WriteFile(cg, nil, 0o600)
	if _, err := Load(dir); !errors.Is(err, ErrNotSupported) || !errors.As(err, &fe) || fe.File != "cgroup.img" {
		t.Errorf("with cgroup.img: %v, want it refused by name", err)
	}
	os.Remove(cg)

	pages := filepath.Join(dir, image.PagesName(1))
	st, err := os.Stat(pages)
	if err != nil {
		t.Fatal(err)
	}
	os.Truncate(pages, st.Size()-4096)
	if _, err := Load(dir); !errors.Is(err, image.ErrImageCorrupt) || !errors.As(err, &fe) || fe.File != image.PagesName(1) {
		t.Errorf("pages file a page short: %v, want %s corrupt", err, image.PagesName(1))
	}

	// A cryo image that lost its sidecar is not another tool's.
	os.WriteFile(filepath.Join(dir, "cryo-meta.json"), []byte("{}"), 0o600)
	if _, err := Load(dir); !errors.Is(err, image.ErrIncomplete) {
		t.Errorf("cryo image without sidecar: %v, want ErrIncomplete", err)
	}
}
