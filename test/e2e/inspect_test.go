package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The tests of `cryo deleted` and `cryo maps` run test/targets/inspect_holder,
// which holds deleted files and shared memory and prints what it holds as
// fstat saw it, then compare cryo's report with that, byte for byte. Each
// runs as root and as an unprivileged user (inspectUser), for whom mapped-only
// files cannot be measured.

const (
	inspectUser    = "cryoinspect"
	inspectTimeout = 30 * time.Second
)

// JSON of `cryo deleted --json`, with the field names the issue promises.
type jsonDeleted struct {
	Files       []jsonFile    `json:"files"`
	Memory      []jsonFile    `json:"memory"`
	Filesystems []jsonFSTotal `json:"filesystems"`
	MemoryTotal jsonFSTotal   `json:"memory_total"`
	NotMeasured struct {
		Files      int    `json:"files"`
		Mappings   int    `json:"mappings"`
		Capability string `json:"capability"`
	} `json:"not_measured"`
	Processes struct {
		Scanned      int `json:"scanned"`
		NotPermitted int `json:"not_permitted"`
	} `json:"processes"`
}

type jsonFile struct {
	Dev        string `json:"dev"`
	Inode      uint64 `json:"inode"`
	Path       string `json:"path"`
	Kind       string `json:"kind"`
	Filesystem struct {
		Dev        string `json:"dev"`
		MountPoint string `json:"mount_point"`
		FSType     string `json:"fs_type"`
	} `json:"filesystem"`
	Measured  bool  `json:"measured"`
	Size      int64 `json:"size"`
	Allocated int64 `json:"allocated"`
	Holders   []struct {
		PID         int    `json:"pid"`
		How         string `json:"how"`
		Fds         []int  `json:"fds"`
		Mappings    int    `json:"mappings"`
		MappedBytes uint64 `json:"mapped_bytes"`
	} `json:"holders"`
}

type jsonFSTotal struct {
	Filesystem struct {
		Dev string `json:"dev"`
	} `json:"filesystem"`
	Files       int   `json:"files"`
	Allocated   int64 `json:"allocated"`
	NotMeasured int   `json:"not_measured"`
}

type jsonMaps struct {
	PID      int `json:"pid"`
	Mappings []struct {
		Start       string   `json:"start"`
		Size        uint64   `json:"size"`
		Perms       string   `json:"perms"`
		Backing     string   `json:"backing"`
		Path        string   `json:"path"`
		Deleted     bool     `json:"deleted"`
		Inode       uint64   `json:"inode"`
		Rss         uint64   `json:"rss"`
		Pss         uint64   `json:"pss"`
		Swap        uint64   `json:"swap"`
		VmFlagWords []string `json:"vm_flag_words"`
		SharedWith  []int    `json:"shared_with"`
	} `json:"mappings"`
}

// heldFile is a FILE line of inspect_holder: what fstat said before unlink.
type heldFile struct {
	name, dev   string
	ino         uint64
	size, alloc int64
	fd          int
}

type holder struct {
	pid, child int
	dir        string
	files      map[string]heldFile
}

// ids is who runs a process: nil for root.
type ids struct{ uid, gid int }

func (u *ids) wrap(argv []string) []string {
	if u == nil {
		return argv
	}
	return append([]string{"setpriv", "--reuid=" + strconv.Itoa(u.uid), "--regid=" + strconv.Itoa(u.gid), "--clear-groups", "--"}, argv...)
}

// unprivileged creates inspectUser once (idempotently) and returns its ids.
func unprivileged(t *testing.T) *ids {
	t.Helper()
	if _, err := user.Lookup(inspectUser); err != nil {
		addSystemUser(t, inspectUser)
	}
	u, err := user.Lookup(inspectUser)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &ids{uid, gid}
}

// startHolder runs inspect_holder as u in a fresh directory u owns, waits
// for READY (bounded) and registers the killing of it and of its child,
// by pid.
func startHolder(t *testing.T, u *ids, args ...string) *holder {
	t.Helper()
	dir, err := os.MkdirTemp("", "cryo-inspect-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if u != nil {
		if err := os.Chown(dir, u.uid, u.gid); err != nil {
			t.Fatal(err)
		}
	}
	logPath := filepath.Join(dir, "holder.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	argv := u.wrap(append([]string{filepath.Join(repo, "bin", "targets", "inspect_holder"), filepath.Join(dir, "trigger"), dir}, args...))
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	h := &holder{pid: cmd.Process.Pid, dir: dir, files: map[string]heldFile{}}
	t.Cleanup(func() {
		alive := true
		select {
		case <-done:
			alive = false
		default:
		}
		if h.child > 0 && alive {
			// Killed first, while the holder lives and has not reaped
			// it, so that its pid cannot have been reused.
			_ = syscall.Kill(h.child, syscall.SIGKILL)
		}
		if alive {
			_ = cmd.Process.Kill()
			select {
			case <-done:
			case <-time.After(exitTimeout):
				t.Errorf("inspect_holder pid %d survived SIGKILL", h.pid)
			}
		}
		if h.child > 0 {
			// Orphaned, the child is re-parented to this test (a
			// subreaper), which reaps it; ECHILD means the holder did.
			if _, err := waitReaped(h.child, exitTimeout); err != nil && !errors.Is(err, syscall.ECHILD) {
				t.Errorf("child %d of inspect_holder: %v", h.child, err)
			}
		}
		if t.Failed() {
			t.Logf("--- inspect_holder log ---\n%s", readLog(logPath))
		}
	})
	for deadline := time.Now().Add(readyTimeout); ; {
		b, _ := os.ReadFile(logPath)
		log := string(b)
		if strings.Contains(log, "READY\n") {
			for _, line := range strings.Split(log, "\n") {
				f := strings.Fields(line)
				switch {
				case len(f) == 7 && f[0] == "FILE":
					var hf heldFile
					hf.name, hf.dev = f[1], f[2]
					hf.ino, _ = strconv.ParseUint(f[3], 10, 64)
					hf.size, _ = strconv.ParseInt(f[4], 10, 64)
					hf.alloc, _ = strconv.ParseInt(f[5], 10, 64)
					hf.alloc *= 512
					hf.fd, _ = strconv.Atoi(f[6])
					h.files[hf.name] = hf
				case len(f) == 2 && f[0] == "CHILD":
					h.child, _ = strconv.Atoi(f[1])
				}
			}
			return h
		}
		select {
		case <-done:
			t.Fatalf("inspect_holder exited before READY:\n%s", log)
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("inspect_holder: no READY within %v:\n%s", readyTimeout, log)
		}
	}
}

// cryoAs runs bin/cryo as u with a bounded wait and returns stdout, stderr
// and the exit status.
func cryoAs(t *testing.T, u *ids, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), inspectTimeout)
	defer cancel()
	argv := u.wrap(append([]string{cryoBin}, args...))
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("cryo %v: no answer within %v", args, inspectTimeout)
	}
	code := 0
	if err != nil {
		code = -1
		if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
			code = ee.ExitCode()
		}
	}
	return out.String(), errb.String(), code
}

func deletedJSON(t *testing.T, u *ids, args ...string) *jsonDeleted {
	t.Helper()
	out, errs, code := cryoAs(t, u, append([]string{"deleted", "--json"}, args...)...)
	if code != 0 {
		t.Fatalf("cryo deleted %v: exit %d\n%s%s", args, code, out, errs)
	}
	var r jsonDeleted
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("cryo deleted --json: %v\n%s", err, out)
	}
	return &r
}

func findFile(files []jsonFile, ino uint64) *jsonFile {
	for i := range files {
		if files[i].Inode == ino {
			return &files[i]
		}
	}
	return nil
}

// checkFile compares a reported file with what the holder measured.
func checkFile(t *testing.T, r *jsonDeleted, mem bool, want heldFile, measured bool, holders map[int]string) {
	t.Helper()
	list := r.Files
	if mem {
		list = r.Memory
	}
	f := findFile(list, want.ino)
	if f == nil {
		t.Errorf("%s (inode %d) not reported (memory=%v)", want.name, want.ino, mem)
		return
	}
	if f.Dev != want.dev || f.Measured != measured {
		t.Errorf("%s: dev %s measured %v, want %s %v", want.name, f.Dev, f.Measured, want.dev, measured)
	}
	if measured && (f.Size != want.size || f.Allocated != want.alloc) {
		t.Errorf("%s: size %d allocated %d, want %d and %d", want.name, f.Size, f.Allocated, want.size, want.alloc)
	}
	if !measured && (f.Size != 0 || f.Allocated != 0) {
		t.Errorf("%s: not measured but size %d allocated %d", want.name, f.Size, f.Allocated)
	}
	got := map[int]string{}
	for _, h := range f.Holders {
		got[h.PID] = h.How
		if want.fd >= 0 && h.How != "mapped" && !slices.Equal(h.Fds, []int{want.fd}) {
			t.Errorf("%s: pid %d holds fds %v, want [%d]", want.name, h.PID, h.Fds, want.fd)
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(holders) {
		t.Errorf("%s: holders %v, want %v", want.name, got, holders)
	}
}

func fsTotal(r *jsonDeleted, dev string) *jsonFSTotal {
	for i := range r.Filesystems {
		if r.Filesystems[i].Filesystem.Dev == dev {
			return &r.Filesystems[i]
		}
	}
	return nil
}

// TestInspectDeletedFiles: a process maps a 7 MiB file and unlinks it
// (only the mapping holds it), keeps a deleted 3 MiB file open, and maps and
// keeps open a deleted 1 MiB one.
func TestInspectDeletedFiles(t *testing.T) {
	requireCryo(t)
	for _, c := range []struct {
		name string
		u    *ids
	}{{"root", nil}, {"unprivileged", unprivileged(t)}} {
		t.Run(c.name, func(t *testing.T) {
			h := startHolder(t, c.u, "map=7", "open=3", "both=1")
			mapped, open, both := h.files["mapped.bin"], h.files["open.bin"], h.files["both.bin"]
			if mapped.size != 7<<20 || open.size != 3<<20 || both.size != 1<<20 {
				t.Fatalf("holder made %+v", h.files)
			}
			privileged := c.u == nil
			r := deletedJSON(t, c.u, "--pid", strconv.Itoa(h.pid))
			if len(r.Files) != 3 || len(r.Memory) != 0 || r.Processes.Scanned != 1 {
				t.Errorf("got %d files, %d memory objects from %d processes, want 3, 0, 1", len(r.Files), len(r.Memory), r.Processes.Scanned)
			}
			checkFile(t, r, false, mapped, privileged, map[int]string{h.pid: "mapped"})
			checkFile(t, r, false, open, true, map[int]string{h.pid: "open"})
			checkFile(t, r, false, both, true, map[int]string{h.pid: "both"})
			if f := findFile(r.Files, mapped.ino); f != nil && (len(f.Holders) != 1 || f.Holders[0].Mappings != 2 || f.Holders[0].MappedBytes != 7<<20) {
				t.Errorf("mapped.bin holders %+v, want 2 mappings of 7 MiB in all", f.Holders)
			}
			wantAlloc, wantUnmeasured := open.alloc+both.alloc, 0
			if privileged {
				wantAlloc += mapped.alloc
			} else {
				wantUnmeasured = 1
			}
			ft := fsTotal(r, mapped.dev)
			if ft == nil || ft.Files != 3 || ft.Allocated != wantAlloc || ft.NotMeasured != wantUnmeasured {
				t.Errorf("total of %s = %+v, want 3 files, %d bytes, %d not measured", mapped.dev, ft, wantAlloc, wantUnmeasured)
			}
			if r.NotMeasured.Files != wantUnmeasured {
				t.Errorf("not measured: %+v, want %d file", r.NotMeasured, wantUnmeasured)
			}
			if !privileged && (r.NotMeasured.Mappings != 2 || !strings.Contains(r.NotMeasured.Capability, "CAP_CHECKPOINT_RESTORE")) {
				t.Errorf("not measured: %+v, want 2 mappings and the capability named", r.NotMeasured)
			}

			// The text names what it could not measure and the capability.
			out, _, code := cryoAs(t, c.u, "deleted", "--pid", strconv.Itoa(h.pid))
			if code != 0 || !strings.Contains(out, filepath.Join(h.dir, "open.bin")) || !strings.Contains(out, "compare with df") {
				t.Errorf("cryo deleted text (exit %d):\n%s", code, out)
			}
			if !privileged && !strings.Contains(out, "Not measured: 1 file (2 mappings)") {
				t.Errorf("text does not say what it could not measure:\n%s", out)
			}

			// Without --pid: every process the caller may read, ours among them.
			all := deletedJSON(t, c.u)
			checkFile(t, all, false, open, true, map[int]string{h.pid: "open"})
			checkFile(t, all, false, mapped, privileged, map[int]string{h.pid: "mapped"})
			if !privileged && all.Processes.NotPermitted == 0 {
				t.Errorf("unprivileged scan skipped no process of other users: %+v", all.Processes)
			}
			expectAliveUnstopped(t, h.pid, "after cryo deleted")
		})
	}
}

// TestInspectSharedMemory: a process fills 4 MiB of shared anonymous memory
// and a 2 MiB memfd, then forks a child that touches every page of both.
func TestInspectSharedMemory(t *testing.T) {
	requireCryo(t)
	for _, c := range []struct {
		name string
		u    *ids
	}{{"root", nil}, {"unprivileged", unprivileged(t)}} {
		t.Run(c.name, func(t *testing.T) {
			h := startHolder(t, c.u, "memfd=2", "share=4")
			if h.child == 0 {
				t.Fatal("holder reported no child")
			}
			memfd := h.files["memfd"]
			out, errs, code := cryoAs(t, c.u, "maps", strconv.Itoa(h.pid), "--json")
			if code != 0 {
				t.Fatalf("cryo maps: exit %d\n%s%s", code, out, errs)
			}
			var m jsonMaps
			if err := json.Unmarshal([]byte(out), &m); err != nil {
				t.Fatal(err)
			}
			var sawAnon, sawMemfd bool
			for _, mp := range m.Mappings {
				switch mp.Backing {
				case "shared-anon":
					sawAnon = true
					// Parent and child map every page: each is charged half.
					if mp.Size != 4<<20 || mp.Rss != 4<<20 || mp.Pss != 2<<20 || mp.Perms != "rw-s" || mp.Path != "/dev/zero" {
						t.Errorf("shared anon mapping: %+v, want 4 MiB, RSS 4 MiB, PSS 2 MiB", mp)
					}
					if !slices.Equal(mp.SharedWith, []int{h.child}) {
						t.Errorf("shared anon shared with %v, want [%d]", mp.SharedWith, h.child)
					}
					if !slices.Contains(mp.VmFlagWords, "MAP_SHARED") {
						t.Errorf("VmFlags %v lack MAP_SHARED", mp.VmFlagWords)
					}
				case "memfd":
					sawMemfd = true
					if mp.Size != 2<<20 || mp.Inode != memfd.ino || mp.Path != "/memfd:inspect-memfd" || !mp.Deleted {
						t.Errorf("memfd mapping: %+v", mp)
					}
					if !slices.Equal(mp.SharedWith, []int{h.child}) {
						t.Errorf("memfd shared with %v, want [%d]", mp.SharedWith, h.child)
					}
				}
			}
			if !sawAnon || !sawMemfd {
				t.Errorf("maps lacks the shared anon (%v) or the memfd (%v) mapping:\n%s", sawAnon, sawMemfd, out)
			}
			text, _, code := cryoAs(t, c.u, "maps", strconv.Itoa(h.pid))
			if code != 0 || !strings.Contains(text, "START-END") || !strings.Contains(text, "shared-anon") {
				t.Errorf("cryo maps text (exit %d):\n%s", code, text)
			}

			privileged := c.u == nil
			r := deletedJSON(t, c.u, "--pid", strconv.Itoa(h.pid), "--pid", strconv.Itoa(h.child))
			if len(r.Files) != 0 || len(r.Memory) != 2 {
				t.Fatalf("got %d files and %d memory objects, want 0 and 2: %+v", len(r.Files), len(r.Memory), r)
			}
			both := map[int]string{h.pid: "both", h.child: "both"}
			checkFile(t, r, true, memfd, true, both)
			var anon *jsonFile
			for i := range r.Memory {
				if r.Memory[i].Kind == "shared-anon" {
					anon = &r.Memory[i]
				}
			}
			if anon == nil {
				t.Fatalf("no shared-anon object in %+v", r.Memory)
			}
			if anon.Measured != privileged || (privileged && (anon.Size != 4<<20 || anon.Allocated != 4<<20)) {
				t.Errorf("shared anon: measured %v size %d allocated %d, want %v, 4 MiB, 4 MiB", anon.Measured, anon.Size, anon.Allocated, privileged)
			}
			if len(anon.Holders) != 2 || anon.Holders[0].How != "mapped" || anon.Holders[1].How != "mapped" {
				t.Errorf("shared anon holders %+v, want parent and child, mapped", anon.Holders)
			}
			wantMem := memfd.alloc
			if privileged {
				wantMem += 4 << 20
			}
			if r.MemoryTotal.Allocated != wantMem || r.MemoryTotal.Files != 2 {
				t.Errorf("memory total %+v, want 2 objects, %d bytes", r.MemoryTotal, wantMem)
			}
		})
	}
}

// TestInspectNothingDeleted: nothing found is not an error, and a pid that
// does not exist is.
func TestInspectNothingDeleted(t *testing.T) {
	requireCryo(t)
	h := startHolder(t, nil)
	out, _, code := cryoAs(t, nil, "deleted", "--pid", strconv.Itoa(h.pid))
	if code != 0 || !strings.Contains(out, "0 files on disk, 0 objects in memory") {
		t.Errorf("exit %d, output:\n%s", code, out)
	}
	r := deletedJSON(t, nil, "--pid", strconv.Itoa(h.pid))
	if r.Files == nil || len(r.Files) != 0 || len(r.Memory) != 0 {
		t.Errorf("files %v memory %v, want two empty lists", r.Files, r.Memory)
	}
	for _, args := range [][]string{{"deleted", "--pid", "4194305"}, {"maps", "4194305"}} {
		if out, errs, code := cryoAs(t, nil, args...); code != 1 || !strings.Contains(errs, "no such process") {
			t.Errorf("cryo %v: exit %d, want 1 and 'no such process'\n%s%s", args, code, out, errs)
		}
	}
}
