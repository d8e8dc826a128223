package restore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/kabi"
	"github.com/cryo-project/cryo/internal/ptrace"
	"github.com/cryo-project/cryo/internal/stub"
)

// Scratch layout: one RWX anonymous mapping that holds the syscall
// instruction used for injection and room for the arguments of the syscall
// being injected. It is the only mapping of the child that is not the
// image's, and it goes last.
const (
	scratchSize = 64 << 10
	scratchData = 0x100 // arguments start here; the instruction is at 0
	stubSpan    = 0x1000
)

// child is the process being built, seen through its leader.
type child struct {
	pid     int
	log     *slog.Logger
	leader  *ptrace.Task
	threads []*ptrace.Task // leader first
	scratch uint64
	cursor  uint64 // next free byte of the scratch data area
	// handedOn are the capabilities a non-root cryo gave the stub as
	// ambient ones (see caps.go): the process must not keep them.
	handedOn uint64
}

// arg copies b into the scratch area and returns its address in the child.
// The area is reset after each injected call.
func (c *child) arg(b []byte) (uint64, error) {
	addr := c.scratch + scratchData + c.cursor
	if c.cursor+uint64(len(b)) > scratchSize-scratchData {
		return 0, fmt.Errorf("injected syscall arguments exceed the %d-byte scratch area", scratchSize)
	}
	if err := ptrace.WriteMem(c.pid, addr, b); err != nil {
		return 0, err
	}
	c.cursor += (uint64(len(b)) + 15) &^ 15
	return addr, nil
}

func (c *child) str(s string) (uint64, error) { return c.arg(append([]byte(s), 0)) }

// call injects into t and resets the scratch cursor.
func (c *child) call(t *ptrace.Task, name string, nr uintptr, args ...uint64) (uint64, error) {
	defer func() { c.cursor = 0 }()
	return t.Call(name, nr, args...)
}

// out reads n bytes the last call wrote at addr.
func (c *child) out(addr uint64, n int) ([]byte, error) {
	b := make([]byte, n)
	return b, ptrace.ReadMem(c.pid, addr, b)
}

// chooseBase picks page-aligned addresses for the stub and the scratch area
// that no VMA of the image uses, low in the address space where the kernel
// puts nothing of the stub's own (its stack and vdso are near the top).
func chooseBase(vmas [][2]uint64) (uint64, error) {
	need := uint64(stubSpan + 0x10000 + scratchSize + 0x10000)
	sort.Slice(vmas, func(i, j int) bool { return vmas[i][0] < vmas[j][0] })
	lo := uint64(0x10000)
	for _, v := range vmas {
		if v[0] >= lo+need {
			break
		}
		if v[1] > lo {
			lo = (v[1] + 0x10000 + 0xffff) &^ 0xffff
		}
	}
	if lo+need > 0x7f0000000000 {
		return 0, fmt.Errorf("no free range of %d bytes for the restore stub", need)
	}
	return lo, nil
}

// birth starts the stub, has it fork a child with the dumped pid, and
// returns that child stopped under ptrace. The stub is killed: cryo being
// a child subreaper, the new process becomes cryo's child.
func birth(pid int, base uint64, log *slog.Logger) (*child, error) {
	if handed, err := stub.HandOn(); err != nil {
		return nil, err
	} else if handed == 0 && os.Geteuid() != 0 {
		return nil, errNoCapability()
	}
	sp, err := stub.Start(base, "cryo-restore-stub")
	if err != nil {
		return nil, err
	}
	stubPid := sp.Pid
	killStub := sp.Kill
	opts := kabi.PTRACE_O_TRACESYSGOOD | kabi.PTRACE_O_TRACEFORK | kabi.PTRACE_O_TRACECLONE | kabi.PTRACE_O_EXITKILL
	st, err := ptrace.Seize(stubPid, opts|suspendSeccomp)
	if err != nil && errors.Is(err, unix.EPERM) {
		st, err = ptrace.Seize(stubPid, opts)
	}
	if err != nil {
		killStub()
		return nil, fmt.Errorf("seize stub: %w", seizeHint(err))
	}
	defer killStub()
	st.SyscallIP = base + stub.SyscallOffset
	st.Scratch = true
	scratch := base + stubSpan + 0x10000
	c := &child{pid: pid, log: log, scratch: scratch, handedOn: sp.Handed}
	if _, err := st.Call("mmap scratch", unix.SYS_MMAP, scratch, scratchSize,
		unix.PROT_READ|unix.PROT_WRITE|unix.PROT_EXEC, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|kabi.MAP_FIXED_NOREPLACE, ^uint64(0), 0); err != nil {
		return nil, err
	}
	// syscall; int3: an injection through it takes one ptrace stop.
	if err := ptrace.WriteMem(stubPid, scratch, []byte{0x0f, 0x05, 0xcc}); err != nil {
		return nil, err
	}
	var tid [8]byte
	binary.LittleEndian.PutUint64(tid[:], uint64(pid))
	tidAddr := scratch + scratchData
	if err := ptrace.WriteMem(stubPid, tidAddr, tid[:4]); err != nil {
		return nil, err
	}
	args := kabi.CloneArgs{ExitSignal: uint64(unix.SIGCHLD), SetTid: tidAddr, SetTidSize: 1}
	argsAddr := tidAddr + 16
	if err := ptrace.WriteMem(stubPid, argsAddr, kabi.Bytes(&args)); err != nil {
		return nil, err
	}
	ret, err := st.Syscall(unix.SYS_CLONE3, argsAddr, uint64(len(kabi.Bytes(&args))))
	if err != nil {
		return nil, fmt.Errorf("clone3 in stub: %w", err)
	}
	if err := ptrace.Errno(ret); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("%w (taken between the check and the restore)", pidFree(pid))
		}
		if errors.Is(err, unix.EPERM) {
			return nil, fmt.Errorf("clone3 with set_tid %d: %w (needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN in the stub, which cryo hands on as an ambient capability; see docs/nonroot.md)", pid, err)
		}
		return nil, fmt.Errorf("clone3 with set_tid %d: %w", pid, err)
	}
	if int(ret) != pid {
		unix.Kill(int(ret), unix.SIGKILL)
		return nil, fmt.Errorf("clone3 gave pid %d, wanted %d", ret, pid)
	}
	t, err := ptrace.Attached(pid)
	if err != nil {
		unix.Kill(pid, unix.SIGKILL)
		return nil, fmt.Errorf("new process %d: %w", pid, err)
	}
	c.log.Debug("process born", "pid", pid)
	t.SyscallIP, t.Trap, t.Scratch = scratch, true, true
	c.leader = t
	c.threads = []*ptrace.Task{t}
	// Nothing of the program's may run before its state is whole.
	if err := kabi.SetSigmask(pid, ^uint64(0)); err != nil {
		c.kill()
		return nil, fmt.Errorf("block signals of %d: %w", pid, err)
	}
	return c, nil
}

// suspendSeccomp (PTRACE_O_SUSPEND_SECCOMP) keeps restored seccomp filters
// from judging the injections that follow them. It needs CAP_SYS_ADMIN.
const suspendSeccomp = 1 << 21

// kill ends the half-built process by pid and reaps its threads.
func (c *child) kill() {
	tids := make([]int, len(c.threads))
	for i, t := range c.threads {
		tids[i] = t.Tid
	}
	if err := ptrace.Kill(c.pid, tids...); err != nil {
		c.log.Warn("kill half-built process", "pid", c.pid, "err", err)
	}
}
