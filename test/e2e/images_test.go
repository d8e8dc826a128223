package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cryo-project/cryo/internal/image/imagetest"
)

// TestImageFiles: the images of a multi-threaded process are private (0600),
// decode with CRIU's own crit, and `cryo show` names the pid and threads.
// The image then restores.
func TestImageFiles(t *testing.T) {
	requireCryo(t)
	tg := startTarget(t, "threads")
	img := filepath.Join(tg.dir, "img")
	mustDump(t, tg.pid, img)
	tg.expectKilled()

	ents, err := os.ReadDir(img)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) == 0 {
		t.Fatal("empty image directory")
	}
	for _, e := range ents {
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		if !info.Mode().IsRegular() || info.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want a regular file with mode 0600", e.Name(), info.Mode())
		}
	}
	if _, err := os.Stat(filepath.Join(img, "inventory.img")); err != nil {
		t.Errorf("no inventory.img: %v", err)
	}

	t.Run("crit-decode", func(t *testing.T) {
		crit := imagetest.Crit(t)
		for _, e := range ents {
			n := e.Name()
			// stats-dump has CRIU's name, without .img.
			if (!strings.HasSuffix(n, ".img") && n != "stats-dump") || strings.HasPrefix(n, "pages-") {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			out, err := exec.CommandContext(ctx, crit, "decode", "-i", filepath.Join(img, n)).CombinedOutput()
			cancel()
			if err != nil {
				t.Errorf("crit decode -i %s: %v\n%s", n, err, lastLines(string(out), 10))
			}
		}
	})

	// The threads the target reported, and its main thread: exactly the
	// threads the image must hold, the main thread first.
	wantTids := []int{tg.pid}
	for _, tid := range tg.tids {
		wantTids = append(wantTids, tid)
	}
	slices.Sort(wantTids[1:])
	checkShown := func(t *testing.T, form string, procs []shownProcess) {
		t.Helper()
		if len(procs) != 1 {
			t.Fatalf("cryo show%s: %d processes, want 1 (pid %d): %+v", form, len(procs), tg.pid, procs)
		}
		p := procs[0]
		if p.pid != tg.pid || p.ppid != 0 || p.comm != "threads" || p.zombie {
			t.Errorf("cryo show%s: process %+v, want pid %d, ppid 0, comm threads, not a zombie", form, p, tg.pid)
		}
		got := slices.Clone(p.tids)
		if len(got) > 1 {
			slices.Sort(got[1:])
		}
		if !slices.Equal(got, wantTids) {
			t.Errorf("cryo show%s: threads %v, want %v (the main thread, then those the target reported: %v)", form, p.tids, wantTids, tg.tids)
		}
	}
	t.Run("show", func(t *testing.T) {
		r := runCryo(t, 30*time.Second, "show", img)
		if r.code != 0 || r.timedOut {
			t.Fatalf("cryo show: %v", r)
		}
		procs, err := parseShowText(r.output)
		if err != nil {
			t.Fatalf("cryo show: %v\n%s", err, lastLines(r.output, 30))
		}
		checkShown(t, "", procs)
	})
	t.Run("show-json", func(t *testing.T) {
		checkShown(t, " --json", showJSON(t, img))
	})

	restoreAndVerify(t, tg, img)

	// A restore leaves stats-restore beside the image, as CRIU does, for
	// crit and Podman's --print-stats.
	t.Run("stats", func(t *testing.T) {
		crit := imagetest.Crit(t)
		for _, c := range []struct{ file, field string }{
			{"stats-dump", `"frozen_time"`}, {"stats-dump", `"pages_written"`},
			{"stats-restore", `"restore_time"`}, {"stats-restore", `"pages_restored"`}, {"stats-restore", `"forking_time"`},
		} {
			out, err := exec.Command(crit, "decode", "-i", filepath.Join(img, c.file)).CombinedOutput()
			if err != nil || !strings.Contains(string(out), c.field) {
				t.Errorf("crit decode -i %s: want %s: %v\n%s", c.file, c.field, err, lastLines(string(out), 10))
			}
		}
	})
}

// shownProcess is what `cryo show` says about one process, in either form.
type shownProcess struct {
	pid, ppid  int
	comm       string // "" for a zombie
	zombie     bool
	exitStatus uint32 // a zombie's wait status
	tids       []int  // in the order shown
}

// showJSON runs `cryo show --json img` and decodes the fields the tests
// check (see internal/show/model.go: the JSON form is an interface).
func showJSON(t *testing.T, img string) []shownProcess {
	t.Helper()
	c := exec.Command(cryoBin, "show", "--json", img)
	out, err := c.Output()
	if err != nil {
		t.Fatalf("cryo show --json: %v", err)
	}
	var v struct {
		Processes []struct {
			PID        *int   `json:"pid"`
			PPID       *int   `json:"ppid"`
			Comm       string `json:"comm"`
			Zombie     bool   `json:"zombie"`
			ExitStatus uint32 `json:"exit_status"`
			Threads    []struct {
				TID *int `json:"tid"`
			} `json:"threads"`
		} `json:"processes"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("cryo show --json is not JSON of an image: %v\n%s", err, lastLines(string(out), 10))
	}
	var procs []shownProcess
	for i, p := range v.Processes {
		if p.PID == nil || p.PPID == nil {
			t.Fatalf("cryo show --json: process %d has no pid or ppid field:\n%s", i, lastLines(string(out), 30))
		}
		sp := shownProcess{pid: *p.PID, ppid: *p.PPID, comm: p.Comm, zombie: p.Zombie, exitStatus: p.ExitStatus}
		for j, th := range p.Threads {
			if th.TID == nil {
				t.Fatalf("cryo show --json: thread %d of pid %d has no tid field", j, sp.pid)
			}
			sp.tids = append(sp.tids, *th.TID)
		}
		procs = append(procs, sp)
	}
	return procs
}

var (
	// Process 412 (counter)  ppid 0  pgid 412  sid 412
	// Process 415 (zombie, exit status 0x700)  ppid 412  pgid 412  sid 412
	showProcessLine = regexp.MustCompile(`^Process (\d+) \((.*)\)  ppid (\d+)  pgid \d+  sid \d+$`)
	showZombieComm  = regexp.MustCompile(`^zombie, exit status (0|0x[0-9a-f]+)$`)
	showThreadsLine = regexp.MustCompile(`^  Threads \((\d+)\)$`)
)

// parseShowText reads the process headers and thread tables of `cryo show`.
func parseShowText(out string) ([]shownProcess, error) {
	var procs []shownProcess
	lines := strings.Split(out, "\n")
	for i := 0; i < len(lines); i++ {
		if m := showProcessLine.FindStringSubmatch(lines[i]); m != nil {
			p := shownProcess{comm: m[2]}
			p.pid, _ = strconv.Atoi(m[1])
			p.ppid, _ = strconv.Atoi(m[3])
			if z := showZombieComm.FindStringSubmatch(m[2]); z != nil {
				st, err := strconv.ParseUint(z[1], 0, 32)
				if err != nil {
					return nil, fmt.Errorf("line %d: %q: %w", i+1, lines[i], err)
				}
				p.comm, p.zombie, p.exitStatus = "", true, uint32(st)
			}
			procs = append(procs, p)
			continue
		}
		m := showThreadsLine.FindStringSubmatch(lines[i])
		if m == nil {
			continue
		}
		if len(procs) == 0 {
			return nil, fmt.Errorf("line %d: a thread table before any process", i+1)
		}
		n, _ := strconv.Atoi(m[1])
		// A column header, then one row per thread, TID first.
		if i+1+n >= len(lines) || !strings.HasPrefix(strings.TrimSpace(lines[i+1]), "TID ") {
			return nil, fmt.Errorf("line %d: %d threads announced, table missing or short", i+1, n)
		}
		p := &procs[len(procs)-1]
		for _, row := range lines[i+2 : i+2+n] {
			f := strings.Fields(row)
			if len(f) == 0 {
				return nil, fmt.Errorf("thread table of pid %d: empty row", p.pid)
			}
			tid, err := strconv.Atoi(f[0])
			if err != nil {
				return nil, fmt.Errorf("thread table of pid %d: row %q: %w", p.pid, row, err)
			}
			p.tids = append(p.tids, tid)
		}
		i += 1 + n
	}
	if len(procs) == 0 {
		return nil, errors.New("no process shown")
	}
	return procs, nil
}
