package restore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/feature"
	"github.com/cryo-project/cryo/internal/inject"
	"github.com/cryo-project/cryo/internal/kabi"
	"github.com/cryo-project/cryo/internal/ptrace"
	"github.com/cryo-project/cryo/internal/stub"
)

// child is the process being built, seen through its leader. Syscalls run
// in its threads through package inject, with the arguments in the scratch
// area (inject.Scratch): one RWX anonymous mapping that holds the code the
// injections run and room for their arguments. It is the only mapping of
// the child that is not the image's, and it goes last (finish).
type child struct {
	pid     int
	log     *slog.Logger
	leader  *inject.Task
	threads []*inject.Task // leader first
	mem     *inject.Scratch
	scratch uint64 // mem.Addr()
	// handedOn are the capabilities a non-root cryo gave the stub as
	// ambient ones (see caps.go): the process must not keep them.
	handedOn uint64
	// slack is the leader's timer slack, which what it clones gets as
	// its default (see withSlack), and threadSlack the other threads'.
	slack       uint64
	threadSlack map[int]uint64
}

// thread returns the process's thread tid, nil if there is none (yet).
func (c *child) thread(tid int) *inject.Task {
	for _, t := range c.threads {
		if t != nil && t.Tid == tid {
			return t
		}
	}
	return nil
}

// scratchSize is the length of the scratch area.
const scratchSize = inject.ScratchLen

// arg copies b into the scratch area and returns its address in the child,
// good for the next injected call.
func (c *child) arg(b []byte) (uint64, error) { return c.mem.Put(b) }

func (c *child) str(s string) (uint64, error) { return inject.PutString(c.mem, s) }

// call injects into t; the scratch area's arguments are freed after it.
func (c *child) call(t *inject.Task, name string, nr uintptr, args ...uint64) (uint64, error) {
	return t.Call(name, nr, args...)
}

// out reads n bytes the last call wrote at addr.
func (c *child) out(addr uint64, n int) ([]byte, error) { return c.mem.Read(addr, n) }

// batch starts a batch of independent calls in the leader (inject.Batch):
// one ptrace stop for the lot.
func (c *child) batch() *inject.Batch { return c.leader.Batch() }

// chooseBase picks a page-aligned address for the stub that no VMA of the
// image uses, with room for its scratch area (inject.StubSpan), low in the
// address space where the kernel puts nothing of the stub's own (its stack
// and vdso are near the top).
func chooseBase(vmas [][2]uint64) (uint64, error) {
	need := uint64(inject.StubSpan)
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
func birth(ba birthArgs) (*child, error) {
	pid, base, log, files := ba.pid, ba.base, ba.log, ba.files
	if handed, err := stub.HandOn(); err != nil {
		return nil, err
	} else if handed == 0 && os.Geteuid() != 0 {
		return nil, errNoCapability()
	}
	st, err := inject.StartStub(base, inject.StubOptions{
		Name:     "cryo-restore-stub",
		Ptrace:   kabi.PTRACE_O_TRACEFORK | kabi.PTRACE_O_TRACECLONE,
		Optional: suspendSeccomp,
		Files:    files,
	})
	if err != nil {
		return nil, fmt.Errorf("start the restore stub: %w", seizeHint(err))
	}
	defer st.Kill()
	// The stub is cryo's child: it has the slack of cryo's thread.
	slack, err := ownSlack()
	if err != nil {
		return nil, err
	}
	if ba.slack != 0 && ba.slack != slack {
		if _, err := st.Syscall(unix.SYS_PRCTL, unix.PR_SET_TIMERSLACK, ba.slack); err != nil {
			return nil, fmt.Errorf("timer slack of the stub: %w", err)
		}
		slack = ba.slack
	}
	if ba.ns != nil {
		if err := ba.ns.make(st); err != nil {
			return nil, err
		}
	}
	var tid [8]byte
	binary.LittleEndian.PutUint64(tid[:], uint64(pid))
	tidAddr, err := st.Mem.Put(tid[:4])
	if err != nil {
		return nil, err
	}
	args := kabi.CloneArgs{ExitSignal: uint64(ba.exitSignal), SetTid: tidAddr, SetTidSize: 1}
	argsAddr, err := st.Mem.Put(kabi.Bytes(&args))
	if err != nil {
		return nil, err
	}
	ret, err := st.Syscall(unix.SYS_CLONE3, argsAddr, uint64(len(kabi.Bytes(&args))))
	if err != nil {
		return nil, fmt.Errorf("clone3 in stub: %w", err)
	}
	if err := inject.Errno(ret); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("%w (taken between the check and the restore)", pidFree(pid))
		}
		if errors.Is(err, unix.EPERM) {
			return nil, fmt.Errorf("clone3 with set_tid %d: %w (needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN in the stub, which cryo hands on as an ambient capability; see docs/nonroot.md)", pid, err)
		}
		// Say why as `cryo check` would: the kernel may lack set_tid.
		if perr := feature.Clone3SetTid.Check(); perr != nil {
			return nil, fmt.Errorf("clone3 with set_tid %d: %w: %w", pid, err, perr)
		}
		return nil, fmt.Errorf("clone3 with set_tid %d: %w", pid, err)
	}
	if int(ret) != pid {
		st.KillChild(int(ret))
		return nil, fmt.Errorf("clone3 gave pid %d, wanted %d", ret, pid)
	}
	t, err := ptrace.Attached(pid)
	if err != nil {
		st.KillChild(pid)
		return nil, fmt.Errorf("new process %d: %w", pid, err)
	}
	c := &child{pid: pid, log: log, mem: st.Mem.Fork(pid), handedOn: st.Proc.Handed, slack: slack}
	c.scratch = c.mem.Addr()
	c.log.Debug("process born", "pid", pid)
	c.leader = inject.Built(t, c.mem)
	c.threads = []*inject.Task{c.leader}
	// Nothing of the program's may run before its state is whole.
	if err := kabi.SetSigmask(pid, ^uint64(0)); err != nil {
		c.kill()
		return nil, fmt.Errorf("block signals of %d: %w", pid, err)
	}
	return c, nil
}

// ownSlack is the timer slack of the calling thread of cryo's.
func ownSlack() (uint64, error) {
	v, err := unix.PrctlRetInt(unix.PR_GET_TIMERSLACK, 0, 0, 0, 0)
	if err != nil {
		return 0, fmt.Errorf("timer slack of cryo: %w", err)
	}
	return uint64(v), nil
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
