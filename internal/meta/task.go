package meta

// Task is what cryo records of one thread (a process's leader carries its
// process's part too) that CRIU's core entry has no field for. Every field's
// zero value is the state a thread has when nothing set it, so that an entry
// that is missing restores as such a thread.
type Task struct {
	// Report is, for a process whose parent is in the tree, the wait report
	// the parent had not collected yet: "stopped" (waitpid with WUNTRACED
	// would return the stop) or "continued" (WCONTINUED would return the
	// continue); empty if none.
	Report string `json:"report,omitempty"`
	// SessionID is the audit session id (/proc/PID/sessionid); nil if the
	// kernel shows none.
	SessionID *uint32 `json:"sessionid,omitempty"`
	// Sched is what sched_getattr shows beyond CRIU's policy, nice and
	// priority; nil if it is all at its defaults.
	Sched *Sched `json:"sched,omitempty"`
	// Affinity is the CPU affinity mask, 64 CPUs a word, trailing zero
	// words left out; nil: not recorded, the thread keeps what it inherits.
	Affinity []uint64 `json:"affinity,omitempty"`
	// Ioprio is what ioprio_get(IOPRIO_WHO_PROCESS) shows; 0 is a thread
	// that never had an I/O context, IOPRIO_CLASS_NONE.
	Ioprio int `json:"ioprio,omitempty"`
	// TimerSlack is the thread's timer slack and DefaultTimerSlack the
	// value that PR_SET_TIMERSLACK(0) goes back to (its parent's slack when
	// it was created), in ns; nil: not recorded.
	TimerSlack        *uint64 `json:"timer_slack_ns,omitempty"`
	DefaultTimerSlack *uint64 `json:"default_timer_slack_ns,omitempty"`
	// MCEKill is the machine-check kill policy PR_MCE_KILL_GET shows:
	// "early" or "late" if the thread set one, empty for the system's.
	MCEKill string `json:"mce_kill,omitempty"`
	// IOFlusher is PR_GET_IO_FLUSHER (PF_MEMALLOC_NOIO|PF_LOCAL_THROTTLE).
	IOFlusher bool `json:"io_flusher,omitempty"`
	// MDWE is PR_GET_MDWE, the process's memory-deny-write-execute flags
	// (leaders only).
	MDWE uint64 `json:"mdwe,omitempty"`
	// Mlockall is what mlockall left for the mappings made later
	// (MCL_FUTURE, with MCL_ONFAULT), found by a probe mapping (leaders
	// only); 0: none.
	Mlockall int `json:"mlockall,omitempty"`
	// ExitSignal is the signal the process's parent gets when it exits
	// (clone's exit signal, /proc/PID/stat field 38; leaders and zombies
	// only); nil: SIGCHLD.
	ExitSignal *int `json:"exit_signal,omitempty"`
	// ParentTid is, for a process or zombie whose parent is in the tree,
	// the thread of the parent that is its parent (the one that forked it,
	// /proc/PID/task/TID/children); nil: the parent's leader.
	ParentTid *int `json:"parent_tid,omitempty"`
	// ZombieIgnored and ZombieCaught are, for a zombie, the signals it
	// ignored and those it had handlers for, as /proc shows them (nothing
	// can ask a zombie for the handlers themselves).
	ZombieIgnored uint64 `json:"zombie_sig_ign,omitempty"`
	ZombieCaught  uint64 `json:"zombie_sig_cgt,omitempty"`
}

// Sched is the part of struct sched_attr that CRIU's thread_core_entry
// lacks.
type Sched struct {
	// Runtime is sched_runtime: for SCHED_OTHER and SCHED_BATCH the time
	// slice the thread asked for (EEVDF's custom slice); 0 if it asked for
	// none.
	Runtime uint64 `json:"runtime,omitempty"`
	// UtilMin and UtilMax are the utilization clamps (uclamp) the thread
	// asked for; nil if it did not.
	UtilMin *uint32 `json:"util_min,omitempty"`
	UtilMax *uint32 `json:"util_max,omitempty"`
}
