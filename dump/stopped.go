package dump

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/imgtool/imgtool/internal/ptrace"
)

// A process stopped by job control (state T: SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU) is dumped
// like a running one, with task_state TASK_STOPPED and the signal in stop_signo, as CRIU
// does; a restore sends it that signal again before the tree runs. Seized in its group
// stop, its leader reports the stop signal in PTRACE_GETSIGINFO (a seize of a running
// task reports SIGTRAP, the interrupt), which is how CRIU tells the two apart.

// groupStopSignal returns the job-control signal tid is stopped by, or 0. tid must sit in
// the stop the seize left it in.
func groupStopSignal(tid int) uint32 {
	var si [128]byte
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_GETSIGINFO, uintptr(tid), 0, uintptr(unsafe.Pointer(&si[0])), 0, 0)
	if e != 0 {
		return 0
	}
	switch sig := unix.Signal(le32(si[:])); sig {
	case unix.SIGSTOP, unix.SIGTSTP, unix.SIGTTIN, unix.SIGTTOU:
		return uint32(sig)
	}
	return 0
}

// leaveGroupStop takes a seized thread out of its group stop, as CRIU's compel does: the
// seize's PTRACE_INTERRUPT is still pending behind the group-stop report, so the thread,
// resumed once, traps again at once (reporting the stop signal again: the group stop stays
// in force, SIGNAL_STOP_STOPPED) and from there runs injected calls. When the tree is put
// back the kernel stops each thread again as it is detached.
func leaveGroupStop(tid int) error {
	if err := ptrace.Cont(tid, 0); err != nil {
		return err
	}
	st, err := ptrace.Wait(tid)
	if err != nil {
		return err
	}
	if st.Kind != ptrace.StopInterrupt {
		return fmt.Errorf("thread %d: stopped by job control, then %v instead of the interrupt trap", tid, st.Sig)
	}
	return nil
}
