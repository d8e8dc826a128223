package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// nsAttr starts a target in new UTS and IPC namespaces, leading its
// session; nsinit makes its time namespace itself.
var nsAttr = &syscall.SysProcAttr{Setsid: true, Cloneflags: syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC}

// requireTimeNS skips where the kernel has no time namespaces.
func requireTimeNS(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/proc/self/ns/time"); err != nil {
		t.Skipf("no time namespaces (CONFIG_TIME_NS): %v", err)
	}
}

// TestNamespacesUtsIpcTime: a tree in UTS, IPC and time namespaces of its
// own comes back in new ones made as they were: every process checks its
// host and domain name, two IPC sysctls, that its monotonic and boot-time
// clocks kept their offsets and never went back, and the root that its
// children are its own and that the namespace's System V objects (two
// segments, one attached by no one, a semaphore set, a queue with a
// message) have their ids and contents. Twice: the restored tree is
// dumped again.
func TestNamespacesUtsIpcTime(t *testing.T) {
	requireRoot(t)
	requireCryo(t)
	requireTimeNS(t)
	tg := startTargetAttr(t, nsAttr, "nsinit")
	tg.waitReady()
	img := filepath.Join(t.TempDir(), "img")
	mustDump(t, tg.pid, img)
	tg.expectKilled()
	reapOrphans(t)
	for _, f := range []string{"utsns-9.img", "ipcns-var-10.img", "timens-11.img", "timens-0.img", "ipcns-shm-10.img", "ipcns-sem-10.img", "ipcns-msg-10.img"} {
		if _, err := os.Stat(filepath.Join(img, f)); err != nil {
			t.Errorf("image: %v", err)
		}
	}
	checkCRIU(t, img)
	restoreDetached(t, tg, img)
	// The restored tree is in namespaces neither cryo's nor the test's.
	for _, k := range []string{"uts", "ipc", "time"} {
		own, _ := os.Readlink("/proc/self/ns/" + k)
		its, err := os.Readlink("/proc/" + strconv.Itoa(tg.pid) + "/ns/" + k)
		if err != nil || its == own {
			t.Errorf("restored root's %s namespace %q (%v), the test's %q", k, its, err, own)
		}
	}
	res, img2 := cycleAgain(t, tg)
	if res.timedOut || res.code != 0 {
		t.Fatalf("nsinit after two checkpoints: %v\n%s\n%s", res, tg.log(), readLog(img2+".restore.log"))
	}
	for _, who := range []string{"root", "child1", "child2"} {
		for _, c := range []string{"hostname", "domainname", "msgmax", "shmmni", "clocks-forward", "monotonic-offset", "boottime-offset", "monotonic-rate"} {
			if !strings.Contains(tg.log(), "PASS "+who+"-"+c+"\n") {
				t.Errorf("check %s-%s did not pass:\n%s", who, c, tg.log())
			}
		}
	}
	for _, c := range []string{"child1-passed", "child2-passed", "shm-contents", "shm-id", "shm-detached", "sem-values", "msg-message"} {
		if !strings.Contains(tg.log(), "PASS "+c+"\n") {
			t.Errorf("check %s did not pass:\n%s", c, tg.log())
		}
	}
}

// TestNamespacesRefused: what cryo does not make of a namespace is
// refused by the dump, naming it, and the tree goes on unharmed.
func TestNamespacesRefused(t *testing.T) {
	requireRoot(t)
	requireCryo(t)
	requireTimeNS(t)
	for _, c := range []struct {
		name, mode string
		want       []string
		outsider   bool // a process outside the tree joins its UTS namespace
	}{
		{"time-for-children", "unshared", []string{"its children go to time:["}, false},
		{"several-uts", "split", []string{"a tree in several uts namespaces"}, false},
		{"shared-with-outsider", "", []string{"is also that of process", "outside the tree"}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			var args []string
			if c.mode != "" {
				args = []string{c.mode}
			}
			tg := startTargetAttr(t, nsAttr, "nsinit", args...)
			tg.waitReady()
			if c.outsider {
				out := exec.Command("nsenter", "--uts=/proc/"+strconv.Itoa(tg.pid)+"/ns/uts", "sleep", "60")
				if err := out.Start(); err != nil {
					t.Fatal(err)
				}
				defer func() { out.Process.Kill(); out.Wait() }()
				time.Sleep(100 * time.Millisecond) // nsenter's setns, then its exec
			}
			img := filepath.Join(tg.dir, "img")
			r := dump(t, tg.pid, img, "--leave-running")
			if r.timedOut || r.code == 0 || !strings.Contains(r.output, "not supported") {
				t.Fatalf("dump: want a refusal, got %v", r)
			}
			for _, w := range c.want {
				if !strings.Contains(r.output, w) {
					t.Errorf("refusal does not say %q: %v", w, r)
				}
			}
			if _, err := os.Stat(filepath.Join(img, "inventory.img")); err == nil {
				t.Errorf("a failed dump left %s/inventory.img", img)
			}
			tg.expectUnharmed("after the refused dump")
		})
	}
}
