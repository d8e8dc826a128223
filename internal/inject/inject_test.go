package inject

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/kabi"
	"github.com/cryo-project/cryo/internal/procfs"
	"github.com/cryo-project/cryo/internal/ptrace"
	"github.com/cryo-project/cryo/internal/stub"
)

// TestMain fails the run if a test leaked a file descriptor or left a
// child process (a stub) behind, as internal/feature's does.
func TestMain(m *testing.M) {
	if pid, err := strconv.Atoi(os.Getenv("CRYO_PARK_HELPER")); err == nil {
		parkHelper(pid)
	}
	// Open a pollable file once, so the runtime's netpoller fds exist
	// before the baseline is taken.
	if f, err := os.Open(os.DevNull); err == nil {
		f.Close()
	}
	before, err := openFds()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	code := m.Run()
	after, err := openFds()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	for fd, link := range after {
		if _, ok := before[fd]; !ok {
			fmt.Fprintf(os.Stderr, "leaked fd %d -> %s\n", fd, link)
			code = 1
		}
	}
	if kids := children(); len(kids) > 0 {
		fmt.Fprintf(os.Stderr, "child processes left behind: %v\n", kids)
		code = 1
	}
	os.Exit(code)
}

func openFds() (map[int]string, error) {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil, err
	}
	out := map[int]string{}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		link, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err != nil {
			continue // the directory's own fd, closed by now
		}
		out[fd] = link
	}
	return out, nil
}

// children lists the processes whose parent is this one (zombies included).
func children() []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 1 {
			if ppid, _ := strconv.Atoi(f[1]); ppid == os.Getpid() {
				out = append(out, pid)
			}
		}
	}
	return out
}

const testBase = 0x20000000

// withStub runs fn with a started, seized stub, on a goroutine locked to
// its OS thread (the kernel ties a tracee to its tracer thread), and kills
// the stub afterwards. The thread stays locked, so the runtime retires it.
func withStub(t *testing.T, fn func(s *Stub)) { withStubOpts(t, 0, fn) }

func withStubOpts(t *testing.T, opts int, fn func(s *Stub)) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		s, err := StartStub(testBase, StubOptions{Name: "cryo-inject-test", Ptrace: opts})
		if err != nil {
			t.Error(err)
			return
		}
		defer s.Kill()
		fn(s)
	}()
	<-done
}

// The batch loop is written byte by byte: objdump must read each
// instruction where the listing says it is, as the listing says it.
func TestBatchLoopDisassembles(t *testing.T) {
	objdump, err := exec.LookPath("objdump")
	if err != nil {
		if os.Getenv("CRYO_TEST_STRICT") != "" {
			t.Fatal("objdump (binutils, which gcc needs) is missing")
		}
		t.Skip("no objdump")
	}
	code, listing, labels, err := assembleLoop()
	if err != nil {
		t.Fatal(err)
	}
	checkDisassembly(t, objdump, code, listing, labels)
	if _, trap, err := scratchCode(); err != nil || trap != batchTrap || code[len(code)-1] != 0xcc {
		t.Errorf("batch trap at %#x (%v), want the loop's last byte, an int3", trap, err)
	}
}

// The return trampoline too, and it fits its slot at the end of [vdso].
func TestTrampolineDisassembles(t *testing.T) {
	objdump, err := exec.LookPath("objdump")
	if err != nil {
		if os.Getenv("CRYO_TEST_STRICT") != "" {
			t.Fatal("objdump (binutils, which gcc needs) is missing")
		}
		t.Skip("no objdump")
	}
	code, listing := trampoline()
	checkDisassembly(t, objdump, code, listing, nil)
	if len(code) > trampSlot || code[0] != 0x0f || code[1] != 0x05 {
		t.Errorf("trampoline of %d bytes (slot %d) starting % x, want a syscall first", len(code), trampSlot, code[:2])
	}
	r := unix.PtraceRegs{R15: 15, R14: 14, R13: 13, R12: 12, R11: 11, R10: 10, R9: 9, R8: 8, Rdi: 7, Rsi: 6, Rbp: 5, Rdx: 4, Rcx: 3, Rbx: 2, Rax: 1, Eflags: 0x246, Rip: 0x1234}
	f := trampFrame(&r, 0xfeed)
	if len(f) != frameSize || binary.LittleEndian.Uint64(f[0:]) != 0xfeed || binary.LittleEndian.Uint64(f[8:]) != 15 || binary.LittleEndian.Uint64(f[frameSize-8:]) != 0x1234 || binary.LittleEndian.Uint64(f[frameSize-16:]) != 0x246 {
		t.Errorf("frame % x: want the mask first, r15, then down to rax, rflags and rip last", f)
	}
}

func checkDisassembly(t *testing.T, objdump string, code []byte, listing []insn, labels map[string]int) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "code.bin")
	if err := os.WriteFile(f, code, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(objdump, "-D", "-b", "binary", "-m", "i386:x86-64", "-M", "intel", f).CombinedOutput()
	if err != nil {
		t.Fatalf("objdump: %v\n%s", err, out)
	}
	got := map[int]string{} // offset → instruction text
	for _, line := range strings.Split(string(out), "\n") {
		parts := strings.SplitN(line, "\t", 3)
		if len(parts) < 3 {
			continue
		}
		off, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(parts[0]), ":"), 16, 64)
		if err != nil {
			continue
		}
		got[int(off)] = parts[2]
	}
	norm := func(s string) string {
		s = strings.ToLower(s)
		if i := strings.Index(s, "#"); i >= 0 {
			s = s[:i]
		}
		for _, w := range []string{"ptr", "byte", "dword", "qword", " "} {
			s = strings.ReplaceAll(s, w, "")
		}
		return s
	}
	for i, in := range listing {
		want := in.text
		if in.target != "" {
			want = fmt.Sprintf("%s %#x", in.text, labels[in.target])
		}
		if norm(got[in.off]) != norm(want) {
			t.Errorf("at %#x: objdump reads %q, the listing says %q", in.off, got[in.off], want)
		}
		next := len(code)
		if i+1 < len(listing) {
			next = listing[i+1].off
		}
		if in.off+in.len != next {
			t.Errorf("at %#x: %q is %d bytes, the next instruction starts at %#x", in.off, in.text, in.len, next)
		}
	}
}

func TestSyscall(t *testing.T) {
	withStub(t, func(s *Stub) {
		ret, err := s.Syscall(unix.SYS_GETPID)
		if err != nil || int(ret) != s.Proc.Pid {
			t.Errorf("getpid in the stub = %d, %v; want %d", ret, err, s.Proc.Pid)
		}
		_, err = s.Call("close -1", unix.SYS_CLOSE, ^uint64(0))
		if !errors.Is(err, unix.EBADF) || !strings.Contains(err.Error(), "close -1 in "+strconv.Itoa(s.Proc.Pid)) {
			t.Errorf("close(-1) = %v, want EBADF naming the call and the task", err)
		}
		if _, err := s.Syscall(unix.SYS_GETPID, 1, 2, 3, 4, 5, 6, 7); err == nil {
			t.Error("a syscall with 7 arguments was accepted")
		}
	})
}

// A call's arguments and results live in the call area: a struct in, a
// buffer the kernel fills out.
func TestCallArena(t *testing.T) {
	withStub(t, func(s *Stub) {
		set := uint64(1<<(unix.SIGUSR1-1) | 1<<(unix.SIGUSR2-1))
		p, err := s.Mem.Put(kabi.Bytes(&set))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Call("rt_sigprocmask", unix.SYS_RT_SIGPROCMASK, unix.SIG_BLOCK, p, 0, 8); err != nil {
			t.Fatal(err)
		}
		if m, err := kabi.GetSigmask(s.Proc.Pid); err != nil || m&set != set {
			t.Errorf("mask after rt_sigprocmask(SIG_BLOCK) = %#x, %v; want %#x in it", m, err, set)
		}
		buf, err := s.Mem.Alloc(4096, 0)
		if err != nil {
			t.Fatal(err)
		}
		n, err := s.Call("getcwd", unix.SYS_GETCWD, buf, 4096)
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.Mem.Read(buf, int(n))
		if err != nil {
			t.Fatal(err)
		}
		// stub.Start does not change directory: the stub runs in ours.
		if want, _ := os.Getwd(); string(bytes.TrimRight(got, "\x00")) != want {
			t.Errorf("getcwd in the stub = %q, want %q", got, want)
		}
		// The call reset the arena: the next allocation starts over.
		if again, _ := s.Mem.Alloc(4096, 0); again != buf {
			t.Errorf("allocation after a call at %#x, want %#x again", again, buf)
		}
		if _, err := s.Mem.Alloc(batchArea, 0); err == nil {
			t.Error("an allocation larger than the call area succeeded")
		}
	})
}

func TestBatch(t *testing.T) {
	withStub(t, func(s *Stub) {
		b := s.Batch()
		pid := b.Add("getpid", unix.SYS_GETPID)
		ppid := b.Add("getppid", unix.SYS_GETPPID)
		uid := b.Add("getuid", unix.SYS_GETUID)
		if err := b.Run(); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			st   Step
			want int
		}{{pid, s.Proc.Pid}, {ppid, os.Getpid()}, {uid, os.Getuid()}} {
			if got, err := c.st.Result(); err != nil || int(got) != c.want {
				t.Errorf("step %d = %d, %v; want %d", c.st.i, got, err, c.want)
			}
		}
		if b.Fills() != 1 {
			t.Errorf("3 steps took %d fills", b.Fills())
		}
		if err := b.Run(); err == nil {
			t.Error("a batch ran twice")
		}
		// The stub is still fit for single calls afterwards.
		if ret, err := s.Syscall(unix.SYS_GETPID); err != nil || int(ret) != s.Proc.Pid {
			t.Errorf("getpid after a batch = %d, %v", ret, err)
		}
	})
}

// The first untolerated failure stops the batch: its index, name and errno
// come back, the steps before it ran, the ones after it did not.
func TestBatchFailure(t *testing.T) {
	withStub(t, func(s *Stub) {
		b := s.Batch()
		first := b.Add("getpid", unix.SYS_GETPID)
		b.Add("close bad fd", unix.SYS_CLOSE, 1<<20).
			Describe(func() string { return "close fd 1048576 of nothing" })
		after := b.Add("getpid again", unix.SYS_GETPID)
		err := b.Run()
		var se *StepError
		if !errors.As(err, &se) || se.Index != 1 || se.Steps != 3 || se.Name != "close fd 1048576 of nothing" || se.Tid != s.Proc.Pid {
			t.Fatalf("Run = %#v, want step 1 of 3 named by Describe", err)
		}
		if !errors.Is(err, unix.EBADF) {
			t.Errorf("Run = %v, want EBADF", err)
		}
		if !strings.Contains(err.Error(), "close fd 1048576 of nothing in "+strconv.Itoa(s.Proc.Pid)) {
			t.Errorf("error %q does not name the step and the task", err)
		}
		if got, err := first.Result(); err != nil || int(got) != s.Proc.Pid {
			t.Errorf("step before the failure = %d, %v", got, err)
		}
		if _, err := after.Result(); err == nil {
			t.Error("the step after the failure ran")
		}
	})
}

func TestBatchTolerate(t *testing.T) {
	withStub(t, func(s *Stub) {
		b := s.Batch()
		bad := b.Add("close bad fd", unix.SYS_CLOSE, 1<<20).Tolerate()
		pid := b.Add("getpid", unix.SYS_GETPID)
		if err := b.Run(); err != nil {
			t.Fatal(err)
		}
		if _, err := bad.Result(); !errors.Is(err, unix.EBADF) {
			t.Errorf("tolerated step = %v, want EBADF", err)
		}
		if got, err := pid.Result(); err != nil || int(got) != s.Proc.Pid {
			t.Errorf("step after a tolerated error = %d, %v", got, err)
		}
	})
}

// Arguments that point into the batch area: a path and a struct.
func TestBatchArena(t *testing.T) {
	withStub(t, func(s *Stub) {
		b := s.Batch()
		act := kabi.Sigaction{Handler: 0x1234, Flags: 0x10000000} // SA_RESTART
		for _, sig := range []unix.Signal{unix.SIGUSR1, unix.SIGUSR2} {
			b.AddArg("rt_sigaction "+sig.String(), kabi.Bytes(&act), unix.SYS_RT_SIGACTION, func(p uint64) []uint64 {
				return []uint64{uint64(sig), p, 0, 8}
			})
		}
		open := b.AddArg("open /dev/null", []byte("/dev/null\x00"), unix.SYS_OPENAT, func(p uint64) []uint64 {
			return []uint64{uint64(0xffffffffffffff9c), p, unix.O_RDONLY | unix.O_CLOEXEC, 0}
		})
		if err := b.Run(); err != nil {
			t.Fatal(err)
		}
		fd, err := open.Result()
		if err != nil {
			t.Fatal(err)
		}
		if link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", s.Proc.Pid, fd)); err != nil || link != os.DevNull {
			t.Errorf("fd %d the batch opened is %q, %v", fd, link, err)
		}
		caught := statusMask(t, s.Proc.Pid, "SigCgt")
		if want := uint64(1<<(unix.SIGUSR1-1) | 1<<(unix.SIGUSR2-1)); caught&want != want {
			t.Errorf("SigCgt %#x after the batch's rt_sigaction, want %#x in it", caught, want)
		}
	})
}

func statusMask(t *testing.T, pid int, field string) uint64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			m, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			return m
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// A batch larger than the batch area runs in several fills; indexes count
// across them, and so does a failure in a later fill.
func TestBatchFills(t *testing.T) {
	withStub(t, func(s *Stub) {
		const n = 2*batchLen/entrySize + 100 // three fills of getpid
		b := s.Batch()
		steps := make([]Step, n)
		for i := range steps {
			steps[i] = b.Add("getpid", unix.SYS_GETPID)
		}
		if err := b.Run(); err != nil {
			t.Fatal(err)
		}
		if b.Fills() != 3 {
			t.Errorf("%d steps took %d fills, want 3", n, b.Fills())
		}
		for i, st := range steps {
			if got, err := st.Result(); err != nil || int(got) != s.Proc.Pid {
				t.Fatalf("step %d = %d, %v", i, got, err)
			}
		}

		// Steps whose data fills the area: each fill holds fewer of them.
		b = s.Batch()
		data := make([]byte, 4096)
		set := uint64(1 << (unix.SIGUSR1 - 1))
		copy(data, kabi.Bytes(&set))
		const m = 100
		for i := 0; i < m; i++ {
			b.AddArg(fmt.Sprintf("rt_sigprocmask %d", i), data, unix.SYS_RT_SIGPROCMASK, func(p uint64) []uint64 {
				return []uint64{unix.SIG_BLOCK, p, 0, 8}
			})
		}
		b.Add("close bad fd", unix.SYS_CLOSE, 1<<20)
		b.Add("getpid", unix.SYS_GETPID)
		err := b.Run()
		var se *StepError
		if !errors.As(err, &se) || se.Index != m || !errors.Is(err, unix.EBADF) {
			t.Errorf("Run = %v, want step %d to fail with EBADF", err, m)
		}
		if b.Fills() < 2 {
			t.Errorf("%d steps of 4 KiB took %d fills", m, b.Fills())
		}
		if mask, _ := kabi.GetSigmask(s.Proc.Pid); mask&set == 0 {
			t.Errorf("mask %#x: the steps before the failure did not run", mask)
		}

		// One step's data larger than the area fails the batch before it runs.
		b = s.Batch()
		b.AddArg("too big", make([]byte, batchLen), unix.SYS_GETPID, func(uint64) []uint64 { return nil })
		if err := b.Run(); err == nil {
			t.Error("a step with more data than the batch area ran")
		}
	})
}

// Signals that arrive while a batch runs: suppressed at their delivery
// stop and recorded in Caught (a syscall they interrupt restarts by
// itself); or, blocked as in a restored process, left pending.
func TestBatchSignals(t *testing.T) {
	withStub(t, func(s *Stub) {
		pid := s.Proc.Pid
		run := func() {
			b := s.Batch()
			ts := unix.Timespec{Nsec: 2e6}
			var steps []Step
			for i := 0; i < 20; i++ {
				steps = append(steps, b.AddArg("nanosleep 2ms", kabi.Bytes(&ts), unix.SYS_NANOSLEEP, func(p uint64) []uint64 { return []uint64{p, 0} }))
			}
			var stop atomic.Bool
			sent := make(chan int)
			go func() {
				n := 0
				for !stop.Load() {
					unix.Kill(pid, unix.SIGUSR1)
					n++
					time.Sleep(3 * time.Millisecond)
				}
				sent <- n
			}()
			start := time.Now()
			err := b.Run()
			stop.Store(true)
			n := <-sent
			if err != nil {
				t.Fatalf("batch with %d signals sent: %v", n, err)
			}
			for i, st := range steps {
				if got, err := st.Result(); err != nil || got != 0 {
					t.Errorf("nanosleep %d = %d, %v", i, got, err)
				}
			}
			if d := time.Since(start); d < 40*time.Millisecond {
				t.Errorf("20 sleeps of 2 ms took %v: interrupted ones did not restart", d)
			}
		}
		run()
		if len(s.Caught) == 0 {
			t.Error("no signal recorded as caught during the batch")
		}
		for _, si := range s.Caught {
			if si.Signo() != int(unix.SIGUSR1) {
				t.Errorf("caught signal %d, want only SIGUSR1", si.Signo())
			}
		}

		// Every signal blocked, as restore has it: no stop, all pending.
		s.Caught = nil
		if err := kabi.SetSigmask(pid, ^uint64(0)); err != nil {
			t.Fatal(err)
		}
		run()
		if len(s.Caught) != 0 {
			t.Errorf("%d blocked signals were caught", len(s.Caught))
		}
		if p := statusMask(t, pid, "ShdPnd"); p&(1<<(unix.SIGUSR1-1)) == 0 {
			t.Errorf("ShdPnd %#x: the blocked SIGUSR1 is not pending", p)
		}
	})
}

func TestBatchRefuses(t *testing.T) {
	withStub(t, func(s *Stub) {
		b := s.Batch()
		b.Add("getpid", unix.SYS_GETPID)
		b.Add("clone3", unix.SYS_CLONE3, 0, 0)
		if err := b.Run(); err == nil || !strings.Contains(err.Error(), "clone3") {
			t.Errorf("batch with clone3 = %v, want a refusal", err)
		}
		b = s.Batch()
		b.Add("getpid", unix.SYS_GETPID, 1, 2, 3, 4, 5, 6, 7)
		if err := b.Run(); err == nil {
			t.Error("a step with 7 arguments ran")
		}
		t0 := Borrowed(s.Task.Task, s.Proc.Pid)
		if err := t0.Batch().Run(); err == nil {
			t.Error("a borrowed task ran a batch")
		}
		s.SetSyscallIP(s.SyscallIP(), false)
		if err := s.Batch().Run(); err == nil {
			t.Error("a task injecting without int3 ran a batch")
		}
	})
}

// Why a caller may inject without the int3 (SetSyscallIP): the SIGTRAP an
// int3 forces resets an ignored SIGTRAP to SIG_DFL (kernel/signal.c,
// force_sig_info_to_task). Restore relies on both halves of this.
func TestTrapResetsIgnoredSIGTRAP(t *testing.T) {
	withStub(t, func(s *Stub) {
		ign := kabi.Sigaction{Handler: 1} // SIG_IGN
		bit := uint64(1) << (unix.SIGTRAP - 1)
		s.SetSyscallIP(s.SyscallIP(), false)
		p, err := s.Mem.Put(kabi.Bytes(&ign))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Call("rt_sigaction SIGTRAP", unix.SYS_RT_SIGACTION, uint64(unix.SIGTRAP), p, 0, 8); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Call("getpid", unix.SYS_GETPID); err != nil {
			t.Fatal(err)
		}
		if statusMask(t, s.Proc.Pid, "SigIgn")&bit == 0 {
			t.Fatal("SIGTRAP not ignored after calls without int3")
		}
		s.SetSyscallIP(s.SyscallIP(), true)
		if _, err := s.Call("getpid", unix.SYS_GETPID); err != nil {
			t.Fatal(err)
		}
		if statusMask(t, s.Proc.Pid, "SigIgn")&bit != 0 {
			t.Error("SIGTRAP still ignored after a call ending on int3: the kernel no longer resets it, and restore's keepTrapIgnored is moot")
		}
	})
}

// A borrowed task (as dump sees one) injects through an instruction of
// its own with no int3 after it, keeps its registers between calls, and
// gets back exactly the stack bytes its arena borrowed, all of them below
// its red zone.
func TestBorrowed(t *testing.T) {
	withStub(t, func(s *Stub) {
		pid := s.Proc.Pid
		bt := Borrowed(s.Task.Task, pid)
		bt.SetSyscallIP(testBase+stub.SyscallOffset, false)
		rsp := bt.Regs.Rsp
		lo := rsp - redZone - frameSize - StackSize - 16
		before := make([]byte, rsp-lo)
		if err := ptrace.ReadMem(pid, lo, before); err != nil {
			t.Fatal(err)
		}
		buf, err := bt.Arena().Alloc(128, 0)
		if err != nil {
			t.Fatal(err)
		}
		if buf < lo || buf+128 > rsp-redZone-frameSize {
			t.Errorf("stack arena at %#x, not below the red zone and the trampoline frame under rsp %#x", buf, rsp)
		}
		if _, err := bt.Call("getcwd", unix.SYS_GETCWD, buf, 128); err != nil && !errors.Is(err, unix.ERANGE) {
			t.Fatal(err)
		}
		var regs unix.PtraceRegs
		if err := kabi.GetRegs(pid, &regs); err != nil {
			t.Fatal(err)
		}
		if want := ptrace.ResumeRegs(bt.Regs, true); regs != want {
			t.Errorf("registers after a borrowed call: rip %#x rax %#x, want its own (rip %#x rax %#x)", regs.Rip, regs.Rax, want.Rip, want.Rax)
		}
		if err := bt.PutBackArena(); err != nil {
			t.Fatal(err)
		}
		after := make([]byte, len(before))
		if err := ptrace.ReadMem(pid, lo, after); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(before, after) {
			t.Error("the stack below the red zone differs after PutBack")
		}
		if _, err := bt.Arena().Alloc(StackSize+1, 0); err == nil {
			t.Error("a stack allocation larger than the arena succeeded")
		}
		bt.PutBackArena()
	})
}

// A fork event (PTRACE_O_TRACEFORK) comes between the continue and the
// int3 of a call: it is passed over, the call's result comes back, and the
// child, auto-attached, is killed and reaped by tracer and stub alike.
func TestForkEvent(t *testing.T) {
	withStubOpts(t, kabi.PTRACE_O_TRACEFORK, func(s *Stub) {
		args := kabi.CloneArgs{ExitSignal: uint64(unix.SIGCHLD)}
		p, err := s.Mem.Put(kabi.Bytes(&args))
		if err != nil {
			t.Fatal(err)
		}
		pid, err := s.Call("clone3", unix.SYS_CLONE3, p, uint64(len(kabi.Bytes(&args))))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ptrace.Attached(int(pid)); err != nil {
			t.Errorf("child %d: %v", pid, err)
		}
		if err := s.KillChild(int(pid)); err != nil {
			t.Errorf("kill child %d: %v", pid, err)
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			t.Errorf("child %d still exists after KillChild", pid)
		}
		if ret, err := s.Syscall(unix.SYS_GETPID); err != nil || int(ret) != s.Proc.Pid {
			t.Errorf("getpid after the fork = %d, %v", ret, err)
		}
	})
}

func TestErrno(t *testing.T) {
	for _, c := range []struct {
		ret  int64
		want error
	}{{0, nil}, {5, nil}, {-int64(unix.ENOENT), unix.ENOENT}, {-4095, unix.Errno(4095)}, {-4096, nil}, {-1 << 40, nil}} {
		if got := Errno(c.ret); !errors.Is(got, c.want) || (c.want == nil) != (got == nil) {
			t.Errorf("Errno(%d) = %v, want %v", c.ret, got, c.want)
		}
	}
}

// A parked thread (Park) sleeps in its injected call until Unpark, which
// gives it back its registers and signal mask; parked again by a tracer
// that is then SIGKILLed, it sleeps out the park, takes back its own mask
// and registers through the trampoline, and goes on with the read it was
// in: the shell reads the line written after the tracer died.
func TestPark(t *testing.T) {
	sh := exec.Command("/bin/sh", "-c", `read x; echo "got $x"`)
	in, err := sh.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	sh.Stdout = &out
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	waited := false
	defer func() {
		if !waited {
			sh.Process.Kill()
			sh.Wait()
		}
	}()
	pid := sh.Process.Pid
	syscallOf := func() string {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/syscall", pid))
		return strings.SplitN(string(b), " ", 2)[0]
	}
	status := func() []byte {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		return b
	}
	for deadline := time.Now().Add(5 * time.Second); syscallOf() != "0"; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the shell is not in read: /proc/%d/syscall %q", pid, syscallOf())
		}
	}
	before := status()

	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		bt, tr, err := parkable(pid)
		if err != nil {
			t.Error(err)
			return
		}
		defer bt.Release()
		defer tr.Remove()
		mask, _ := kabi.GetSigmask(pid)
		if err := bt.Park(time.Hour); err != nil {
			t.Error(err)
			return
		}
		for deadline := time.Now().Add(5 * time.Second); syscallOf() != strconv.Itoa(unix.SYS_CLOCK_NANOSLEEP); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Errorf("parked thread in syscall %q, want clock_nanosleep", syscallOf())
				break
			}
		}
		if err := bt.Unpark(); err != nil {
			t.Error(err)
			return
		}
		var regs unix.PtraceRegs
		if err := kabi.GetRegs(pid, &regs); err != nil {
			t.Error(err)
		}
		if want := ptrace.ResumeRegs(bt.Regs, true); regs != want {
			t.Errorf("registers after Unpark: rip %#x rax %#x, want its own (rip %#x rax %#x)", regs.Rip, regs.Rax, want.Rip, want.Rax)
		}
		if m, _ := kabi.GetSigmask(pid); m != mask {
			t.Errorf("signal mask after Unpark %#x, want %#x", m, mask)
		}
	}()
	<-done
	if t.Failed() {
		return
	}

	// The tracer that dies: this test's binary, as parkHelper.
	helper := exec.Command(os.Args[0], "-test.run=^$")
	helper.Env = append(os.Environ(), fmt.Sprintf("CRYO_PARK_HELPER=%d", pid))
	hout, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	helper.Stderr = os.Stderr
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	line := make([]byte, 7)
	if _, err := io.ReadFull(hout, line); err != nil || string(line) != "parked\n" {
		helper.Process.Kill()
		helper.Wait()
		t.Fatalf("park helper: %q, %v", line, err)
	}
	helper.Process.Kill()
	helper.Wait()
	for deadline := time.Now().Add(10 * time.Second); sigLine(status(), "TracerPid") != "0" || syscallOf() != "0"; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the shell, its tracer dead, is not back in its read: syscall %s, tracer %s", syscallOf(), sigLine(status(), "TracerPid"))
		}
	}
	if a, b := sigLine(before, "SigBlk"), sigLine(status(), "SigBlk"); a != b {
		t.Errorf("signal mask once the tracer died: %s, before %s", b, a)
	}
	if _, err := in.Write([]byte("hi\n")); err != nil {
		t.Fatal(err)
	}
	in.Close()
	waited = true
	if err := sh.Wait(); err != nil || out.String() != "got hi\n" {
		t.Errorf("the shell after a park its tracer died in: %v, printed %q", err, out.String())
	}
}

// parkable seizes the one thread of process pid as a borrowed task with
// the return trampoline in its [vdso], as dump does. Call it on a locked
// OS thread.
func parkable(pid int) (*Task, *Trampoline, error) {
	pt, err := ptrace.Seize(pid, kabi.PTRACE_O_TRACESYSGOOD)
	if err != nil {
		return nil, nil, err
	}
	pt.QuietSignals = true
	bt := Borrowed(pt, pid)
	maps, err := procfs.SmapsPid(pid)
	if err != nil {
		return nil, nil, errors.Join(err, pt.Release())
	}
	for _, m := range maps {
		if m.Kind != procfs.KindVdso {
			continue
		}
		b := make([]byte, m.Len())
		if err := ptrace.ReadMem(pid, m.Start, b); err != nil {
			return nil, nil, errors.Join(err, pt.Release())
		}
		bt.SetSyscallIP(m.Start+uint64(bytes.Index(b, []byte{0x0f, 0x05})), false)
		tr, err := InstallTrampoline(pid, m.Start, b)
		if err != nil {
			return nil, nil, errors.Join(err, pt.Release())
		}
		bt.UseTrampoline(tr)
		return bt, tr, nil
	}
	return nil, nil, errors.Join(errors.New("no [vdso]"), pt.Release())
}

// parkHelper is the tracer TestPark kills: it parks pid for 200 ms, says
// so, and waits for its SIGKILL.
func parkHelper(pid int) {
	runtime.LockOSThread()
	bt, _, err := parkable(pid)
	if err == nil {
		err = bt.Park(200 * time.Millisecond)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "park helper:", err)
		os.Exit(1)
	}
	os.Stdout.WriteString("parked\n")
	select {}
}

func sigLine(status []byte, key string) string {
	for _, l := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(l, key+":") {
			return strings.TrimSpace(strings.TrimPrefix(l, key+":"))
		}
	}
	return ""
}
