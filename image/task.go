package image

import "fmt"

// Task states: task_core_entry.task_state in core-PID.img (CRIU's TASK_* of
// criu/include/pid.h, the values compel shares with it).
const (
	TaskAlive   = 1 // running or sleeping
	TaskDead    = 2 // a zombie
	TaskStopped = 3 // stopped by a signal (group stop)
)

// Signals and resource limits as task_core_entry holds them.
const (
	NSignals = 64 // signals 1..64 (_KNSIG of x86_64)
	NRlimits = 16 // resource limits 0..15 (RLIM_NLIMITS), saved in that order
)

// SigactionSignals returns the signals whose actions task_core_entry.sigactions holds, in
// its order: 1 to NSignals but SIGKILL (9) and SIGSTOP (19), which have none.
func SigactionSignals() []int {
	out := make([]int, 0, NSignals-2)
	for sig := 1; sig <= NSignals; sig++ {
		if sig != 9 && sig != 19 {
			out = append(out, sig)
		}
	}
	return out
}

// rlimitNames are the kernel's names of the resource limits, in task_core_entry order.
var rlimitNames = [NRlimits]string{
	"RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_DATA", "RLIMIT_STACK", "RLIMIT_CORE", "RLIMIT_RSS",
	"RLIMIT_NPROC", "RLIMIT_NOFILE", "RLIMIT_MEMLOCK", "RLIMIT_AS", "RLIMIT_LOCKS",
	"RLIMIT_SIGPENDING", "RLIMIT_MSGQUEUE", "RLIMIT_NICE", "RLIMIT_RTPRIO", "RLIMIT_RTTIME",
}

// RlimitName names resource limit res (RLIMIT_NPROC), or its number when out of range.
func RlimitName(res int) string {
	if res >= 0 && res < NRlimits {
		return rlimitNames[res]
	}
	return fmt.Sprintf("resource limit %d", res)
}
