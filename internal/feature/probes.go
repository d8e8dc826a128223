package feature

// The probes, one variable each so that dump and restore can consult the
// very probe `cryo check` prints (feature.PagemapScan.Check()).
var (
	PtraceSeize = &Probe{Name: "ptrace_seize", MinKernel: "3.4", Required: ForDump | ForRestore,
		Description: "PTRACE_SEIZE + PTRACE_INTERRUPT of a child",
		NeededFor:   "freezing every thread (dump), driving the restore stub",
		fn:          probePtraceSeize}
	PtraceXstate = &Probe{Name: "ptrace_getregset_xstate", MinKernel: "2.6.38", Required: ForDump | ForRestore,
		Description: "PTRACE_GETREGSET/SETREGSET with NT_X86_XSTATE",
		NeededFor:   "FPU/AVX registers of every thread",
		fn:          probeXstate}
	PtraceSigmask = &Probe{Name: "ptrace_sigmask", MinKernel: "3.11", Required: ForDump | ForRestore,
		Description: "PTRACE_GETSIGMASK/SETSIGMASK",
		NeededFor:   "blocked-signal masks of threads",
		fn:          probeSigmask}
	PtracePeekSiginfo = &Probe{Name: "ptrace_peeksiginfo", MinKernel: "3.10", Required: ForDump,
		Description: "PTRACE_PEEKSIGINFO of a queued signal",
		NeededFor:   "dump of pending signals",
		fn:          probePeekSiginfo}
	PtraceRseqConfig = &Probe{Name: "ptrace_rseq_config", MinKernel: "5.13", Required: ForDump,
		Description: "PTRACE_GET_RSEQ_CONFIGURATION of a registered rseq",
		NeededFor:   "dump of threads with rseq (every glibc ≥ 2.35 program)",
		fn:          probeRseqConfig}
	PtraceSeccompFilter = &Probe{Name: "ptrace_seccomp_filter", MinKernel: "4.4", Config: "CONFIG_SECCOMP_FILTER, CONFIG_CHECKPOINT_RESTORE",
		Description: "PTRACE_SECCOMP_GET_FILTER of an installed filter",
		NeededFor:   "dump of processes under seccomp",
		fn:          probeSeccompFilter}
	PtraceSuspendSeccomp = &Probe{Name: "ptrace_suspend_seccomp", MinKernel: "4.3", Config: "CONFIG_SECCOMP, CONFIG_CHECKPOINT_RESTORE",
		Description: "PTRACE_O_SUSPEND_SECCOMP",
		NeededFor:   "injecting syscalls into seccomp'd processes (dump and restore)",
		fn:          probeSuspendSeccomp}
	ProcessVMReadv = &Probe{Name: "process_vm_readv", MinKernel: "3.2", Required: ForDump,
		Description: "process_vm_readv of a child's code",
		NeededFor:   "reading memory pages (dump)",
		fn:          probeProcessVMReadv}
	ProcessVMWritev = &Probe{Name: "process_vm_writev", MinKernel: "3.2", Required: ForRestore,
		Description: "process_vm_writev into a child",
		NeededFor:   "filling memory and syscall arguments (restore)",
		fn:          probeProcessVMWritev}
	PidfdGetfd = &Probe{Name: "pidfd_getfd", MinKernel: "5.6",
		Description: "pidfd_open + pidfd_getfd of a child's fd",
		NeededFor:   "taking a copy of a target's file descriptors from outside",
		fn:          probePidfdGetfd}
	Kcmp = &Probe{Name: "kcmp", MinKernel: "3.5", Config: "CONFIG_KCMP", Required: ForDump,
		Description: "kcmp(KCMP_FILE) on a shared and an unshared file",
		NeededFor:   "finding fds that share one open file",
		fn:          probeKcmp}
	MapFiles = &Probe{Name: "map_files", MinKernel: "3.3", Required: ForDump,
		Description: "open /proc/self/map_files/<range> of a memfd mapping",
		NeededFor:   "dump of memfd, shared and deleted-file mappings",
		fn:          probeMapFiles}
	PagemapScan = &Probe{Name: "pagemap_scan", MinKernel: "6.7",
		Description: "ioctl(PAGEMAP_SCAN) for present pages",
		NeededFor:   "fast scan of populated pages (else /proc/PID/pagemap is read)",
		fn:          probePagemapScan}
	UffdWPAsync = &Probe{Name: "uffd_wp_async", MinKernel: "6.7", Config: "CONFIG_USERFAULTFD",
		Description: "userfaultfd UFFD_FEATURE_WP_ASYNC + PAGEMAP_SCAN written pages",
		NeededFor:   "incremental dumps (pre-dump) without soft-dirty",
		fn:          probeUffdWPAsync}
	SoftDirty = &Probe{Name: "soft_dirty", MinKernel: "3.11", Config: "CONFIG_MEM_SOFT_DIRTY",
		Description: "clear_refs 4, then pagemap bit 55 of a written page",
		NeededFor:   "CRIU-style pre-dump (cryo uses uffd_wp_async instead)",
		fn:          probeSoftDirty}
	Clone3SetTid = &Probe{Name: "clone3_set_tid", MinKernel: "5.5", Required: ForRestore,
		Description: "clone3 with set_tid in a stub makes the chosen pid",
		NeededFor:   "restore of pids and tids",
		fn:          probeClone3SetTid}
	MmMap = &Probe{Name: "prctl_mm_map", MinKernel: "3.18", Config: "CONFIG_CHECKPOINT_RESTORE", Required: ForRestore,
		Description: "prctl(PR_SET_MM, PR_SET_MM_MAP_SIZE)",
		NeededFor:   "restore of mm bounds, auxv and the exe link",
		fn:          probeMmMap}
	ArchMapVdso = &Probe{Name: "arch_map_vdso", MinKernel: "4.9", Required: ForRestore,
		Description: "arch_prctl(ARCH_MAP_VDSO_64) in a stub whose vdso was unmapped",
		NeededFor:   "restore of [vdso]/[vvar] at the dumped address",
		fn:          probeMapVdso}
	TimerRestoreIDs = &Probe{Name: "timer_restore_ids", MinKernel: "6.15",
		Description: "prctl(PR_TIMER_CREATE_RESTORE_IDS, GET)",
		NeededFor:   "restore of POSIX timers with their ids",
		fn:          probeTimerRestoreIDs}
	TimerfdTicks = &Probe{Name: "timerfd_set_ticks", MinKernel: "3.17", Config: "CONFIG_CHECKPOINT_RESTORE",
		Description: "ioctl(TFD_IOC_SET_TICKS) on a timerfd, read back",
		NeededFor:   "restore of timerfds with expirations not read yet",
		fn:          probeTimerfdTicks}
	MsgCopy = &Probe{Name: "msg_copy", MinKernel: "3.8", Config: "CONFIG_CHECKPOINT_RESTORE, CONFIG_SYSVIPC",
		Description: "msgrcv(MSG_COPY) of a System V message, left queued",
		NeededFor:   "dump of System V message queues holding messages",
		fn:          probeMsgCopy}
	Memfd = &Probe{Name: "memfd_create", MinKernel: "3.17", Required: ForRestore,
		Description: "memfd_create (and vm.memfd_noexec allows exec)",
		NeededFor:   "starting the restore stub, restore of memfds",
		fn:          probeMemfd}
	CloseRange = &Probe{Name: "close_range", MinKernel: "5.9",
		Description: "close_range of one fd",
		NeededFor:   "closing a stub's inherited fds in one call",
		fn:          probeCloseRange}
	Rseq = &Probe{Name: "rseq", MinKernel: "4.18", Config: "CONFIG_RSEQ", Required: ForRestore,
		Description: "rseq register + unregister in a stub",
		NeededFor:   "restore of threads with rseq",
		fn:          probeRseq}
	PtraceScope = &Probe{Name: "ptrace_scope", Required: ForDump,
		Description: "kernel.yama.ptrace_scope and what it allows",
		NeededFor:   "tracing processes that are not cryo's children",
		fn:          probePtraceScope}
	NsLastPid = &Probe{Name: "ns_last_pid", MinKernel: "3.3", Config: "CONFIG_CHECKPOINT_RESTORE",
		Description: "write kernel.ns_last_pid (its own value, under flock)",
		NeededFor:   "choosing pids where clone3 set_tid is missing",
		fn:          probeNsLastPid}
	PidMax = &Probe{Name: "pid_max",
		Description: "kernel.pid_max",
		NeededFor:   "restore of high pids",
		fn:          probePidMax}
	NFTablesLock = &Probe{Name: "nftables_lock", MinKernel: "4.1", Config: "CONFIG_NF_TABLES, CONFIG_NF_TABLES_INET",
		Description: "create and delete an nftables table of 4-tuple sets hooked at input and output, over netlink",
		NeededFor:   "locking TCP connections while their tree is dumped (--network-lock nftables|iptables)",
		fn:          probeNetlock}
	Capabilities = &Probe{Name: "capabilities", Required: ForDump | ForRestore,
		Description: "cryo's capability sets and file capabilities",
		NeededFor:   "map_files, set_tid, seccomp, other users' processes",
		fn:          probeCapabilities}
)

// Probes lists every probe in the order `cryo check` prints them.
var Probes = []*Probe{
	PtraceSeize, PtraceXstate, PtraceSigmask, PtracePeekSiginfo, PtraceRseqConfig,
	PtraceSeccompFilter, PtraceSuspendSeccomp,
	ProcessVMReadv, ProcessVMWritev, PidfdGetfd, Kcmp, MapFiles, PagemapScan, UffdWPAsync, SoftDirty,
	Clone3SetTid, MmMap, ArchMapVdso, TimerRestoreIDs, TimerfdTicks, MsgCopy, Memfd, CloseRange, Rseq,
	PtraceScope, NsLastPid, PidMax, NFTablesLock, Capabilities,
}
