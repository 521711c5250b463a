package image

// Task states: task_core_entry.task_state in core-PID.img (CRIU's TASK_* of
// criu/include/pid.h, the values compel shares with it).
const (
	TaskAlive   = 1 // running or sleeping
	TaskDead    = 2 // a zombie
	TaskStopped = 3 // stopped by a signal (group stop)
)
