package e2e

import (
	"path/filepath"
	"testing"
)

// Seccomp (test/targets/seccomp.c): filters shared between threads come
// back shared, a thread's own filters its own, and strict mode strict.
// Each is dumped twice and compared in /proc (Seccomp, Seccomp_filters)
// for every thread.

// TestSeccompTsync: one filter installed on every thread with
// SECCOMP_FILTER_FLAG_TSYNC.
func TestSeccompTsync(t *testing.T) { testSeccomp(t, "tsync") }

// TestSeccompInherited: a thread inherited its creator's filter and added
// one of its own.
func TestSeccompInherited(t *testing.T) { testSeccomp(t, "inherit") }

// TestSeccompSubset: two threads share a filter they inherited, a third,
// made before it, has none.
func TestSeccompSubset(t *testing.T) { testSeccomp(t, "subset") }

// TestSeccompStrict: a thread in SECCOMP_MODE_STRICT, serving over a pipe.
func TestSeccompStrict(t *testing.T) { testSeccomp(t, "strict") }

func testSeccomp(t *testing.T, mode string) {
	requireCryo(t)
	tg := startTarget(t, "seccomp", mode)
	before := snapshotTree(t, tg.pid)
	img := filepath.Join(t.TempDir(), "img")
	mustDump(t, tg.pid, img)
	tg.expectKilled()
	reapOrphans(t)
	restoreDetached(t, tg, img)
	compareSnapshots(t, "after restore", before, snapshotTree(t, tg.pid))
	res, img2 := cycleAgain(t, tg)
	if res.timedOut || res.code != 0 {
		t.Fatalf("seccomp %s after two checkpoints: %v\n%s\n%s", mode, res, tg.log(), readLog(img2+".restore.log"))
	}
	tg.expectPassed(0, "after two checkpoints")
}
