package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/feature"
	"github.com/cryo-project/cryo/internal/image/imagetest"
	"github.com/cryo-project/cryo/internal/kabi"
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

// sysvObject returns the key and id of the object the sysv target named
// on its "WHAT key id" line (SEMKEY, MSGKEY), and removes the object when
// the test ends, whatever happened to the target.
func sysvObject(t *testing.T, tg *target, what string) (key, id int) {
	t.Helper()
	for _, line := range strings.Split(tg.log(), "\n") {
		if _, err := fmt.Sscanf(line, what+" %d %d", &key, &id); err == nil {
			t.Cleanup(func() {
				switch what {
				case "SEMKEY":
					if got, err := kabi.SemGet(int32(key), 0, 0); err == nil {
						kabi.SemRemove(got)
					}
				case "MSGKEY":
					if got, err := kabi.MsgGet(int32(key), 0); key != 0 && err == nil {
						kabi.MsgRemove(got)
					}
				}
			})
			return key, id
		}
	}
	t.Fatalf("sysv target printed no %s line:\n%s", what, tg.log())
	return 0, 0
}

// sysvLine is the line of /proc/sysvipc/FILE for object id, without the
// columns of times (which a restore cannot set: see package sysvipc), as
// "column=value" fields; "" if there is none.
func sysvLine(t *testing.T, file string, id int) string {
	t.Helper()
	b, err := os.ReadFile("/proc/sysvipc/" + file)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	cols := strings.Fields(lines[0])
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) != len(cols) || f[1] != fmt.Sprint(id) {
			continue
		}
		var out []string
		for i, c := range cols {
			if !strings.HasSuffix(c, "time") {
				out = append(out, c+"="+f[i])
			}
		}
		return strings.Join(out, " ")
	}
	return ""
}

// TestSysVSemMsg: a semaphore set (values set, a child of the tree blocked
// in semop on it) and a message queue (messages of several types, a child
// blocked in msgrcv) come back with the same ids, keys, owners, modes,
// values, last pids and messages in order, dumped twice; /proc/sysvipc
// shows them as before the dump, and the dump removed them. The target
// checks it all with IPC_STAT, GETALL, GETPID and msgrcv, then wakes both
// waiters: a post after restore ends the semop, a message the msgrcv.
func TestSysVSemMsg(t *testing.T) {
	requireCryo(t)
	if err := feature.MsgCopy.Check(); err != nil {
		t.Skipf("msgrcv(MSG_COPY): %v", err)
	}
	tg := startTarget(t, "sysv", "semmsg")
	sysvKey(t, tg)
	semKey, semID := sysvObject(t, tg, "SEMKEY")
	msgKey, msgID := sysvObject(t, tg, "MSGKEY")
	_, waitID := sysvObject(t, tg, "MSGWAIT")
	sem, msg, wait := sysvLine(t, "sem", semID), sysvLine(t, "msg", msgID), sysvLine(t, "msg", waitID)
	if sem == "" || msg == "" || wait == "" {
		t.Fatalf("no /proc/sysvipc line for set %d, queue %d or queue %d", semID, msgID, waitID)
	}
	same := func(when string) {
		t.Helper()
		for _, o := range []struct {
			file string
			id   int
			want string
		}{{"sem", semID, sem}, {"msg", msgID, msg}, {"msg", waitID, wait}} {
			if got := sysvLine(t, o.file, o.id); got != o.want {
				t.Errorf("%s: /proc/sysvipc/%s:\n got %s\nwant %s", when, o.file, got, o.want)
			}
		}
	}
	img1 := filepath.Join(tg.dir, "img1")
	mustDump(t, tg.pid, img1)
	tg.expectKilled()
	reapOrphans(t)
	if _, err := kabi.SemGet(int32(semKey), 0, 0); err == nil {
		t.Errorf("semaphore set key %#x still there after the dump killed its only user", semKey)
	}
	if _, err := kabi.MsgGet(int32(msgKey), 0); err == nil {
		t.Errorf("message queue key %#x still there after the dump killed its only user", msgKey)
	}
	critSemMsg(t, img1, semID, msgID, waitID)
	restoreDetached(t, tg, img1)
	same("after the first restore")
	img2 := filepath.Join(tg.dir, "img2")
	mustDump(t, tg.pid, img2)
	if _, err := waitReaped(tg.pid, exitTimeout); err != nil {
		t.Fatalf("restored root after its dump: %v", err)
	}
	reapOrphans(t)
	restoreAndVerifyThen(t, tg, img2, func() { same("after the second restore") })
}

// critSemMsg: CRIU's crit reads the set's values and the queues'
// messages (types and sizes) from the image, as the target made them.
func critSemMsg(t *testing.T, img string, semID, msgID, waitID int) {
	t.Helper()
	crit := imagetest.Crit(t)
	var sem, msg struct {
		Entries []struct {
			Desc  struct{ ID int }
			Nsems int
			Qnum  int
			Extra []json.RawMessage
		}
	}
	for _, f := range []struct {
		name string
		v    any
	}{{"ipcns-sem-1.img", &sem}, {"ipcns-msg-1.img", &msg}} {
		out, err := exec.Command(crit, "decode", "-i", filepath.Join(img, f.name)).Output()
		if err == nil {
			err = json.Unmarshal(out, f.v)
		}
		if err != nil {
			t.Fatalf("crit decode -i %s: %v\n%s", f.name, err, lastLines(string(out), 10))
		}
	}
	if len(sem.Entries) != 1 || sem.Entries[0].Desc.ID != semID || sem.Entries[0].Nsems != 3 ||
		fmt.Sprint(sem.Entries[0].Extra) != fmt.Sprint([]json.RawMessage{[]byte("5"), []byte("0"), []byte("2")}) {
		t.Errorf("crit: ipcns-sem-1.img holds %+v, want set %d of values 5 0 2", sem.Entries, semID)
	}
	var got []string
	qnum, waitq := -1, -1
	for _, e := range msg.Entries {
		switch e.Desc.ID {
		case msgID:
			qnum = e.Qnum
			for i := 0; i+1 < len(e.Extra); i += 2 {
				got = append(got, string(e.Extra[i]))
			}
		case waitID:
			waitq = e.Qnum
		}
	}
	want := `[{"mtype":3,"msize":5} {"mtype":1,"msize":300} {"mtype":7,"msize":0} {"mtype":3,"msize":5}]`
	if len(msg.Entries) != 2 || qnum != 4 || waitq != 0 || strings.ReplaceAll(fmt.Sprint(got), " ", "") != strings.ReplaceAll(want, " ", "") {
		t.Errorf("crit: ipcns-msg-1.img holds queues %+v, messages %v, want queue %d with %s and queue %d empty", msg.Entries, got, msgID, want, waitID)
	}
}

// TestSysVSemMsgIdTaken: a restore whose semaphore set id is taken fails
// before anything runs, naming the set, and so does one whose queue key is.
func TestSysVSemMsgIdTaken(t *testing.T) {
	requireCryo(t)
	if err := feature.MsgCopy.Check(); err != nil {
		t.Skipf("msgrcv(MSG_COPY): %v", err)
	}
	tg := startTarget(t, "sysv", "semmsg")
	sysvKey(t, tg)
	semKey, semID := sysvObject(t, tg, "SEMKEY")
	msgKey, msgID := sysvObject(t, tg, "MSGKEY")
	img := filepath.Join(tg.dir, "img")
	mustDump(t, tg.pid, img)
	tg.expectKilled()
	reapOrphans(t)
	if err := os.WriteFile("/proc/sys/kernel/sem_next_id", []byte(fmt.Sprint(semID)), 0); err != nil {
		t.Fatal(err)
	}
	other, err := kabi.SemGet(unix.IPC_PRIVATE, 1, unix.IPC_CREAT|0o600)
	if err != nil {
		t.Fatal(err)
	}
	if other != semID {
		kabi.SemRemove(other)
		t.Fatalf("could not take id %d (got %d)", semID, other)
	}
	r := runCryo(t, restoreTimeout, restoreArgs(img)...)
	kabi.SemRemove(other)
	if r.code == 0 || !strings.Contains(r.output, fmt.Sprintf("System V semaphore set (key %#x, id %d): the id is taken", semKey, semID)) {
		t.Fatalf("restore with the set's id taken: want a refusal naming it, got %v", r)
	}
	q, err := kabi.MsgGet(int32(msgKey), unix.IPC_CREAT|unix.IPC_EXCL|0o600)
	if err != nil {
		t.Fatal(err)
	}
	r = runCryo(t, restoreTimeout, restoreArgs(img)...)
	kabi.MsgRemove(q)
	if r.code == 0 || !strings.Contains(r.output, fmt.Sprintf("System V message queue (key %#x, id %d): the key is taken", msgKey, msgID)) {
		t.Fatalf("restore with the queue's key taken: want a refusal naming it, got %v", r)
	}
	if runsTarget(tg.pid, tg.name) {
		t.Fatalf("pid %d runs after a refused restore", tg.pid)
	}
	if _, err := kabi.SemGet(int32(semKey), 0, 0); err == nil {
		t.Errorf("a refused restore left semaphore set key %#x", semKey)
	}
}

// TestSysVSemMsgRefused: what cannot come back exactly is refused at dump,
// naming it, and the tree goes on with its objects intact: a semaphore
// set or a queue that a live process outside the tree used last (the
// test itself: a restored copy would not be shared with it), a set the
// test waits on, and a
// process of the tree with a semaphore undo list (SEM_UNDO), whose
// adjustments the kernel does not show.
func TestSysVSemMsgRefused(t *testing.T) {
	requireCryo(t)
	for _, tc := range []struct {
		mode, what string
		outside    func(t *testing.T, id int)
	}{
		{"semshared", "System V semaphore set (key %#x, id %d): pid %d, not of the tree", func(t *testing.T, id int) {
			// +1 then -1 on semaphore 2, in one semop: the value stays,
			// the last pid is the test's.
			if err := kabi.SemOp(id, []kabi.Sembuf{{Num: 2, Op: 1}, {Num: 2, Op: -1}}); err != nil {
				t.Fatal(err)
			}
		}},
		{"msgshared", "System V message queue (key %#x, id %d): pid %d, not of the tree", func(t *testing.T, id int) {
			buf := []byte{42, 0, 0, 0, 0, 0, 0, 0, 'x'}
			if err := kabi.MsgSnd(id, buf, unix.IPC_NOWAIT); err != nil {
				t.Fatal(err)
			}
			if _, err := kabi.MsgRcv(id, buf, 42, unix.IPC_NOWAIT); err != nil {
				t.Fatal(err)
			}
		}},
		{"semwait", "System V semaphore set (key %#x, id %d): semaphore 0 is waited on for it to be zero by 1 task(s) outside the tree", func(t *testing.T, id int) {
			// Wait for semaphore 0 (5) to be zero, for 3 s: the value
			// and the last pid stay, the wait counts in GETZCNT.
			done := make(chan error, 1)
			go func() {
				done <- kabi.SemTimedOp(id, []kabi.Sembuf{{Num: 0, Op: 0}}, &unix.Timespec{Sec: 3})
			}()
			t.Cleanup(func() { <-done })
			for n := 0; n < 1000; n++ {
				if w, _ := kabi.SemCtl(id, 0, kabi.SemGETZCNT, 0); w == 1 {
					return
				}
				time.Sleep(2 * time.Millisecond)
			}
			t.Fatal("the test's semtimedop does not wait")
		}},
		{"semundo", "has a System V semaphore undo list", nil},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			if err := feature.MsgCopy.Check(); err != nil {
				t.Skipf("msgrcv(MSG_COPY): %v", err)
			}
			tg := startTarget(t, "sysv", tc.mode)
			sysvKey(t, tg)
			semKey, semID := sysvObject(t, tg, "SEMKEY")
			msgKey, msgID := sysvObject(t, tg, "MSGKEY")
			what := tc.what
			switch tc.mode {
			case "semshared":
				tc.outside(t, semID)
				what = fmt.Sprintf(what, semKey, semID, os.Getpid())
			case "semwait":
				tc.outside(t, semID)
				what = fmt.Sprintf(what, semKey, semID)
			case "msgshared":
				tc.outside(t, msgID)
				what = fmt.Sprintf(what, msgKey, msgID, os.Getpid())
			}
			r := dump(t, tg.pid, filepath.Join(tg.dir, "img"))
			expectSysVRefusal(t, tg, r, what)
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
