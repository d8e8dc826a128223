package imageset

// CRIU constants that are part of the image format.

// task_core_entry.task_state (criu/include/task-entries.h: TASK_ALIVE,
// TASK_DEAD, TASK_STOPPED).
const (
	TaskAlive   = 1
	TaskDead    = 2 // a zombie
	TaskStopped = 3 // in a group stop; task_core_entry.stop_signo says by which signal
)

// file_lock_entry.flag, the kind of lock (criu/include/file-lock.h FL_*),
// and the bit file_lock_entry.type carries for a lease being broken
// (LEASE_BREAKING), over the type the lease is being broken to.
const (
	FlPOSIX       = 1
	FlFlock       = 2
	FlOFD         = 4
	FlLease       = 8
	LeaseBreaking = 4
)
