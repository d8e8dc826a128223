package feature

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/inject"
	"github.com/cryo-project/cryo/internal/kabi"
	"github.com/cryo-project/cryo/internal/procfs"
	"github.com/cryo-project/cryo/internal/ptrace"
)

func probeProcessVMReadv() (string, error) {
	return "", withStub(0, func(s *stubProc) error {
		b := make([]byte, len(s.code))
		n, err := kabi.ProcessVMReadv(s.pid, []kabi.Iovec{kabi.LocalIovec(b)}, []kabi.Iovec{{Base: stubBase, Len: uint64(len(b))}})
		if err != nil {
			return classify("process_vm_readv", err, "", unix.ENOSYS)
		}
		if n != len(b) || !bytes.Equal(b, s.code) {
			return fmt.Errorf("process_vm_readv read %d bytes of the stub's code, not what it runs", n)
		}
		return nil
	})
}

func probeProcessVMWritev() (string, error) {
	return "", withStub(0, func(s *stubProc) error {
		want := []byte("cryo process_vm_writev probe")
		// Into the scratch area's call arena, bypassing Scratch.Put, which
		// is the very call under test.
		at, err := s.Mem.Alloc(len(want), 0)
		if err != nil {
			return err
		}
		n, err := kabi.ProcessVMWritev(s.pid, []kabi.Iovec{kabi.LocalIovec(want)}, []kabi.Iovec{{Base: at, Len: uint64(len(want))}})
		if err != nil {
			return classify("process_vm_writev", err, "", unix.ENOSYS)
		}
		if n != len(want) {
			return fmt.Errorf("process_vm_writev wrote %d of %d bytes", n, len(want))
		}
		// Read back through /proc/PID/mem, not process_vm_readv, so that
		// this probe does not depend on the other.
		m, err := ptrace.OpenMem(s.pid)
		if err != nil {
			return err
		}
		defer m.Close()
		got := make([]byte, len(want))
		if err := m.ReadAt(got, at); err != nil {
			return err
		}
		if !bytes.Equal(got, want) {
			return fmt.Errorf("process_vm_writev wrote %q, the stub holds %q", want, got)
		}
		return nil
	})
}

func probePidfdGetfd() (string, error) {
	return "", withStub(0, func(s *stubProc) error {
		// The helper dump and restore use: its error names the call that
		// failed.
		fd, err := kabi.GetFd(s.pid, 0)
		if err != nil {
			return classify("take fd 0 of the stub", err, "needs PTRACE_MODE_ATTACH on the target", unix.ENOSYS)
		}
		defer unix.Close(fd)
		var got, want unix.Stat_t
		if err := unix.Fstat(fd, &got); err != nil {
			return err
		}
		if err := unix.Stat(os.DevNull, &want); err != nil {
			return err
		}
		if got.Rdev != want.Rdev || got.Ino != want.Ino {
			return fmt.Errorf("pidfd_getfd of the stub's fd 0 is not /dev/null")
		}
		return nil
	})
}

func probeKcmp() (string, error) {
	return "", withStub(0, func(s *stubProc) error {
		// The stub's fds 0 and 1 are one open file (stub.Start passes the
		// same /dev/null as both); another open of /dev/null is another
		// open file description.
		r, err := kabi.Kcmp(s.pid, s.pid, kabi.KCMP_FILE, 0, 1)
		if err != nil {
			return classify("kcmp(KCMP_FILE)", err, "needs PTRACE_MODE_READ on both processes", unix.ENOSYS)
		}
		if r != 0 {
			return fmt.Errorf("kcmp(KCMP_FILE) says a shared open file differs (%d)", r)
		}
		other, err := unix.Open(os.DevNull, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(other)
		if r, err = kabi.Kcmp(s.pid, os.Getpid(), kabi.KCMP_FILE, 0, uintptr(other)); err != nil {
			return fmt.Errorf("kcmp(KCMP_FILE): %w", err)
		}
		if r == 0 {
			return fmt.Errorf("kcmp(KCMP_FILE) says two opens of /dev/null are one open file")
		}
		return nil
	})
}

// freePid picks a pid that no task uses: well above the last one handed
// out, so that the kernel is unlikely to hand it out during the probe.
func freePid(skip int) (int, error) {
	last, err := sysctlInt("kernel.ns_last_pid")
	if err != nil {
		return 0, err
	}
	max, err := sysctlInt("kernel.pid_max")
	if err != nil {
		return 0, err
	}
	lo := 301 // the kernel's RESERVED_PIDS+1: where allocation wraps to
	span := max - lo
	if span <= 0 {
		return 0, fmt.Errorf("pid_max %d leaves no pid to choose", max)
	}
	for i := 0; i < 1000; i++ {
		p := lo + (last-lo+span/3+skip*997+i*7919)%span
		if p <= lo || p >= max {
			continue
		}
		// /proc/<tid> resolves threads too, though readdir does not show them.
		if _, err := os.Stat("/proc/" + strconv.Itoa(p)); errors.Is(err, os.ErrNotExist) {
			return p, nil
		}
	}
	return 0, fmt.Errorf("no free pid found below pid_max %d", max)
}

func probeClone3SetTid() (detail string, err error) {
	err = withStub(kabi.PTRACE_O_TRACEFORK, func(s *stubProc) error {
		for attempt := 0; ; attempt++ {
			pid, err := freePid(attempt)
			if err != nil {
				return err
			}
			var tid [8]byte
			binary.LittleEndian.PutUint32(tid[:], uint32(pid))
			tidAddr, err := s.put(tid[:])
			if err != nil {
				return err
			}
			args := kabi.CloneArgs{ExitSignal: uint64(unix.SIGCHLD), SetTid: tidAddr, SetTidSize: 1}
			argsAddr, err := s.put(kabi.Bytes(&args))
			if err != nil {
				return err
			}
			ret, err := s.call(unix.SYS_CLONE3, argsAddr, uint64(len(kabi.Bytes(&args))))
			if err != nil {
				return fmt.Errorf("clone3 in stub: %w", err)
			}
			err = inject.Errno(ret)
			if errors.Is(err, unix.EEXIST) && attempt < 3 {
				continue // taken meanwhile: choose another
			}
			if err != nil {
				// clone3 itself is 5.3; set_tid (a bigger clone_args) 5.5:
				// E2BIG means the kernel knows clone3 but not set_tid.
				return classify("clone3 with set_tid", err, "needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN in the pid namespace", unix.ENOSYS, unix.E2BIG)
			}
			got := int(ret)
			s.reapChild(got)
			if got != pid {
				return fmt.Errorf("clone3 with set_tid %d made pid %d", pid, got)
			}
			detail = fmt.Sprintf("made pid %d", pid)
			return nil
		}
	})
	return detail, err
}

// reapChild disposes of a child the stub forked under PTRACE_O_TRACEFORK
// (inject.Stub.KillChild), once cryo has seen its first stop.
func (s *stubProc) reapChild(pid int) {
	ptrace.Attached(pid)
	s.KillChild(pid)
}

func probeMmMap() (string, error) {
	size, err := kabi.PrctlMmMapSize()
	if err != nil {
		// Built without CONFIG_CHECKPOINT_RESTORE, PR_SET_MM falls through
		// to the single-field options, which know no MAP_SIZE.
		return "", classify("prctl(PR_SET_MM, PR_SET_MM_MAP_SIZE)", err, "", unix.EINVAL, unix.EPERM)
	}
	if uintptr(size) != uintptr(len(kabi.Bytes(&kabi.PrctlMmMap{}))) {
		return "", fmt.Errorf("struct prctl_mm_map is %d bytes here, cryo's is %d", size, len(kabi.Bytes(&kabi.PrctlMmMap{})))
	}
	return fmt.Sprintf("struct prctl_mm_map %d bytes", size), nil
}

// probeMapVdso unmaps the stub's [vvar], [vvar_vclock] and [vdso] and asks
// the kernel to map them again elsewhere, as restore does. It cannot run in
// cryo itself: Go's time functions call into the vdso.
func probeMapVdso() (detail string, err error) {
	err = withStub(0, func(s *stubProc) error {
		ms, err := procfs.MapsPid(s.pid)
		if err != nil {
			return err
		}
		for _, m := range ms {
			if m.Kind != procfs.KindVdso && m.Kind != procfs.KindVvar && m.Kind != procfs.KindVvarVclock {
				continue
			}
			if _, err := s.Call("munmap "+m.RawPath, unix.SYS_MUNMAP, m.Start, m.Len()); err != nil {
				return err
			}
		}
		at := uint64(stubBase + 0x100000)
		ret, err := s.call(unix.SYS_ARCH_PRCTL, kabi.ARCH_MAP_VDSO_64, at)
		if err != nil {
			return err
		}
		// Success is the vdso's size (positive), not 0.
		if err := inject.Errno(ret); err != nil {
			return classify(fmt.Sprintf("arch_prctl(ARCH_MAP_VDSO_64, %#x)", at), err, "", unix.EINVAL)
		}
		if ms, err = procfs.MapsPid(s.pid); err != nil {
			return err
		}
		for _, m := range ms {
			if m.Kind == procfs.KindVdso {
				if m.Start < at || m.Start >= at+0x100000 {
					return fmt.Errorf("ARCH_MAP_VDSO_64 at %#x put [vdso] at %#x", at, m.Start)
				}
				detail = fmt.Sprintf("[vdso] at +%#x of the address asked", m.Start-at)
				return nil
			}
		}
		return fmt.Errorf("no [vdso] after ARCH_MAP_VDSO_64 (returned %d)", ret)
	})
	return detail, err
}

func probeTimerRestoreIDs() (string, error) {
	// The GET form changes nothing: it reports whether the mode is on.
	on, err := unix.PrctlRetInt(unix.PR_TIMER_CREATE_RESTORE_IDS, unix.PR_TIMER_CREATE_RESTORE_IDS_GET, 0, 0, 0)
	if err != nil {
		return "", classify("prctl(PR_TIMER_CREATE_RESTORE_IDS, GET)", err, "", unix.EINVAL)
	}
	if on != 0 && on != 1 {
		return "", fmt.Errorf("prctl(PR_TIMER_CREATE_RESTORE_IDS, GET) = %d, want 0 or 1", on)
	}
	return "", nil
}

func probeMemfd() (string, error) {
	fd, err := unix.MemfdCreate("cryo-check", unix.MFD_CLOEXEC)
	if err != nil {
		return "", classify("memfd_create", err, "", unix.ENOSYS)
	}
	unix.Close(fd)
	// The restore stub is exec'd from a memfd: vm.memfd_noexec=2 forbids it.
	if v, err := sysctlInt("vm.memfd_noexec"); err == nil && v == 2 {
		return "", fmt.Errorf("%w: vm.memfd_noexec = 2 forbids executing the restore stub from a memfd", ErrNotPermitted)
	}
	return "", nil
}

func probeCloseRange() (string, error) {
	fd, err := unix.Open(os.DevNull, unix.O_RDONLY, 0)
	if err != nil {
		return "", err
	}
	err = unix.CloseRange(uint(fd), uint(fd), 0)
	if err != nil {
		unix.Close(fd)
		return "", classify("close_range", err, "", unix.ENOSYS)
	}
	return "", nil
}

func probeRseq() (string, error) {
	return "", withStub(0, func(s *stubProc) error {
		addr, ret, err := s.registerRseq()
		if err != nil {
			return err
		}
		if err := inject.Errno(ret); err != nil {
			return classify("rseq register", err, "", unix.ENOSYS)
		}
		ret, err = s.call(unix.SYS_RSEQ, addr, kabi.RseqOrigSize, kabi.RSEQ_FLAG_UNREGISTER, kabi.RseqGlibcSignature)
		if err != nil {
			return err
		}
		if err := inject.Errno(ret); err != nil {
			return fmt.Errorf("rseq unregister: %w", err)
		}
		return nil
	})
}

// sysctlInt reads an integer sysctl such as "kernel.pid_max".
func sysctlInt(name string) (int, error) {
	v, err := procfs.SysctlInt(name)
	return int(v), err
}
