package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pstree"

	"github.com/cryo-project/cryo/internal/image"
	"github.com/cryo-project/cryo/internal/imageset"
)

// TestRestoreCRIULayout: an image in exactly the layout CRIU 4.2 writes —
// cryo's image of a small program with cryo's own files taken away and the
// ids left only in ids-PID.img, as CRIU keeps them — restores with cryo: the
// target's own checks and the harness's /proc compare pass. Before that, the
// same image with a file cryo does not restore (CRIU's cgroup.img) is refused
// naming it, and a cryo image that lost only its sidecar is still refused as
// incomplete.
func TestRestoreCRIULayout(t *testing.T) {
	requireCryo(t)
	// Its "criu" mode leaves out the mseal'd region, which only
	// cryo-meta.json records.
	tg := startTarget(t, "memory", "criu")
	img := filepath.Join(tg.dir, "img")
	mustDump(t, tg.pid, img)
	tg.expectKilled()

	refused := func(what, want string) {
		t.Helper()
		r := runCryo(t, restoreTimeout, restoreArgs(img)...)
		if r.code == 0 || runsTarget(tg.pid, tg.name) {
			killRestored(t, tg.pid, tg.name)
			t.Fatalf("%s: restore exited %d, want a refusal", what, r.code)
		}
		if !strings.Contains(r.output, want) {
			t.Errorf("%s: restore said %q, want it to name %q", what, lastLines(r.output, 5), want)
		}
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Remove(filepath.Join(img, image.SumsName)))
	refused("a cryo image without its sidecar", image.SumsName)

	for _, n := range []string{"cryo-meta.json", imageset.StateName} {
		must(os.Remove(filepath.Join(img, n)))
	}
	if _, err := os.Stat(filepath.Join(img, imageset.StatsDump.Name)); err != nil {
		t.Fatalf("no %s under CRIU's name: %v", imageset.StatsDump.Name, err)
	}
	// CRIU's cores carry no ids: its restore reads them from ids-PID.img.
	dir, err := image.Open(img)
	must(err)
	if !dir.Foreign() {
		t.Fatal("image without cryo's files not taken as another tool's")
	}
	trees, err := imageset.ReadAll(dir, imageset.Pstree, func() *pstree.PstreeEntry { return &pstree.PstreeEntry{} })
	must(err)
	for _, te := range trees {
		for _, tid := range te.Threads {
			c := &core.CoreEntry{}
			must(imageset.ReadOne(dir, imageset.Core(tid), c))
			c.Ids = nil
			must(image.WriteLoose(filepath.Join(img, imageset.Core(tid).Name), "CORE", c))
		}
	}

	cg := filepath.Join(img, "cgroup.img")
	must(os.WriteFile(cg, []byte{0}, 0o600))
	refused("an image with cgroup.img", "cgroup.img")
	must(os.Remove(cg))

	restoreAndVerify(t, tg, img)
	if log, _ := os.ReadFile(img + ".restore.log"); testing.Verbose() {
		t.Log(lastLines(string(log), 40))
	}
	if log, _ := os.ReadFile(img + ".restore.log"); !strings.Contains(string(log), "another tool") {
		t.Errorf("the restore log does not say the image is another tool's:\n%s", lastLines(string(log), 10))
	}
}
