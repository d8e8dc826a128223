package e2e

import (
	"path/filepath"
	"strings"
	"testing"

	criucore "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"google.golang.org/protobuf/proto"

	"github.com/cryo-project/cryo/internal/image"
)

// TestRestoreVerify: `cryo restore --verify` compares the restored tree,
// whole and still stopped, with what the dump recorded of it, and lets it
// run only if nothing differs. An image edited so that the restore gives
// a thread another signal mask (the checksums rewritten, so only the
// comparison can tell) is refused, naming the field, and nothing of it
// stays running.
func TestRestoreVerify(t *testing.T) {
	requireCryo(t)
	tg := startTarget(t, "signals")
	img := filepath.Join(tg.dir, "img")
	mustDump(t, tg.pid, img)
	tg.expectKilled()

	edited := filepath.Join(t.TempDir(), "img")
	if err := copyDir(img, edited); err != nil {
		t.Fatal(err)
	}
	editCore(t, edited, tg.pid, func(c *criucore.CoreEntry) {
		c.ThreadCore.BlkSigset = proto.Uint64(c.GetThreadCore().GetBlkSigset() ^ 1<<(10-1)) // SIGUSR1 flipped
	})
	if err := image.Reseal(edited); err != nil {
		t.Fatal(err)
	}
	r := runCryo(t, restoreTimeout, "restore", "-D", edited, "-d", "--verify")
	if r.code == 0 || !strings.Contains(r.output, "not as it was dumped") || !strings.Contains(r.output, "SigBlk") {
		t.Fatalf("restore --verify of an image that restores another signal mask: want a failure naming SigBlk, got %v", r)
	}
	if runsTarget(tg.pid, tg.name) {
		t.Fatalf("the refused restore left pid %d running", tg.pid)
	}

	r = runCryo(t, restoreTimeout, restoreArgs(img, "-d", "--verify")...)
	if r.code != 0 {
		t.Fatalf("restore --verify of the image as dumped: %v%s", r, readLog(img+".restore.log"))
	}
	t.Cleanup(func() { killRestored(t, tg.pid, tg.name) })
	if !strings.Contains(readLog(img+".restore.log"), "msg=verified differences=0") {
		t.Errorf("the restore log does not say it verified:%s", readLog(img+".restore.log"))
	}
	tg.fire()
	ws, err := waitReaped(tg.pid, exitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	tg.expectPassed(ws.ExitStatus(), "restored with --verify")
}
