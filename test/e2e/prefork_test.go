package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// treePids lists root and its descendants.
func treePids(root int) []int {
	out := []int{root}
	for i := 0; i < len(out); i++ {
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", out[i]))
		for _, task := range tasks {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", out[i], task.Name()))
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					out = append(out, pid)
				}
			}
		}
	}
	return out
}

// treePss sums the proportional set size of a tree, in KiB.
func treePss(t *testing.T, root int) (int, int) {
	t.Helper()
	pids := treePids(root)
	total := 0
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
		if err != nil {
			t.Fatalf("smaps_rollup of %d: %v", pid, err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "Pss:" {
				n, _ := strconv.Atoi(f[1])
				total += n
			}
		}
	}
	return total, len(pids)
}

// TestPreforkSharing checkpoints a pre-forked server whose workers share the
// master's memory copy-on-write, an epoll set and a counter. After restore
// the tree must not take more memory than before (PSS within 10%): workers
// inherit the restored master's pages instead of getting copies.
func TestPreforkSharing(t *testing.T) {
	requireRoot(t)
	requireCryo(t)
	tg := startTarget(t, "prefork", "64", "10")
	time.Sleep(100 * time.Millisecond)
	before, n := treePss(t, tg.pid)
	if n != 11 {
		t.Fatalf("tree has %d processes, want 11", n)
	}
	img := filepath.Join(t.TempDir(), "img")
	mustDump(t, tg.pid, img)
	tg.expectKilled()
	reapOrphans(t)

	start := time.Now()
	r := runCryo(t, restoreTimeout, "restore", "-D", img, "-d", "-v4", "-o", img+".restore.log")
	if r.code != 0 {
		t.Fatalf("restore: %v\n%s", r, readLog(img+".restore.log"))
	}
	took := time.Since(start)
	defer killRestored(t, tg.pid, "prefork")
	after, n := treePss(t, tg.pid)
	t.Logf("tree PSS before %d KiB, after restore %d KiB (%.2fx), %d processes, restore took %v", before, after, float64(after)/float64(before), n, took)
	if n != 11 {
		t.Errorf("restored tree has %d processes, want 11", n)
	}
	if float64(after) > 1.1*float64(before) {
		t.Errorf("tree PSS after restore %d KiB > 1.1 x %d KiB before: workers got copies of the master's memory", after, before)
	}
	// A restored tree must be as dumpable as the original: once more.
	res, img2 := cycleAgain(t, tg)
	if res.timedOut || res.code != 0 {
		t.Fatalf("prefork after two checkpoints: %v\n%s\n%s", res, tg.log(), readLog(img2+".restore.log"))
	}
}
