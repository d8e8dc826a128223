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

// actionScript writes a shell script that logs each point it is run at (as
// "ACTION PID DIR STATE", STATE being the root's process state letter, or
// "-" if there is none) and fails at the point named fail.
func actionScript(t *testing.T, dir, fail string) (script, log string) {
	t.Helper()
	script = filepath.Join(dir, "action.sh")
	log = filepath.Join(dir, "actions.log")
	body := fmt.Sprintf(`#!/bin/sh
state=$(sed 's/.*) \(.\).*/\1/' /proc/$CRTOOLS_INIT_PID/stat 2>/dev/null || echo -)
echo "$CRTOOLS_SCRIPT_ACTION $CRTOOLS_INIT_PID $CRTOOLS_IMAGE_DIR $state" >> %s
[ "$CRTOOLS_SCRIPT_ACTION" != %q ]
`, log, fail)
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return script, log
}

func actionLines(t *testing.T, log string) []string {
	t.Helper()
	b, err := os.ReadFile(log)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// TestActionScripts: criu's --action-script runs at pre-dump, post-dump,
// pre-restore, post-restore, pre-resume and post-resume, in that order,
// with criu's environment; the restored root exists and is stopped (t) at
// post-restore and pre-resume, and runs at post-resume.
func TestActionScripts(t *testing.T) {
	requireCryo(t)
	tg := startTarget(t, "counter")
	img := filepath.Join(tg.dir, "img")
	script, log := actionScript(t, tg.dir, "none")
	mustDump(t, tg.pid, img, "--action-script", script)
	tg.expectKilled()
	cp := startCryo(t, restoreArgs(img, "--action-script", script)...)
	t.Cleanup(func() { killRestored(t, tg.pid, tg.name) })
	for deadline := time.Now().Add(restoreTimeout); len(actionLines(t, log)) < 6; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not every action ran: %q", actionLines(t, log))
		}
	}
	tg.fire()
	if r := cp.wait(restoreTimeout); r.code != 0 {
		t.Fatalf("restore: %v%s", r, readLog(img+".restore.log"))
	}
	got := actionLines(t, log)
	want := []string{"pre-dump R|S", "post-dump t", "pre-restore -", "post-restore t", "pre-resume t", "post-resume R|S"}
	if len(got) != len(want) {
		t.Fatalf("actions %q, want %d", got, len(want))
	}
	for i, line := range got {
		f := strings.Fields(line)
		w := strings.Fields(want[i])
		if len(f) != 4 || f[0] != w[0] || f[1] != fmt.Sprint(tg.pid) || f[2] != img || !strings.Contains(w[1], f[3]) {
			t.Errorf("action %d: %q, want %s %d %s with state %s", i, line, w[0], tg.pid, img, w[1])
		}
	}
	checkTargetLog(t, tg)
}

// TestActionScriptFails: a script that fails stops the dump or restore
// where criu's would: at pre-dump nothing is touched and no image is left;
// at post-dump the image is complete and the process goes on (not killed);
// at post-restore or pre-resume nothing of the restored tree stays, and
// the image restores again.
func TestActionScriptFails(t *testing.T) {
	requireCryo(t)
	t.Run("pre-dump", func(t *testing.T) {
		tg := startTarget(t, "counter")
		img := filepath.Join(tg.dir, "img")
		script, _ := actionScript(t, tg.dir, "pre-dump")
		r := dump(t, tg.pid, img, "--action-script", script)
		if r.code == 0 || !strings.Contains(r.output, "pre-dump") {
			t.Fatalf("dump: want a failure naming pre-dump, got %v", r)
		}
		if _, err := os.Stat(filepath.Join(img, "inventory.img")); err == nil {
			t.Errorf("the failed dump left an image")
		}
		expectAliveUnstopped(t, tg.pid, "after pre-dump failed")
	})
	t.Run("post-dump", func(t *testing.T) {
		tg := startTarget(t, "counter")
		img := filepath.Join(tg.dir, "img")
		script, _ := actionScript(t, tg.dir, "post-dump")
		r := dump(t, tg.pid, img, "--action-script", script)
		if r.code == 0 || !strings.Contains(r.output, "post-dump") || !strings.Contains(r.output, "left running") {
			t.Fatalf("dump: want a failure naming post-dump and saying the process was left running, got %v", r)
		}
		expectAliveUnstopped(t, tg.pid, "after post-dump failed")
		if r := runCryo(t, dumpTimeout, "show", img); r.code != 0 {
			t.Errorf("the image of the dump whose post-dump failed: %v", r)
		}
	})
	for _, point := range []string{"post-restore", "pre-resume"} {
		t.Run(point, func(t *testing.T) {
			tg := startTarget(t, "counter")
			img := filepath.Join(tg.dir, "img")
			mustDump(t, tg.pid, img)
			tg.expectKilled()
			script, _ := actionScript(t, tg.dir, point)
			r := runCryo(t, restoreTimeout, restoreArgs(img, "-d", "--action-script", script)...)
			if r.code == 0 || !strings.Contains(r.output, point) {
				t.Fatalf("restore: want a failure naming %s, got %v", point, r)
			}
			if runsTarget(tg.pid, tg.name) {
				t.Fatalf("the failed restore left pid %d running", tg.pid)
			}
			restoreDetached(t, tg, img)
			tg.fire()
			ws, err := waitReaped(tg.pid, exitTimeout)
			if err != nil {
				t.Fatal(err)
			}
			tg.expectPassed(ws.ExitStatus(), "restored after a failed restore")
		})
	}
}

// TestRestorePidfile: criu's --pidfile names the restored root, relative
// to the image directory; one that cannot be written fails the restore
// with nothing of the tree left running.
func TestRestorePidfile(t *testing.T) {
	requireCryo(t)
	tg := startTarget(t, "counter")
	img := filepath.Join(t.TempDir(), "img")
	mustDump(t, tg.pid, img)
	tg.expectKilled()
	reapOrphans(t)
	bad := filepath.Join(t.TempDir(), "no-such-dir", "pid")
	if r := runCryo(t, restoreTimeout, restoreArgs(img, "-d", "--pidfile", bad)...); r.code == 0 || !strings.Contains(r.output, "--pidfile") {
		t.Fatalf("restore with an unwritable --pidfile: want a failure naming it, got %v", r)
	}
	if runsTarget(tg.pid, tg.name) {
		t.Fatalf("a restore that failed on its pidfile left pid %d running", tg.pid)
	}
	restoreDetached(t, tg, img, "--pidfile", "root.pid")
	b, err := os.ReadFile(filepath.Join(img, "root.pid"))
	if err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(tg.pid) {
		t.Fatalf("pidfile holds %q (%v), want %d", b, err, tg.pid)
	}
	tg.fire()
	ws, err := waitReaped(tg.pid, exitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	tg.expectPassed(ws.ExitStatus(), "after restore with --pidfile")
}
