package imageset

// CRIU constants that are part of the image format.

// task_core_entry.task_state (criu/include/task-entries.h: TASK_ALIVE,
// TASK_DEAD).
const (
	TaskAlive = 1
	TaskDead  = 2 // a zombie
)
