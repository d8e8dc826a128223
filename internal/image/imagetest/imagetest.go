// Package imagetest writes a small, synthetic but complete image directory
// for the tests of packages that read images (image, show, restore). It
// holds two processes: "counter" (pid 412, threads 412 and 413) and its
// child "worker" (pid 415). It also finds crit, CRIU's decoder, for the
// tests that check cryo's images against it.
package imagetest

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	core_x86 "github.com/checkpoint-restore/go-criu/v8/crit/images/core-x86"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/creds"
	criu_core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	criu_sa "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-sa"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fown"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fs"
	ghost_file "github.com/checkpoint-restore/go-criu/v8/crit/images/ghost-file"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/inventory"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/mm"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pipe"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pstree"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/regfile"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/siginfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/stats"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"
	"google.golang.org/protobuf/proto"

	"github.com/cryo-project/cryo/internal/image"
)

// Page contents of the sample: page i of process pid is filled with the
// byte PageByte(pid, i), so a reader can check what it got.
func PageByte(pid uint32, i int) byte { return byte(pid) + byte(i) }

// Pagemap of the sample's pid 412: VAddr is where the pages go, Pages how
// many (4 KiB each). Process 415 has one entry at 0x400000, 1 page.
var Pagemap412 = []struct{ VAddr, Pages uint64 }{
	{0x400000, 2},
	{0x1a2b000, 3},
	{0x7ffd1000, 1},
}

// GhostContents is the contents of the sample's ghost file (id 9): 20 KiB,
// so it is written in chunks.
var GhostContents = bytes.Repeat([]byte("ghost!\n"), 20<<10/7)

// Files written by Write, with their magics; pages-1.img and pages-2.img
// are raw.
var Files = map[string]string{
	"inventory.img":    "INVENTORY",
	"pstree.img":       "PSTREE",
	"core-412.img":     "CORE",
	"core-413.img":     "CORE",
	"core-415.img":     "CORE",
	"mm-412.img":       "MM",
	"mm-415.img":       "MM",
	"pagemap-412.img":  "PAGEMAP",
	"pagemap-415.img":  "PAGEMAP",
	"files.img":        "FILES",
	"fdinfo-2.img":     "FDINFO",
	"fdinfo-6.img":     "FDINFO",
	"fs-412.img":       "FS",
	"fs-415.img":       "FS",
	"stats-dump":       "STATS",
	"ghost-file-9.img": "GHOST_FILE",
}

// Write writes the sample image into dir (which may not exist) and commits
// it. It fails t on any error.
func Write(t testing.TB, dir string) {
	t.Helper()
	d, err := image.Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	ok := false
	defer func() {
		if !ok {
			d.Abort()
		}
	}()
	one := func(name, magic string, ms ...proto.Message) {
		t.Helper()
		w, err := d.Create(name, magic)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range ms {
			if err := w.Write(m); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}

	// The root's ppid is 0, as CRIU writes it: its parent is not in the tree.
	one("pstree.img", "PSTREE",
		&pstree.PstreeEntry{Pid: u32(412), Ppid: u32(0), Pgid: u32(412), Sid: u32(300), Threads: []uint32{412, 413}},
		&pstree.PstreeEntry{Pid: u32(415), Ppid: u32(412), Pgid: u32(412), Sid: u32(300), Threads: []uint32{415}},
	)
	one("core-412.img", "CORE", leaderCore("counter", 412, 0x401136, 0x7ffd1ff0, 1<<(syscall.SIGUSR1-1), 1, true))
	one("core-413.img", "CORE", threadCore(413, 0x7f3a1c0e2a1d, 0x7f3a1b7fee40, 0, 0))
	one("core-415.img", "CORE", leaderCore("worker", 415, 0x4011f0, 0x7ffe0ff8, 0, 0, false))

	one("mm-412.img", "MM", &mm.MmEntry{
		MmStartCode: u64(0x400000), MmEndCode: u64(0x402000), MmStartData: u64(0x403000), MmEndData: u64(0x404000),
		MmStartStack: u64(0x7ffd1ff0), MmStartBrk: u64(0x1a2b000), MmBrk: u64(0x1a4c000),
		MmArgStart: u64(0x7ffd1f00), MmArgEnd: u64(0x7ffd1f10), MmEnvStart: u64(0x7ffd1f10), MmEnvEnd: u64(0x7ffd1fe0),
		ExeFileId: u32(5),
		Vmas: []*vma.VmaEntry{
			vmaEntry(0x400000, 0x402000, 5, protR|protX, mapPrivate, vmaRegular|vmaFilePrivate),
			vmaEntry(0x403000, 0x404000, 5, protR|protW, mapPrivate, vmaRegular|vmaFilePrivate),
			vmaEntry(0x1a2b000, 0x1a4c000, 0, protR|protW, mapPrivate|mapAnon, vmaRegular|vmaAnonPrivate|vmaHeap),
			vmaEntry(0x7f3a00000000, 0x7f3a40000000, 0, protR|protW, mapShared|mapAnon, vmaRegular|vmaAnonShared),
			vmaEntry(0x7ffd0000000, 0x7ffd1000000, 0, 0, mapPrivate|mapAnon, vmaRegular|vmaAnonPrivate),
			vmaEntry(0x7ffd1000, 0x7ffd2000, 0, protR|protW, mapPrivate|mapAnon|mapGrowsdown, vmaRegular|vmaAnonPrivate|vmaStack),
			vmaEntry(0x7ffd3000, 0x7ffd5000, 0, protR|protX, mapPrivate|mapAnon, vmaRegular|vmaVDSO),
		},
	})
	one("mm-415.img", "MM", &mm.MmEntry{
		MmStartCode: u64(0x400000), MmEndCode: u64(0x401000), MmStartData: u64(0), MmEndData: u64(0),
		MmStartStack: u64(0x7ffe0ff8), MmStartBrk: u64(0x600000), MmBrk: u64(0x600000),
		MmArgStart: u64(0), MmArgEnd: u64(0), MmEnvStart: u64(0), MmEnvEnd: u64(0),
		ExeFileId: u32(8),
		Vmas: []*vma.VmaEntry{
			vmaEntry(0x400000, 0x401000, 8, protR|protX, mapPrivate, vmaRegular|vmaFilePrivate),
		},
	})

	writePages := func(pid, pagesID uint32, entries []struct{ VAddr, Pages uint64 }) {
		ms := []proto.Message{&pagemap.PagemapHead{PagesId: u32(pagesID)}}
		pw, err := d.CreatePages(pagesID)
		if err != nil {
			t.Fatal(err)
		}
		i := 0
		for _, e := range entries {
			ms = append(ms, &pagemap.PagemapEntry{Vaddr: u64(e.VAddr), CompatNrPages: u32(uint32(e.Pages)), NrPages: u64(e.Pages), Flags: u32(pePresent)})
			for range e.Pages {
				if _, err := pw.Write(bytes.Repeat([]byte{PageByte(pid, i)}, 4096)); err != nil {
					t.Fatal(err)
				}
				i++
			}
		}
		if err := pw.Close(); err != nil {
			t.Fatal(err)
		}
		one("pagemap-"+itoa(pid)+".img", "PAGEMAP", ms...)
	}
	writePages(412, 1, Pagemap412)
	writePages(415, 2, []struct{ VAddr, Pages uint64 }{{0x400000, 1}})

	fo := func() *fown.FownEntry {
		return &fown.FownEntry{Uid: u32(1000), Euid: u32(1000), Signum: u32(0), PidType: u32(0), Pid: u32(0)}
	}
	reg := func(id uint32, name string, flags uint32, pos uint64) *fdinfo.FileEntry {
		return &fdinfo.FileEntry{Type: fdinfo.FdTypes_REG.Enum(), Id: u32(id), Reg: &regfile.RegFileEntry{
			Id: u32(id), Flags: u32(flags), Pos: u64(pos), Fown: fo(), Name: proto.String(name),
		}}
	}
	one("files.img", "FILES",
		reg(1, "/dev/pts/3", syscall.O_RDWR, 0),
		reg(3, "/home/user/counter.log", syscall.O_WRONLY|syscall.O_APPEND, 12345),
		reg(4, "/home/user", syscall.O_RDONLY|syscall.O_DIRECTORY, 0),
		reg(5, "/usr/local/bin/counter", syscall.O_RDONLY, 0),
		reg(7, "/tmp/scratch (deleted)", syscall.O_RDWR, 20<<10),
		reg(8, "/usr/local/bin/worker", syscall.O_RDONLY, 0),
		&fdinfo.FileEntry{Type: fdinfo.FdTypes_PIPE.Enum(), Id: u32(10), Pipe: &pipe.PipeEntry{
			Id: u32(10), PipeId: u32(123456), Flags: u32(syscall.O_WRONLY), Fown: fo(),
		}},
		&fdinfo.FileEntry{Type: fdinfo.FdTypes_PIPE.Enum(), Id: u32(11), Pipe: &pipe.PipeEntry{
			Id: u32(11), PipeId: u32(123456), Flags: u32(syscall.O_RDONLY), Fown: fo(),
		}},
	)
	fd := func(n, id uint32, typ fdinfo.FdTypes, flags uint32) *fdinfo.FdinfoEntry {
		return &fdinfo.FdinfoEntry{Fd: u32(n), Id: u32(id), Type: typ.Enum(), Flags: u32(flags)}
	}
	one("fdinfo-2.img", "FDINFO",
		fd(0, 1, fdinfo.FdTypes_REG, 0),
		fd(1, 1, fdinfo.FdTypes_REG, 0),
		fd(2, 1, fdinfo.FdTypes_REG, 0),
		fd(3, 3, fdinfo.FdTypes_REG, syscall.FD_CLOEXEC),
		fd(4, 7, fdinfo.FdTypes_REG, 0),
		fd(5, 10, fdinfo.FdTypes_PIPE, 0),
	)
	one("fdinfo-6.img", "FDINFO",
		fd(0, 11, fdinfo.FdTypes_PIPE, 0),
		fd(1, 1, fdinfo.FdTypes_REG, 0),
		fd(2, 1, fdinfo.FdTypes_REG, 0),
	)
	one("fs-412.img", "FS", &fs.FsEntry{CwdId: u32(4), RootId: u32(4), Umask: u32(0o22)})
	one("fs-415.img", "FS", &fs.FsEntry{CwdId: u32(4), RootId: u32(4), Umask: u32(0o22)})
	one("stats-dump", "STATS", &stats.StatsEntry{Dump: &stats.DumpStatsEntry{
		FreezingTime: u32(112), FrozenTime: u32(5230), MemdumpTime: u32(3100), MemwriteTime: u32(2800),
		PagesScanned: u64(70000), PagesSkippedParent: u64(0), PagesWritten: u64(7), PagesLazy: u64(0),
	}})

	src := filepath.Join(t.TempDir(), "ghost")
	if err := os.WriteFile(src, GhostContents, 0o600); err != nil {
		t.Fatal(err)
	}
	gf, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer gf.Close()
	if err := d.WriteGhostFile(9, &ghost_file.GhostFileEntry{
		Uid: u32(1000), Gid: u32(1000), Mode: u32(syscall.S_IFREG | 0o644),
	}, gf); err != nil {
		t.Fatal(err)
	}

	one("inventory.img", "INVENTORY", &inventory.InventoryEntry{
		ImgVersion:  u32(2),
		FdinfoPerId: proto.Bool(true),
		RootIds:     &criu_core.TaskKobjIdsEntry{VmId: u32(1), FilesId: u32(2), FsId: u32(3), SighandId: u32(4)},
		Lsmtype:     inventory.Lsmtype_NO_LSM.Enum(),
		DumpUptime:  u64(123456789),
	})
	if err := d.Commit(); err != nil {
		t.Fatal(err)
	}
	ok = true
}

// Flag values from CRIU's include/image.h and the kernel's mman.h, which the
// vma_entry fields carry verbatim.
const (
	protR = 0x1
	protW = 0x2
	protX = 0x4

	mapShared    = 0x01
	mapPrivate   = 0x02
	mapAnon      = 0x20
	mapGrowsdown = 0x100

	vmaRegular     = 1 << 0
	vmaStack       = 1 << 1
	vmaVDSO        = 1 << 3
	vmaHeap        = 1 << 5
	vmaFilePrivate = 1 << 6
	vmaAnonShared  = 1 << 8
	vmaAnonPrivate = 1 << 9

	pePresent = 1 << 2
)

func vmaEntry(start, end, shmid uint64, prot, flags, status uint32) *vma.VmaEntry {
	return &vma.VmaEntry{Start: u64(start), End: u64(end), Pgoff: u64(0), Shmid: u64(shmid),
		Prot: u32(prot), Flags: u32(flags), Status: u32(status), Fd: proto.Int64(-1)}
}

func threadCore(tid uint32, ip, sp, sigmask uint64, pending int) *criu_core.CoreEntry {
	regs := &core_x86.UserX86RegsEntry{}
	for _, p := range []**uint64{&regs.R15, &regs.R14, &regs.R13, &regs.R12, &regs.Bp, &regs.Bx, &regs.R11, &regs.R10,
		&regs.R9, &regs.R8, &regs.Ax, &regs.Cx, &regs.Dx, &regs.Si, &regs.Di, &regs.OrigAx, &regs.Ip, &regs.Cs,
		&regs.Flags, &regs.Sp, &regs.Ss, &regs.FsBase, &regs.GsBase, &regs.Ds, &regs.Es, &regs.Fs, &regs.Gs} {
		*p = u64(0)
	}
	regs.Ip, regs.Sp, regs.Cs, regs.Ss, regs.Flags = u64(ip), u64(sp), u64(0x33), u64(0x2b), u64(0x246)
	regs.OrigAx = u64(230) // clock_nanosleep
	var sigs []*siginfo.SiginfoEntry
	for range pending {
		sigs = append(sigs, &siginfo.SiginfoEntry{Siginfo: make([]byte, 128)})
	}
	return &criu_core.CoreEntry{
		Mtype: criu_core.CoreEntry_X86_64.Enum(),
		ThreadInfo: &core_x86.ThreadInfoX86{
			ClearTidAddr: u64(0),
			Gpregs:       regs,
			Fpregs: &core_x86.UserX86FpregsEntry{Cwd: u32(0x37f), Swd: u32(0), Twd: u32(0), Fop: u32(0),
				Rip: u64(0), Rdp: u64(0), Mxcsr: u32(0x1f80), MxcsrMask: u32(0xffff)},
		},
		ThreadCore: &criu_core.ThreadCoreEntry{
			FutexRla: u64(0), FutexRlaLen: u32(24), BlkSigset: u64(sigmask),
			SignalsP: &siginfo.SignalQueueEntry{Signals: sigs},
			Creds: &creds.CredsEntry{Uid: u32(1000), Gid: u32(1000), Euid: u32(1000), Egid: u32(1000),
				Suid: u32(1000), Sgid: u32(1000), Fsuid: u32(1000), Fsgid: u32(1000), Secbits: u32(0)},
		},
	}
}

func leaderCore(comm string, tid uint32, ip, sp, sigmask uint64, pending int, handlers bool) *criu_core.CoreEntry {
	c := threadCore(tid, ip, sp, sigmask, pending)
	var sas []*criu_sa.SaEntry
	// CRIU stores SIGMAX-2 actions: SIGKILL and SIGSTOP have none.
	for sig := 1; sig <= 64; sig++ {
		if syscall.Signal(sig) == syscall.SIGKILL || syscall.Signal(sig) == syscall.SIGSTOP {
			continue
		}
		sa := &criu_sa.SaEntry{Sigaction: u64(0), Flags: u64(0), Restorer: u64(0), Mask: u64(0)}
		if handlers {
			switch syscall.Signal(sig) {
			case syscall.SIGINT, syscall.SIGTERM:
				sa.Sigaction, sa.Flags, sa.Restorer = u64(0x401250), u64(0x04000000|0x10000000), u64(0x7f3a1c042520) // SA_RESTORER|SA_RESTART
				sa.Mask = u64(1 << (syscall.SIGTERM - 1))
			case syscall.SIGPIPE:
				sa.Sigaction = u64(1) // SIG_IGN
			}
		}
		sas = append(sas, sa)
	}
	c.Tc = &criu_core.TaskCoreEntry{
		TaskState: u32(1), ExitCode: u32(0), Personality: u32(0), Flags: u32(0x400140),
		BlkSigset: u64(sigmask), Comm: proto.String(comm), Sigactions: sas,
		SignalsS: &siginfo.SignalQueueEntry{},
	}
	c.Ids = &criu_core.TaskKobjIdsEntry{VmId: u32(tid), FilesId: u32(2), FsId: u32(3), SighandId: u32(4)}
	if tid == 415 {
		c.Ids.FilesId = u32(6)
	}
	return c
}

func u32(v uint32) *uint32 { return &v }
func u64(v uint64) *uint64 { return &v }

func itoa(v uint32) string {
	var b [10]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			return string(b[i:])
		}
	}
}
