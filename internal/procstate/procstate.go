// Package procstate takes a snapshot of what the kernel shows of a process
// tree — every field of /proc that a checkpoint must reproduce — and
// compares two snapshots, naming each difference. The e2e tests take one
// before every dump and compare it with the restored tree; `cryo restore
// --verify` compares the restored tree, still stopped, with the one the
// dump recorded (cryo-state.json) and kills it rather than let it run on
// wrong state.
//
// A snapshot holds only what must come back exactly. What a new process
// necessarily has of its own is left out, each with the reason beside it
// (normalize): counters and times, inode numbers of objects restore makes
// anew (pipes, sockets, anonymous inodes, shmem), the id of an eventfd,
// the pid of the tracer, the time left on a timer.
//
// It reads /proc through package procfs; it changes nothing.
package procstate

import (
	"cmp"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/kabi"
	"github.com/cryo-project/cryo/internal/procfs"
)

// Tree is a snapshot of a process and its descendants, by pid.
type Tree struct {
	Root  int           `json:"root"`
	Procs map[int]*Proc `json:"procs"`
}

// Proc is what the kernel shows of one process.
type Proc struct {
	// Fields are single values, by a name that says where they come from
	// ("stat.pgrp", "loginuid"...).
	Fields map[string]string `json:"fields"`
	// Threads are each thread's own fields, by tid.
	Threads map[int]map[string]string `json:"threads"`
	// Maps are the lines of /proc/PID/maps, normalized, each with its
	// smaps VmFlags and map_files link mode.
	Maps []string `json:"maps"`
	// Fds are each fd's link and fdinfo, normalized, by fd number.
	Fds map[int]string `json:"fds"`
	// Locks are the process's lines of /proc/locks, normalized.
	Locks []string `json:"locks"`
}

// Take snapshots root and every descendant, alive or zombie.
func Take(root int) (*Tree, error) { return TakeWith(root, nil) }

// TakeWith is Take for a caller that has read the smaps of some processes
// already (the dump has, of every process it froze): smaps costs the kernel
// a walk of every page table, about 10 µs a mapping here, so it is not
// read twice.
func TakeWith(root int, smaps map[int][]procfs.Mapping) (*Tree, error) {
	t := &Tree{Root: root, Procs: map[int]*Proc{}}
	locks, err := readLocks()
	if err != nil {
		return nil, err
	}
	queue := []int{root}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		p, kids, err := takeProc(pid, locks[pid], smaps[pid])
		if err != nil {
			return nil, fmt.Errorf("state of %d: %w", pid, err)
		}
		if pid == root {
			// The root's parent is outside the tree: restore makes cryo
			// its parent, as criu does, and it is re-parented from there.
			delete(p.Fields, "stat.ppid")
			for _, th := range p.Threads {
				delete(th, "status.PPid")
			}
		}
		t.Procs[pid] = p
		queue = append(queue, kids...)
	}
	return t, nil
}

// statusKeys are the lines of /proc/PID/task/TID/status a thread must get
// back. Left out: VmPeak, VmHWM, VmRSS and the Rss*/Vm* counters of
// resident memory (pages come back where they were needed, not all of
// them resident), VmPTE and VmSwap (the kernel's own bookkeeping),
// voluntary/nonvoluntary_ctxt_switches (counters), TracerPid (compared as
// traced or not), FDSize (the size of the fd array, which restore's parked
// fds may grow), SigQ (the signals queued for the whole real uid, all its
// processes counted).
var statusKeys = []string{
	"Name", "Umask", "State", "Tgid", "Ngid", "Pid", "PPid", "Uid", "Gid", "Groups",
	"NStgid", "NSpid", "NSpgid", "NSsid", "Kthread",
	"VmSize", "VmLck", "VmPin", "VmData", "VmStk", "VmExe", "VmLib",
	"Threads", "SigPnd", "ShdPnd", "SigBlk", "SigIgn", "SigCgt",
	"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp", "Seccomp_filters",
	"Speculation_Store_Bypass", "SpeculationIndirectBranch",
	"Cpus_allowed", "Cpus_allowed_list", "Mems_allowed", "Mems_allowed_list",
	"untag_mask", "THP_enabled",
}

func takeProc(pid int, locks []string, smaps []procfs.Mapping) (*Proc, []int, error) {
	p := &Proc{Fields: map[string]string{}, Threads: map[int]map[string]string{}, Fds: map[int]string{}, Locks: locks}
	st, err := procfs.StatPid(pid)
	if err != nil {
		return nil, nil, err
	}
	for k, v := range statFields(st, true) {
		p.Fields[k] = v
	}
	for _, name := range []string{"loginuid", "sessionid", "oom_score_adj", "timerslack_ns", "personality", "cgroup", "cmdline", "environ", "auxv", "comm"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, name))
		if err != nil {
			if st.State == 'Z' || errors.Is(err, fs.ErrPermission) {
				continue
			}
			return nil, nil, err
		}
		switch name {
		case "cmdline", "environ", "auxv":
			// Bytes, not text: JSON would turn what is not UTF-8 into
			// U+FFFD.
			p.Fields[name] = hex.EncodeToString(b)
		default:
			p.Fields[name] = strings.TrimSpace(string(b))
		}
	}
	if st.State == 'Z' {
		return p, nil, nil // a zombie has no memory, files or threads to show
	}
	tids, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return nil, nil, err
	}
	var kids []int
	for _, e := range tids {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		th, err := takeThread(pid, tid)
		if err != nil {
			return nil, nil, err
		}
		p.Threads[tid] = th
		cs, err := procfs.TaskChildrenPid(pid, tid)
		if err != nil {
			return nil, nil, err
		}
		kids = append(kids, cs...)
	}
	if p.Maps, err = takeMaps(pid, smaps); err != nil {
		return nil, nil, err
	}
	if err := takeFds(pid, p.Fds); err != nil {
		return nil, nil, err
	}
	sort.Ints(kids)
	return p, kids, nil
}

// statFields are the fields of stat that must come back; per-thread ones
// when process is false. Left out: counters and times (minflt.., utime..,
// starttime), sizes that follow residency (rss), what follows the stack
// pointer of the moment (kstkesp, kstkeip, wchan), the CPU it ran on last.
func statFields(st *procfs.Stat, process bool) map[string]string {
	m := map[string]string{
		"stat.state": string(st.State), "stat.priority": strconv.FormatInt(st.Priority, 10),
		"stat.nice": strconv.FormatInt(st.Nice, 10), "stat.rt_priority": strconv.Itoa(int(st.RtPriority)),
		"stat.policy": strconv.Itoa(int(st.Policy)), "stat.flags": fmt.Sprintf("%#x", st.Flags&pfCompared),
	}
	if process {
		for k, v := range map[string]uint64{
			"ppid": uint64(st.PPid), "pgrp": uint64(st.Pgrp), "session": uint64(st.Session),
			"tty_nr": uint64(st.TtyNr), "tpgid": uint64(int64(st.Tpgid)), "num_threads": uint64(st.NumThreads),
			"vsize": st.Vsize, "rsslim": st.Rsslim, "startcode": st.Startcode, "endcode": st.Endcode,
			"startstack": st.Startstack, "exit_signal": uint64(st.ExitSignal), "start_data": st.StartData,
			"end_data": st.EndData, "start_brk": st.StartBrk, "arg_start": st.ArgStart, "arg_end": st.ArgEnd,
			"env_start": st.EnvStart, "env_end": st.EnvEnd, "exit_code": uint64(st.ExitCode),
		} {
			m["stat."+k] = strconv.FormatUint(v, 10)
		}
	}
	return m
}

// pfCompared are the PF_* flags of stat field 9 that describe the program
// (PF_EXITING 0x4, PF_FORKNOEXEC 0x40, PF_SUPERPRIV 0x100 say what the
// task did, not what it is: left out; PF_RANDOMIZE, PF_NO_SETAFFINITY,
// PF_MEMALLOC... stay).
const pfCompared = ^uint32(0x4 | 0x40 | 0x100)

func takeThread(pid, tid int) (map[string]string, error) {
	m := map[string]string{}
	st, err := procfs.TaskStatusPid(pid, tid)
	if err != nil {
		return nil, err
	}
	for _, k := range statusKeys {
		if v, ok := st.Fields[k]; ok {
			m["status."+k] = v
		}
	}
	m["status.State"] = stateWord(st.State)
	m["status.Traced"] = strconv.FormatBool(st.TracerPid != 0)
	tst, err := procfs.TaskStatPid(pid, tid)
	if err != nil {
		return nil, err
	}
	for k, v := range statFields(tst, false) {
		m[k] = v
	}
	m["stat.state"] = stateWord(tst.State)
	for _, name := range []string{"comm"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/%s", pid, tid, name))
		if err != nil {
			return nil, err
		}
		m[name] = strings.TrimSpace(string(b))
	}
	if v, err := kabi.IoprioGet(tid); err == nil {
		m["ioprio"] = strconv.Itoa(v)
	}
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(tid, &set); err == nil {
		m["affinity"] = fmt.Sprint(set)
	}
	return m, nil
}

// stateWord folds the states a checkpoint cannot keep apart: a task is
// running or sleeping (R, S, D, I are moments of the same life), stopped
// (T, or t: stopped by a tracer, which at a snapshot taken by cryo itself
// is always the case), or a zombie.
func stateWord(s byte) string {
	switch s {
	case 'R', 'S', 'D', 'I':
		return "running"
	case 'T', 't':
		return "stopped"
	case 'Z', 'X':
		return "zombie"
	}
	return string(s)
}

// inodeRE finds inode numbers in fdinfo and /proc/locks lines.
var inodeRE = regexp.MustCompile(`\b(ino:|inode:|ino: )\s*[0-9a-f]+\b`)

func takeMaps(pid int, ms []procfs.Mapping) ([]string, error) {
	if ms == nil {
		var err error
		if ms, err = procfs.SmapsPid(pid); err != nil {
			return nil, err
		}
	}
	out := make([]string, 0, len(ms))
	for _, m := range ms {
		ino := strconv.FormatUint(m.Inode, 10)
		if m.Kind == procfs.KindAnonShmemNamed || m.Path == "/dev/zero" && m.Perms.Shared || strings.HasPrefix(m.Path, "/memfd:") || strings.HasPrefix(m.Path, "/SYSV") || m.Deleted {
			// Re-created objects, and files deleted before the dump whose
			// contents restore put in a new file: a new inode.
			ino = "*"
		}
		dev := fmt.Sprintf("%02x:%02x", m.Dev.Major, m.Dev.Minor)
		if ino == "*" {
			dev = "*"
		}
		// The link's mode is the open mode of the mapped file: only a file
		// has one (an anonymous mapping has no map_files entry).
		mode := "-"
		if m.Kind == procfs.KindFile {
			if fi, err := os.Lstat(fmt.Sprintf("/proc/%d/map_files/%x-%x", pid, m.Start, m.End)); err == nil {
				mode = fi.Mode().Perm().String()
			}
		}
		out = append(out, fmt.Sprintf("%x-%x %s %x %s %s %s [%s] link %s", m.Start, m.End, m.Perms.Raw, m.Offset, dev, ino, m.RawPath, m.RawVmFlags, mode))
	}
	return out, nil
}

// anonLinkRE matches the links of objects restore makes anew: pipe:[N],
// socket:[N], anon_inode:[...] keep their kind, lose their number.
var anonLinkRE = regexp.MustCompile(`^(pipe|socket|net):\[\d+\]$`)

func takeFds(pid int, into map[int]string) error {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return err
	}
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, n))
		if err != nil {
			continue // closed meanwhile: the process runs
		}
		link = anonLinkRE.ReplaceAllString(link, "$1")
		fi, err := procfs.FdinfoPid(pid, n)
		if err != nil {
			continue
		}
		// Left out: the mount and inode of a re-created object (mnt_id,
		// ino), an eventfd's idr number, and what a timer does while the
		// tree is frozen (its time left shrinks, its expirations add up,
		// between the dump's read and any later look).
		// An epoll's targets are listed in the order of its red-black
		// tree, keyed by the address of each target's struct file: a
		// kernel address, not the program's state, so they are sorted.
		text := fmt.Sprintf("%s | pos: %d | flags: %o", link, fi.Pos, fi.Flags)
		var tfds []string
		for _, kv := range fi.Extra {
			switch kv.Key {
			case "eventfd-id", "it_value", "ticks":
				continue
			}
			item := " | " + kv.Key + ": " + inodeRE.ReplaceAllString(kv.Value, "$1*")
			if kv.Key == "tfd" {
				tfds = append(tfds, item)
				continue
			}
			text += item
		}
		sort.Strings(tfds)
		into[n] = text + strings.Join(tfds, "")
	}
	return nil
}

// readLocks is /proc/locks by pid, each lock without its ordinal (which
// counts every lock of the machine) and with the locked file's inode kept:
// a lock on a file is on that very file, which restore does not re-create.
func readLocks() (map[int][]string, error) {
	ls, err := procfs.ReadLocks()
	if err != nil {
		return nil, err
	}
	out := map[int][]string{}
	for _, l := range ls {
		if l.Blocked {
			continue // a waiter is a task in a syscall, not a lock held
		}
		out[l.Pid] = append(out[l.Pid], lockText(&l))
	}
	for pid := range out {
		sort.Strings(out[pid])
	}
	return out, nil
}

// lockText is a lock as /proc/locks prints it, without its ordinal.
func lockText(l *procfs.Lock) string {
	mode := "ADVISORY"
	switch {
	case l.Lease == procfs.LeaseActive:
		mode = "ACTIVE"
	case l.Lease == procfs.LeaseBreaking:
		mode = "BREAKING"
	case l.Lease == procfs.LeaseBreaker:
		mode = "BREAKER"
	case l.Mandatory:
		mode = "MANDATORY"
	case l.MSNFS:
		mode = "MSNFS"
	}
	file := "<none>:0"
	if !l.NoInode {
		file = fmt.Sprintf("%v:%d", l.Dev, l.Ino)
	}
	return fmt.Sprintf("%v %s %v %s %s", l.Kind, mode, l.Type, file, l.Range())
}

// Diff lists every difference between a (before) and b (after), each
// naming the pid, the thread or fd, and the field.
func Diff(a, b *Tree) []string {
	var out []string
	pids := keys(a.Procs)
	for _, pid := range pids {
		pa, pb := a.Procs[pid], b.Procs[pid]
		if pb == nil {
			out = append(out, fmt.Sprintf("process %d is gone", pid))
			continue
		}
		out = append(out, diffMap(fmt.Sprintf("process %d", pid), pa.Fields, pb.Fields)...)
		for _, tid := range keys(pa.Threads) {
			tb, ok := pb.Threads[tid]
			if !ok {
				out = append(out, fmt.Sprintf("process %d: thread %d is gone", pid, tid))
				continue
			}
			out = append(out, diffMap(fmt.Sprintf("process %d thread %d", pid, tid), pa.Threads[tid], tb)...)
		}
		for _, tid := range keys(pb.Threads) {
			if _, ok := pa.Threads[tid]; !ok {
				out = append(out, fmt.Sprintf("process %d: thread %d is new", pid, tid))
			}
		}
		out = append(out, diffList(fmt.Sprintf("process %d maps", pid), pa.Maps, pb.Maps)...)
		for _, fd := range keys(pa.Fds) {
			if pa.Fds[fd] != pb.Fds[fd] {
				out = append(out, fmt.Sprintf("process %d fd %d: %q, was %q", pid, fd, pb.Fds[fd], pa.Fds[fd]))
			}
		}
		for _, fd := range keys(pb.Fds) {
			if _, ok := pa.Fds[fd]; !ok {
				out = append(out, fmt.Sprintf("process %d fd %d is new: %q", pid, fd, pb.Fds[fd]))
			}
		}
		out = append(out, diffList(fmt.Sprintf("process %d locks", pid), pa.Locks, pb.Locks)...)
	}
	for _, pid := range keys(b.Procs) {
		if a.Procs[pid] == nil {
			out = append(out, fmt.Sprintf("process %d is new", pid))
		}
	}
	return out
}

func diffMap(who string, a, b map[string]string) []string {
	var out []string
	for _, k := range keys(a) {
		if v, ok := b[k]; !ok {
			out = append(out, fmt.Sprintf("%s: %s is gone (was %q)", who, k, a[k]))
		} else if v != a[k] {
			out = append(out, fmt.Sprintf("%s: %s %s", who, k, showDiff(a[k], v)))
		}
	}
	for _, k := range keys(b) {
		if _, ok := a[k]; !ok {
			out = append(out, fmt.Sprintf("%s: %s is new (%q)", who, k, b[k]))
		}
	}
	return out
}

func diffList(who string, a, b []string) []string {
	var out []string
	for i := 0; i < max(len(a), len(b)); i++ {
		switch {
		case i >= len(a):
			out = append(out, fmt.Sprintf("%s: line %d is new: %q", who, i+1, b[i]))
		case i >= len(b):
			out = append(out, fmt.Sprintf("%s: line %d is gone: %q", who, i+1, a[i]))
		case a[i] != b[i]:
			out = append(out, fmt.Sprintf("%s: line %d %q, was %q", who, i+1, b[i], a[i]))
		}
	}
	return out
}

func keys[K cmp.Ordered, V any](m map[K]V) []K { return slices.Sorted(maps.Keys(m)) }

// Marshal and Unmarshal are the form the dump stores a snapshot in.
func (t *Tree) Marshal() ([]byte, error) { return json.Marshal(t) }

// Unmarshal reads a snapshot written by Marshal.
func Unmarshal(b []byte) (*Tree, error) {
	var t Tree
	if err := json.Unmarshal(b, &t); err != nil {
		return nil, err
	}
	return &t, nil
}

// showDiff says how after differs from before: both whole when they are
// short, else where they part and a little of each from there.
func showDiff(before, after string) string {
	if len(before)+len(after) < 160 {
		return fmt.Sprintf("%q, was %q", after, before)
	}
	i := 0
	for i < len(before) && i < len(after) && before[i] == after[i] {
		i++
	}
	cut := func(s string) string {
		if i >= len(s) {
			return ""
		}
		return s[i:min(len(s), i+32)]
	}
	return fmt.Sprintf("differs from byte %d (of %d, was %d): %q, was %q", i, len(after), len(before), cut(after), cut(before))
}
