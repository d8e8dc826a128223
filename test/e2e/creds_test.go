package e2e

import (
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/creds"
	criucore "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/mm"

	"github.com/cryo-project/cryo/internal/image"
)

// credKeys are the lines of /proc/PID/task/TID/status that hold a thread's
// credentials.
var credKeys = []string{"Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp"}

// statusCreds picks the credential lines out of a status file's text.
func statusCreds(text string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(text, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && slices.Contains(credKeys, k) {
			m[k] = strings.Join(strings.Fields(v), " ")
		}
	}
	return m
}

// threadCreds reads the credential lines of every thread of pid, by tid.
func threadCreds(pid int) (map[string]map[string]string, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return nil, err
	}
	out := map[string]map[string]string{}
	for _, e := range ents {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, e.Name()))
		if err != nil {
			return nil, err
		}
		out[e.Name()] = statusCreds(string(b))
	}
	return out, nil
}

func diffCreds(before, after map[string]map[string]string) []string {
	var diffs []string
	tids := make([]string, 0, len(before))
	for tid := range before {
		tids = append(tids, tid)
	}
	sort.Strings(tids)
	for _, tid := range tids {
		a, ok := after[tid]
		if !ok {
			diffs = append(diffs, "thread "+tid+" is gone")
			continue
		}
		for _, k := range credKeys {
			if before[tid][k] != a[k] {
				diffs = append(diffs, fmt.Sprintf("thread %s %s: %q, was %q", tid, k, a[k], before[tid][k]))
			}
		}
	}
	if len(after) != len(before) {
		diffs = append(diffs, fmt.Sprintf("%d threads, were %d", len(after), len(before)))
	}
	return diffs
}

func readStatusFile(t *testing.T, p string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	m := statusCreds(string(b))
	if m["Uid"] == "" {
		t.Fatalf("%s holds no Uid line:\n%s", p, b)
	}
	return m
}

// TestCredsRoot: a root restore gives every thread exactly the credentials
// it had: supplementary groups whatever cryo's own are (both ways), fsuid
// and fsgid, a thread whose fsuid differs from its leader's, securebits, a
// reduced bounding set and an ambient capability. The harness compares
// every thread's status lines before and after, and what a program the
// restored process execs holds; the target checks the same from inside.
func TestCredsRoot(t *testing.T) {
	requireCryo(t)
	root := func(groups ...uint32) *syscall.Credential {
		return &syscall.Credential{Uid: 0, Gid: 0, Groups: groups}
	}
	for _, tc := range []struct {
		name           string
		target, cryo   *syscall.Credential
		args           []string
		wantNonDefault string // a status line the setup must have produced
	}{
		{"groups", root(4, 27, 100), root(), nil, "Groups=4 27 100"},
		{"no-groups", root(), root(4, 27), nil, "Groups="},
		{"fs-ids-secbits-bounding-ambient", root(), root(),
			[]string{"fsuid=1001", "fsgid=1002", "thread-fsuid=1003", "secbits=0x14", "bnd-drop=16", "ambient=10"},
			"Uid=0 0 0 1001"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tg := startTargetAs(t, tc.target, "creds", tc.args...)
			tg.waitReady()
			before, err := threadCreds(tg.pid)
			if err != nil {
				t.Fatal(err)
			}
			k, v, _ := strings.Cut(tc.wantNonDefault, "=")
			if before[strconv.Itoa(tg.pid)][k] != v {
				t.Fatalf("setup: %s is %q, want %q", k, before[strconv.Itoa(tg.pid)][k], v)
			}
			img := filepath.Join(tg.dir, "img")
			mustDump(t, tg.pid, img)
			tg.expectKilled()
			w := armState(t, img, "pre-resume", tg.pid)
			cp := startCryoAs(t, tc.cryo, restoreArgs(img, "-d")...)
			expectSameState(t, img, w, cp.done)
			r := cp.wait(restoreTimeout)
			if r.code != 0 {
				t.Fatalf("restore: %v%s", r, readLog(img+".restore.log"))
			}
			t.Cleanup(func() { killRestored(t, tg.pid, tg.name) })
			after, err := threadCreds(tg.pid)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range diffCreds(before, after) {
				t.Error(d)
			}
			tg.fire()
			ws, err := waitReaped(tg.pid, exitTimeout)
			if err != nil {
				t.Fatal(err)
			}
			tg.expectPassed(ws.ExitStatus(), "restored")
			ready := readStatusFile(t, filepath.Join(tg.dir, "exec-ready.status"))
			verify := readStatusFile(t, filepath.Join(tg.dir, "exec-verify.status"))
			for _, k := range credKeys {
				if ready[k] != verify[k] {
					t.Errorf("a program the restored process starts: %s %q, before the dump %q", k, verify[k], ready[k])
				}
			}
		})
	}
}

// imageFile is one protobuf image file: its magics and its entries, each
// still encoded.
type imageFile struct {
	path    string
	header  []byte
	entries [][]byte
}

func readImageFile(t *testing.T, p string) *imageFile {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	f := &imageFile{path: p, header: b[:8]}
	for off := 8; off < len(b); {
		n := int(binary.LittleEndian.Uint32(b[off:]))
		f.entries = append(f.entries, b[off+4:off+4+n])
		off += 4 + n
	}
	return f
}

// edit decodes entry i into m, lets fn change it, and encodes it back;
// required fields left unset are written unset, as an attacker would.
func (f *imageFile) edit(t *testing.T, i int, m proto.Message, fn func()) {
	t.Helper()
	if err := proto.Unmarshal(f.entries[i], m); err != nil {
		t.Fatalf("%s entry %d: %v", f.path, i, err)
	}
	fn()
	b, err := proto.MarshalOptions{AllowPartial: true}.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	f.entries[i] = b
}

func (f *imageFile) write(t *testing.T) {
	t.Helper()
	b := append([]byte(nil), f.header...)
	for _, e := range f.entries {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(e)))
		b = append(b, e...)
	}
	if err := os.WriteFile(f.path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// editCore edits the core entry of tid in dir.
func editCore(t *testing.T, dir string, tid int, fn func(c *criucore.CoreEntry)) {
	t.Helper()
	f := readImageFile(t, filepath.Join(dir, fmt.Sprintf("core-%d.img", tid)))
	c := &criucore.CoreEntry{}
	f.edit(t, 0, c, func() { fn(c) })
	f.write(t)
}

func editCreds(t *testing.T, dir string, tid int, fn func(cr *creds.CredsEntry)) {
	t.Helper()
	editCore(t, dir, tid, func(c *criucore.CoreEntry) {
		if c.GetThreadCore().GetCreds() == nil {
			t.Fatalf("core-%d.img has no creds to edit", tid)
		}
		fn(c.ThreadCore.Creds)
	})
}

// editFileEntry edits the files.img entry whose path satisfies match.
func editFileEntry(t *testing.T, dir string, match func(string) bool, fn func(e *fdinfo.FileEntry)) {
	t.Helper()
	f := readImageFile(t, filepath.Join(dir, "files.img"))
	for i := range f.entries {
		e := &fdinfo.FileEntry{}
		if err := proto.Unmarshal(f.entries[i], e); err != nil {
			t.Fatal(err)
		}
		if e.GetReg() != nil && match(e.GetReg().GetName()) {
			f.edit(t, i, e, func() { fn(e) })
			f.write(t)
			return
		}
	}
	t.Fatalf("files.img: no regular file entry matches")
}

// addExeEntry adds a files.img entry for path and points mm's exe link at it.
func addExeEntry(t *testing.T, dir string, pid int, path string) {
	t.Helper()
	f := readImageFile(t, filepath.Join(dir, "files.img"))
	var maxID uint32
	var proto0 *fdinfo.FileEntry
	for _, raw := range f.entries {
		e := &fdinfo.FileEntry{}
		if err := proto.Unmarshal(raw, e); err != nil {
			t.Fatal(err)
		}
		maxID = max(maxID, e.GetId())
		if e.GetReg() != nil && proto0 == nil {
			proto0 = e
		}
	}
	ne := proto.Clone(proto0).(*fdinfo.FileEntry)
	ne.Id = proto.Uint32(maxID + 1)
	ne.Reg.Id = proto.Uint32(maxID + 1)
	ne.Reg.Name = proto.String(path)
	ne.Reg.Flags = proto.Uint32(uint32(os.O_RDONLY))
	ne.Reg.Size = nil
	b, err := proto.Marshal(ne)
	if err != nil {
		t.Fatal(err)
	}
	f.entries = append(f.entries, b)
	f.write(t)
	m := readImageFile(t, filepath.Join(dir, fmt.Sprintf("mm-%d.img", pid)))
	mme := &mm.MmEntry{}
	m.edit(t, 0, mme, func() { mme.ExeFileId = proto.Uint32(maxID + 1) })
	m.write(t)
}

func chownTree(t *testing.T, dir string, uid, gid int) {
	t.Helper()
	err := filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func parseHex(s string) uint64 {
	v, _ := strconv.ParseUint(s, 16, 64)
	return v
}

// holdsNoMore compares a thread's credential lines with what the original
// held: the same ids, no group and no capability it lacked, no_new_privs
// not cleared.
func holdsNoMore(now, was map[string]string) []string {
	var bad []string
	for _, k := range []string{"Uid", "Gid"} {
		if now[k] != was[k] {
			bad = append(bad, fmt.Sprintf("%s %q, was %q", k, now[k], was[k]))
		}
	}
	for _, g := range strings.Fields(now["Groups"]) {
		if !slices.Contains(strings.Fields(was["Groups"]), g) {
			bad = append(bad, fmt.Sprintf("group %s, which it had not (was %q)", g, was["Groups"]))
		}
	}
	for _, k := range []string{"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"} {
		if extra := parseHex(now[k]) &^ parseHex(was[k]); extra != 0 {
			bad = append(bad, fmt.Sprintf("%s %s holds %#x more than %s", k, now[k], extra, was[k]))
		}
	}
	if now["NoNewPrivs"] < was["NoNewPrivs"] {
		bad = append(bad, fmt.Sprintf("NoNewPrivs %s, was %s", now["NoNewPrivs"], was["NoNewPrivs"]))
	}
	return bad
}

// TestCredsEditedImage is the attack of docs/security.md: root dumps a
// process of an ordinary user and gives the image to that user, who edits
// every credential field of it in turn (and the whole creds entry, a whole
// core, the exe link, files the user may not open), rewrites the checksum
// sidecar, and restores with the setcap binary. Each variant must either be
// refused with an error naming what was edited, or come back holding
// nothing the original did not: no id, group or capability, neither in the
// restored threads nor in a program they exec. Each variant's outcome is
// pinned, so a refusal that turns into an acceptance fails too.
func TestCredsEditedImage(t *testing.T) {
	env := setupNonRoot(t)
	uid, gid := int(env.cred.Uid), int(env.cred.Gid)
	tg := env.startTarget(t, "creds")
	tids, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", tg.pid))
	if err != nil || len(tids) != 2 {
		t.Fatalf("creds target: threads %v, %v", tids, err)
	}
	leader := tg.pid
	second, _ := strconv.Atoi(tids[1].Name())
	if second == leader {
		second, _ = strconv.Atoi(tids[0].Name())
	}
	orig, err := threadCreds(tg.pid)
	if err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(t.TempDir(), "img")
	mustDump(t, tg.pid, base) // as root, as the attack starts
	tg.expectKilled()
	chownTree(t, base, uid, gid)
	origExec := readStatusFile(t, filepath.Join(tg.dir, "exec-ready.status"))

	const cr = unix.CAP_CHECKPOINT_RESTORE
	words := func(caps ...uint) []uint32 {
		var m uint64
		for _, c := range caps {
			m |= 1 << c
		}
		return []uint32{uint32(m), uint32(m >> 32)}
	}
	type variant struct {
		name string
		edit func(t *testing.T, dir string)
		// refuse is what the error must name; "" means the restore must
		// succeed (and then hold nothing more than the original).
		refuse string
		// same: nothing the target checks changed, so its own checks pass.
		same bool
	}
	var variants []variant
	idFields := []struct {
		name string
		set  func(c *creds.CredsEntry, v *uint32)
	}{
		{"uid", func(c *creds.CredsEntry, v *uint32) { c.Uid = v }},
		{"euid", func(c *creds.CredsEntry, v *uint32) { c.Euid = v }},
		{"suid", func(c *creds.CredsEntry, v *uint32) { c.Suid = v }},
		{"fsuid", func(c *creds.CredsEntry, v *uint32) { c.Fsuid = v }},
		{"gid", func(c *creds.CredsEntry, v *uint32) { c.Gid = v }},
		{"egid", func(c *creds.CredsEntry, v *uint32) { c.Egid = v }},
		{"sgid", func(c *creds.CredsEntry, v *uint32) { c.Sgid = v }},
		{"fsgid", func(c *creds.CredsEntry, v *uint32) { c.Fsgid = v }},
	}
	for _, f := range idFields {
		for _, tid := range []int{leader, second} {
			variants = append(variants,
				variant{fmt.Sprintf("%s-0-thread-%d", f.name, tid), func(t *testing.T, dir string) {
					editCreds(t, dir, tid, func(c *creds.CredsEntry) { f.set(c, proto.Uint32(0)) })
				}, f.name + " 0", false},
				variant{fmt.Sprintf("%s-removed-thread-%d", f.name, tid), func(t *testing.T, dir string) {
					editCreds(t, dir, tid, func(c *creds.CredsEntry) { f.set(c, nil) })
				}, "creds_entry." + f.name, false})
		}
	}
	capFields := []struct {
		name string
		set  func(c *creds.CredsEntry, w []uint32)
	}{
		{"cap_eff", func(c *creds.CredsEntry, w []uint32) { c.CapEff = w }},
		{"cap_prm", func(c *creds.CredsEntry, w []uint32) { c.CapPrm = w }},
		{"cap_inh", func(c *creds.CredsEntry, w []uint32) { c.CapInh = w }},
		{"cap_amb", func(c *creds.CredsEntry, w []uint32) { c.CapAmb = w }},
	}
	for _, f := range capFields {
		variants = append(variants,
			variant{f.name + "-removed", func(t *testing.T, dir string) {
				editCreds(t, dir, leader, func(c *creds.CredsEntry) { f.set(c, nil) })
			}, "", true},
			variant{f.name + "-checkpoint-restore", func(t *testing.T, dir string) {
				editCreds(t, dir, leader, func(c *creds.CredsEntry) { f.set(c, words(cr)) })
			}, "CAP_CHECKPOINT_RESTORE", false})
	}
	variants = append(variants,
		variant{"all-sets-checkpoint-restore", func(t *testing.T, dir string) {
			editCreds(t, dir, leader, func(c *creds.CredsEntry) {
				c.CapEff, c.CapPrm, c.CapInh, c.CapAmb = words(cr), words(cr), words(cr), words(cr)
			})
		}, "CAP_CHECKPOINT_RESTORE", false},
		variant{"all-sets-checkpoint-restore-second-thread", func(t *testing.T, dir string) {
			editCreds(t, dir, second, func(c *creds.CredsEntry) {
				c.CapEff, c.CapPrm, c.CapInh, c.CapAmb = words(cr), words(cr), words(cr), words(cr)
			})
		}, "CAP_CHECKPOINT_RESTORE", false},
		variant{"cap_prm-sys-admin", func(t *testing.T, dir string) {
			editCreds(t, dir, leader, func(c *creds.CredsEntry) { c.CapPrm, c.CapEff = words(unix.CAP_SYS_ADMIN), words(unix.CAP_SYS_ADMIN) })
		}, "CAP_SYS_ADMIN", false},
		variant{"cap_bnd-removed", func(t *testing.T, dir string) {
			editCreds(t, dir, leader, func(c *creds.CredsEntry) { c.CapBnd = nil })
		}, "cap_bnd", false},
		variant{"cap_bnd-every-bit", func(t *testing.T, dir string) {
			editCreds(t, dir, leader, func(c *creds.CredsEntry) { c.CapBnd = []uint32{^uint32(0), ^uint32(0)} })
		}, "cap_bnd", false},
		variant{"secbits-keep-caps", func(t *testing.T, dir string) {
			editCreds(t, dir, leader, func(c *creds.CredsEntry) { c.Secbits = proto.Uint32(0x10) })
		}, "", false},
		variant{"secbits-noroot", func(t *testing.T, dir string) {
			editCreds(t, dir, leader, func(c *creds.CredsEntry) { c.Secbits = proto.Uint32(1) })
		}, "secbits", false},
		variant{"secbits-unknown", func(t *testing.T, dir string) {
			editCreds(t, dir, leader, func(c *creds.CredsEntry) { c.Secbits = proto.Uint32(1 << 20) })
		}, "secbits", false},
		variant{"secbits-removed", func(t *testing.T, dir string) {
			editCreds(t, dir, leader, func(c *creds.CredsEntry) { c.Secbits = nil })
		}, "creds_entry.secbits", false},
		variant{"groups-removed", func(t *testing.T, dir string) {
			editCreds(t, dir, leader, func(c *creds.CredsEntry) { c.Groups = nil })
		}, "groups", false},
		variant{"groups-root", func(t *testing.T, dir string) {
			editCreds(t, dir, leader, func(c *creds.CredsEntry) { c.Groups = append(c.Groups, 0) })
		}, "groups", false},
		variant{"no_new_privs-removed", func(t *testing.T, dir string) {
			editCreds(t, dir, leader, func(c *creds.CredsEntry) { c.NoNewPrivs = nil })
		}, "", true},
		variant{"no_new_privs-set", func(t *testing.T, dir string) {
			editCreds(t, dir, leader, func(c *creds.CredsEntry) { c.NoNewPrivs = proto.Uint32(1) })
		}, "", false},
		variant{"creds-entry-removed", func(t *testing.T, dir string) {
			editCore(t, dir, leader, func(c *criucore.CoreEntry) { c.ThreadCore.Creds = nil })
		}, "no creds entry", false},
		variant{"creds-entry-removed-second-thread", func(t *testing.T, dir string) {
			editCore(t, dir, second, func(c *criucore.CoreEntry) { c.ThreadCore.Creds = nil })
		}, "no creds entry", false},
		variant{"thread-core-removed", func(t *testing.T, dir string) {
			editCore(t, dir, leader, func(c *criucore.CoreEntry) { c.ThreadCore = nil })
		}, fmt.Sprintf("core-%d.img", leader), false},
		variant{"core-file-removed", func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, fmt.Sprintf("core-%d.img", leader))); err != nil {
				t.Fatal(err)
			}
		}, fmt.Sprintf("core-%d.img", leader), false},
		variant{"fd-to-etc-shadow", func(t *testing.T, dir string) {
			editFileEntry(t, dir, func(p string) bool { return strings.HasSuffix(p, "exec-verify.status") },
				func(e *fdinfo.FileEntry) { e.Reg.Name = proto.String("/etc/shadow") })
		}, "permission denied", false},
		variant{"mapping-of-etc-shadow", func(t *testing.T, dir string) {
			editFileEntry(t, dir, func(p string) bool { return strings.Contains(p, "libc.so") },
				func(e *fdinfo.FileEntry) { e.Reg.Name = proto.String("/etc/shadow") })
		}, "permission denied", false},
	)
	if su, err := os.Stat("/usr/bin/su"); err == nil && su.Mode()&os.ModeSetuid != 0 {
		variants = append(variants, variant{"exe-link-setuid-su", func(t *testing.T, dir string) {
			addExeEntry(t, dir, leader, "/usr/bin/su")
		}, "", true})
	}

	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			parent, err := os.MkdirTemp(env.home, "img-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(parent) })
			dir := filepath.Join(parent, "img")
			if out, err := exec.Command("cp", "-a", base, dir).CombinedOutput(); err != nil {
				t.Fatalf("cp: %v: %s", err, out)
			}
			v.edit(t, dir)
			if err := image.Reseal(dir); err != nil {
				t.Fatal(err)
			}
			chownTree(t, parent, uid, gid)
			os.Remove(tg.trigger)
			if err := os.Truncate(filepath.Join(tg.dir, "exec-verify.status"), 0); err != nil {
				t.Fatal(err)
			}
			r := env.cryo(t, env.capped, restoreTimeout, "restore", "-D", dir, "-d", "-v4", "-o", filepath.Join(parent, "restore.log"))
			if t.Failed() || r.code != 0 && v.refuse == "" {
				t.Log(readLog(filepath.Join(parent, "restore.log")))
			}
			if v.refuse != "" {
				if r.code == 0 {
					killRestored(t, tg.pid, tg.name)
					t.Fatalf("restore of the edited image succeeded, want a refusal naming %q", v.refuse)
				}
				t.Logf("refused: %s", lastLines(r.output, 1))
				if !strings.Contains(r.output, v.refuse) {
					t.Errorf("refusal does not name %q: %v%s", v.refuse, r, readLog(filepath.Join(parent, "restore.log")))
				}
				if runsTarget(tg.pid, tg.name) {
					t.Errorf("the refused restore left pid %d running", tg.pid)
				}
				return
			}
			if r.code != 0 {
				t.Fatalf("restore of the edited image: %v", r)
			}
			t.Cleanup(func() { killRestored(t, tg.pid, tg.name) })
			now, err := threadCreds(tg.pid)
			if err != nil {
				t.Fatal(err)
			}
			for tid, was := range orig {
				for _, bad := range holdsNoMore(now[tid], was) {
					t.Errorf("thread %s: %s", tid, bad)
				}
			}
			tg.fire()
			ws, err := waitReaped(tg.pid, exitTimeout)
			if err != nil {
				t.Fatal(err)
			}
			for _, bad := range holdsNoMore(readStatusFile(t, filepath.Join(tg.dir, "exec-verify.status")), origExec) {
				t.Errorf("a program it execs: %s", bad)
			}
			if v.same && ws.ExitStatus() != 0 {
				t.Errorf("the restored target failed its own checks (status %d):\n%s", ws.ExitStatus(), lastLines(tg.log(), 40))
			}
		})
	}
}

// TestCheckNonRoot: `cryo check` as an ordinary user judges the restore
// with the capability the restore itself hands on: yes with the setcap
// binary, no without it.
func TestCheckNonRoot(t *testing.T) {
	env := setupNonRoot(t)
	r := env.cryo(t, env.capped, restoreTimeout, "check")
	if r.code != 0 || !strings.Contains(r.output, "restore: yes") {
		t.Errorf("cryo check with %s: want exit 0 and \"restore: yes\": %v", nonrootCaps, r)
	}
	r = env.cryo(t, env.plain, restoreTimeout, "check")
	if r.code == 0 || !strings.Contains(r.output, "restore: no") {
		t.Errorf("cryo check without a capability: want a failure and \"restore: no\": %v", r)
	}
}
