package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
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
		crit, err := exec.LookPath("crit")
		if err != nil {
			t.Skip("crit not installed (Debian package criu; `make deps` installs it)")
		}
		for _, e := range ents {
			n := e.Name()
			if !strings.HasSuffix(n, ".img") || strings.HasPrefix(n, "pages-") {
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

	pid := strconv.Itoa(tg.pid)
	t.Run("show", func(t *testing.T) {
		r := runCryo(t, 30*time.Second, "show", img)
		if r.code != 0 || r.timedOut {
			t.Fatalf("cryo show: %v", r)
		}
		if !strings.Contains(r.output, pid) {
			t.Errorf("cryo show does not name pid %s:\n%s", pid, lastLines(r.output, 30))
		}
	})
	t.Run("show-json", func(t *testing.T) {
		c := exec.Command(cryoBin, "show", img, "--json")
		out, err := c.Output()
		if err != nil {
			t.Fatalf("cryo show --json: %v", err)
		}
		var v any
		if err := json.Unmarshal(out, &v); err != nil {
			t.Fatalf("cryo show --json is not JSON: %v\n%s", err, lastLines(string(out), 10))
		}
		nums := map[int64]bool{}
		collectNumbers(v, nums)
		want := map[string]int{"pid": tg.pid}
		for name, tid := range tg.tids {
			want["thread "+name] = tid
		}
		for what, n := range want {
			if !nums[int64(n)] {
				t.Errorf("cryo show --json does not name %s %d", what, n)
			}
		}
	})

	restoreAndVerify(t, tg, img)
}

// collectNumbers gathers every integer in a decoded JSON value, including
// integers written as strings.
func collectNumbers(v any, into map[int64]bool) {
	switch x := v.(type) {
	case float64:
		into[int64(x)] = true
	case string:
		if n, err := strconv.ParseInt(x, 10, 64); err == nil {
			into[n] = true
		}
	case []any:
		for _, e := range x {
			collectNumbers(e, into)
		}
	case map[string]any:
		for _, e := range x {
			collectNumbers(e, into)
		}
	}
}
