package dump

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/imgtool/imgtool/internal/procfs"
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
	if sig := unix.Signal(le32(si[:])); ptrace.IsStopSignal(sig) {
		return uint32(sig)
	}
	return 0
}

// stopping tells whether a thread, running when seized, has SIGSTOP pending (for it or
// its process), by its status: it stops as soon as it runs, and injected calls would
// meet the signal on their way. The dump looks again once it has stopped. (SIGTSTP,
// SIGTTIN and SIGTTOU may be caught, blocked or ignored: only SIGSTOP is sure to stop it.)
func stopping(st procfs.Status) bool {
	const sigstop = 1 << (unix.SIGSTOP - 1)
	for _, k := range []string{"SigPnd", "ShdPnd"} {
		if m, err := st.Hex(k); err == nil && m&sigstop != 0 {
			return true
		}
	}
	return false
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

// withoutStopSignals drops the job-control stop signals from a pending queue of a process
// in a job-control stop: there they mean nothing (the stop is recorded as task_state, and
// SIGCONT discards pending stop signals), the injected calls consume them (see
// ptrace.Injector.DiscardStopSignals), and a restore that queued them would stop the
// process midway, as CRIU's does (compel consumes them before it reads the queues).
func withoutStopSignals(sigs [][]byte) [][]byte {
	out := sigs[:0]
	for _, si := range sigs {
		if !ptrace.IsStopSignal(unix.Signal(le32(si))) {
			out = append(out, si)
		}
	}
	return out
}
