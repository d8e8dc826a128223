package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// sysvKey returns the key and id the sysv target reported, and removes
// the segment when the test ends, whatever happened to the target.
func sysvKey(t *testing.T, tg *target) (key, id int) {
	t.Helper()
	for _, line := range strings.Split(tg.log(), "\n") {
		if _, err := fmt.Sscanf(line, "SHMKEY %d %d", &key, &id); err == nil {
			t.Cleanup(func() {
				if got, err := unix.SysvShmGet(key, 0, 0); err == nil {
					unix.SysvShmCtl(got, unix.IPC_RMID, nil)
				}
			})
			return key, id
		}
	}
	t.Fatalf("sysv target printed no SHMKEY line:\n%s", tg.log())
	return 0, 0
}

// TestSysVShm: System V segments come back with their ids, keys, modes,
// owners, sizes and contents, attached read-write and SHM_RDONLY where they
// were, and a removed (IPC_RMID) segment is removed again (the target
// checks it all with IPC_STAT and checksums).
func TestSysVShm(t *testing.T) {
	requireCryo(t)
	tg := startTarget(t, "sysv")
	key, id := sysvKey(t, tg)
	img := filepath.Join(tg.dir, "img")
	mustDump(t, tg.pid, img)
	tg.expectKilled()
	if got, err := unix.SysvShmGet(key, 0, 0); err == nil {
		t.Fatalf("segment key %#x still there (id %d) after the dump killed its only user", key, got)
	}
	restoreAndVerify(t, tg, img)
	_ = id
	checkTargetLog(t, tg)
}

// TestSysVShmIdTaken: a restore whose segment id is taken fails before
// anything runs, naming the segment.
func TestSysVShmIdTaken(t *testing.T) {
	requireCryo(t)
	tg := startTarget(t, "sysv")
	key, id := sysvKey(t, tg)
	img := filepath.Join(tg.dir, "img")
	mustDump(t, tg.pid, img)
	tg.expectKilled()
	// Take the id with another segment.
	if err := os.WriteFile("/proc/sys/kernel/shm_next_id", []byte(fmt.Sprint(id)), 0); err != nil {
		t.Fatal(err)
	}
	other, err := unix.SysvShmGet(unix.IPC_PRIVATE, 4096, unix.IPC_CREAT|0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.SysvShmCtl(other, unix.IPC_RMID, nil)
	if other != id {
		t.Fatalf("could not take id %d (got %d)", id, other)
	}
	r := runCryo(t, restoreTimeout, restoreArgs(img)...)
	if r.code == 0 || !strings.Contains(r.output, fmt.Sprintf("key %#x, id %d", key, id)) {
		t.Fatalf("restore with the segment id taken: want a refusal naming it, got %v", r)
	}
	if runsTarget(tg.pid, tg.name) {
		t.Fatalf("pid %d runs after a refused restore", tg.pid)
	}
}

// TestSysVShmSharedRefused: a segment that a process outside the tree also
// attaches is refused at dump, naming it, and the process goes on.
func TestSysVShmSharedRefused(t *testing.T) {
	requireCryo(t)
	tg := startTarget(t, "sysv", "shared")
	key, id := sysvKey(t, tg)
	mem, err := unix.SysvShmAttach(id, 0, unix.SHM_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	r := dump(t, tg.pid, filepath.Join(tg.dir, "img"))
	unix.SysvShmDetach(mem)
	expectSysVRefusal(t, tg, r, fmt.Sprintf("System V shared memory segment (key %#x, id %d)", key, id))
}

// TestSysVSemMsgRefused: semaphores and message queues are not dumped yet:
// a tree that used one (a SEM_UNDO semop, a msgsnd) is refused, naming the
// object, and goes on with its semaphore value and its message intact.
func TestSysVSemMsgRefused(t *testing.T) {
	requireCryo(t)
	for _, tc := range []struct{ mode, line, what string }{
		{"sem", "SEMID %d", "System V semaphore set (key 0x0, id %d)"},
		{"msg", "MSQID %d", "System V message queue (key 0x0, id %d, 1 messages)"},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			tg := startTarget(t, "sysv", tc.mode)
			sysvKey(t, tg)
			id := -1
			for _, line := range strings.Split(tg.log(), "\n") {
				fmt.Sscanf(line, tc.line, &id)
			}
			r := dump(t, tg.pid, filepath.Join(tg.dir, "img"))
			expectSysVRefusal(t, tg, r, fmt.Sprintf(tc.what, id))
		})
	}
}

// expectSysVRefusal: the dump failed naming what, left no image, and the
// target goes on to pass its checks.
func expectSysVRefusal(t *testing.T, tg *target, r *cryoResult, what string) {
	t.Helper()
	img := filepath.Join(tg.dir, "img")
	if r.timedOut || r.code == 0 || !strings.Contains(r.output, what) {
		t.Fatalf("dump: want a refusal naming %q, got %v\n%s", what, r, lastLines(r.output, 5))
	}
	if _, err := os.Stat(filepath.Join(img, "inventory.img")); err == nil {
		t.Errorf("a failed dump left %s/inventory.img", img)
	}
	tg.expectUnharmed("after the refused dump")
}
