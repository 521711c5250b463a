package ptrace

import (
	"bytes"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Syscall injection: a stopped thread is made to execute one system call without any code
// written into the target. Its instruction pointer is pointed at an existing `syscall`
// instruction (in its vDSO), and PTRACE_SYSCALL steps it to the syscall entry and exit
// stops. orig_rax = -1 keeps the kernel's restart logic away from the borrowed registers.
// The caller blocks the thread's signals first, so no handler runs on borrowed registers.

// syscallInsn is the x86-64 `syscall` instruction.
var syscallInsn = []byte{0x0f, 0x05}

// maxErrno: a syscall return in [-maxErrno, 0) is an error number.
const maxErrno = 4095

// FindSyscallInsn returns the offset of a `syscall` instruction in code (a vDSO's text).
func FindSyscallInsn(code []byte) (uint64, error) {
	i := bytes.Index(code, syscallInsn)
	if i < 0 {
		return 0, errors.New("no syscall instruction in the vDSO")
	}
	return uint64(i), nil
}

// Injector runs system calls in stopped threads through the syscall instruction at Insn.
type Injector struct {
	// Insn is the address of the syscall instruction, in the tracee.
	Insn uint64
	// DiscardSignals passes over other stops on the way, discarding their signals: for
	// processes being created, whose signals mean nothing yet. Without it, any stop but the
	// syscall stops is an error, so that no signal of a live process is lost.
	DiscardSignals bool
	// DiscardStopSignals passes over the signal-delivery-stops of job-control stop
	// signals (SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU), discarding them: for a process in a
	// job-control stop, where a stop signal still pending means nothing (the stop stays in
	// force, and SIGCONT discards pending stop signals anyway), as CRIU's compel does.
	DiscardStopSignals bool
}

// IsStopSignal tells a job-control stop signal.
func IsStopSignal(sig unix.Signal) bool {
	switch sig {
	case unix.SIGSTOP, unix.SIGTSTP, unix.SIGTTIN, unix.SIGTTOU:
		return true
	}
	return false
}

// Call makes thread tid, stopped with registers regs, execute syscall nr(args) and returns
// its result. A result in the errno range is a *SyscallError. The thread is left in the
// syscall-exit-stop with the borrowed registers.
func (in Injector) Call(tid int, regs unix.PtraceRegs, nr uintptr, args ...uint64) (uint64, error) {
	if len(args) > 6 {
		return 0, fmt.Errorf("inject %s: %d arguments", SyscallName(nr), len(args))
	}
	var a [6]uint64
	copy(a[:], args)
	regs.Rip = in.Insn
	regs.Rax = uint64(nr)
	regs.Orig_rax = ^uint64(0)
	regs.Rdi, regs.Rsi, regs.Rdx, regs.R10, regs.R8, regs.R9 = a[0], a[1], a[2], a[3], a[4], a[5]
	if err := SetRegs(tid, &regs); err != nil {
		return 0, err
	}
	for step := 0; step < 2; step++ { // syscall entry, then exit
		if err := in.toSyscallStop(tid, nr); err != nil {
			return 0, err
		}
	}
	out, err := GetRegs(tid)
	if err != nil {
		return 0, err
	}
	if out.Rip != in.Insn+uint64(len(syscallInsn)) {
		return 0, fmt.Errorf("thread %d: injected %s returned at %#x, want %#x", tid, SyscallName(nr), out.Rip, in.Insn+uint64(len(syscallInsn)))
	}
	if ret := int64(out.Rax); ret < 0 && ret >= -maxErrno {
		return out.Rax, &SyscallError{Tid: tid, Nr: nr, Errno: unix.Errno(-ret)}
	}
	return out.Rax, nil
}

// toSyscallStop resumes tid to its next syscall stop.
func (in Injector) toSyscallStop(tid int, nr uintptr) error {
	for {
		if err := request(unix.PTRACE_SYSCALL, tid, 0, 0); err != nil {
			return fmt.Errorf("step thread %d: %w", tid, err)
		}
		st, err := Wait(tid)
		if err != nil {
			return err
		}
		if st.Kind == StopSyscall {
			return nil
		}
		if st.Kind == StopSignal && in.DiscardStopSignals && IsStopSignal(st.Sig) {
			continue
		}
		if !in.DiscardSignals {
			return fmt.Errorf("thread %d: injected %s stopped by signal %v instead of a syscall stop", tid, SyscallName(nr), st.Sig)
		}
	}
}

// SyscallError is a system call that failed inside a tracee.
type SyscallError struct {
	Tid   int
	Nr    uintptr
	Errno unix.Errno
}

func (e *SyscallError) Error() string {
	return fmt.Sprintf("thread %d: injected %s: %v", e.Tid, SyscallName(e.Nr), e.Errno)
}

func (e *SyscallError) Unwrap() error { return e.Errno }

// syscallNames names the syscalls imgtool injects, for error messages.
var syscallNames = map[uintptr]string{
	unix.SYS_MMAP: "mmap", unix.SYS_MUNMAP: "munmap", unix.SYS_MREMAP: "mremap", unix.SYS_BRK: "brk",
	unix.SYS_CLONE3: "clone3", unix.SYS_PRCTL: "prctl", unix.SYS_RT_SIGACTION: "rt_sigaction",
	unix.SYS_RT_SIGPROCMASK: "rt_sigprocmask", unix.SYS_SIGALTSTACK: "sigaltstack",
	unix.SYS_SET_ROBUST_LIST: "set_robust_list", unix.SYS_SET_TID_ADDRESS: "set_tid_address",
	unix.SYS_RSEQ: "rseq", unix.SYS_DUP3: "dup3", unix.SYS_CLOSE: "close",
	unix.SYS_CLOSE_RANGE: "close_range", unix.SYS_PIDFD_OPEN: "pidfd_open",
	unix.SYS_PIDFD_GETFD: "pidfd_getfd", unix.SYS_FCHDIR: "fchdir", unix.SYS_CHROOT: "chroot",
	unix.SYS_UMASK: "umask", unix.SYS_SETSID: "setsid", unix.SYS_SETPGID: "setpgid",
	unix.SYS_GETITIMER: "getitimer", unix.SYS_SETITIMER: "setitimer", unix.SYS_PERSONALITY: "personality",
	unix.SYS_MADVISE: "madvise", unix.SYS_SETGROUPS: "setgroups", unix.SYS_SETRESUID: "setresuid",
	unix.SYS_SETRESGID: "setresgid", unix.SYS_CAPSET: "capset", unix.SYS_SETFSUID: "setfsuid",
	unix.SYS_SETFSGID: "setfsgid", unix.SYS_RT_TGSIGQUEUEINFO: "rt_tgsigqueueinfo",
	unix.SYS_RT_SIGQUEUEINFO: "rt_sigqueueinfo", unix.SYS_OPEN: "open", unix.SYS_WRITE: "write",
	unix.SYS_MEMBARRIER: "membarrier", unix.SYS_SECCOMP: "seccomp",
}

// SyscallName names syscall nr for error messages.
func SyscallName(nr uintptr) string {
	if n, ok := syscallNames[nr]; ok {
		return n
	}
	return fmt.Sprintf("syscall #%d", nr)
}
