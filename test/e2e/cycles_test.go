package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// procSize is what a leak would make grow: fds, mappings, threads and
// resident memory (kB).
type procSize struct{ fds, maps, threads, rss int }

func sizeOf(t *testing.T, pid int) procSize {
	t.Helper()
	var s procSize
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	s.fds = len(fds)
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	s.maps = strings.Count(string(maps), "\n")
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	s.threads = len(tasks)
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(st), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			s.rss, _ = strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		}
	}
	return s
}

// TestCyclesNoGrowth: one process dumped and restored over and over (10
// times in make test; CRYO_CYCLES=1000 for the figure) keeps its
// fds, mappings and threads exactly, its resident memory within 64 pages,
// and no cryo process outlives a cycle. It then finishes its own checks:
// its count went on across every cycle.
func TestCyclesNoGrowth(t *testing.T) {
	requireCryo(t)
	n := 10
	if s := os.Getenv("CRYO_CYCLES"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 1 {
			t.Fatalf("CRYO_CYCLES=%q: want a positive number", s)
		}
	}
	tg := startTarget(t, "counter")
	first := sizeOf(t, tg.pid)
	img := filepath.Join(t.TempDir(), "img")
	var after procSize
	for i := 1; i <= n; i++ {
		os.RemoveAll(img)
		mustDump(t, tg.pid, img)
		if i == 1 {
			tg.expectKilled()
		} else if _, err := waitReaped(tg.pid, exitTimeout); err != nil {
			t.Fatalf("cycle %d: the restored counter after its dump: %v", i, err)
		}
		reapOrphans(t)
		if r := runCryo(t, restoreTimeout, "restore", "-D", img, "-d"); r.code != 0 || r.timedOut {
			t.Fatalf("cycle %d: restore -d: %v", i, r)
		}
		if left := orphanedCryos(); len(left) > 0 {
			t.Fatalf("cycle %d: cryo processes left: %v", i, left)
		}
		after = sizeOf(t, tg.pid)
		if after.fds != first.fds || after.maps != first.maps || after.threads != first.threads || after.rss > first.rss+64*4 {
			t.Fatalf("cycle %d: the process grew: %+v, was %+v", i, after, first)
		}
	}
	t.Logf("%d cycles: before %+v, after %+v", n, first, after)
	t.Cleanup(func() { killRestored(t, tg.pid, tg.name) })
	tg.fire()
	ws, err := waitReaped(tg.pid, exitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	tg.expectPassed(ws.ExitStatus(), fmt.Sprintf("after %d cycles", n))
}
