package restore

import (
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Every ptrace request must come from the thread that is the tracer, so the whole restore
// runs on one goroutine locked to its OS thread (see onTracerThread). Nothing in this file
// may be called from another goroutine.

const (
	// syscallStop is the stop signal of a syscall-enter or -exit stop under
	// PTRACE_O_TRACESYSGOOD.
	syscallStop = unix.SIGTRAP | 0x80

	// ntX86XState is the regset of the full XSAVE area (NT_X86_XSTATE).
	ntX86XState = 0x202

	// maxErrno: a syscall return in (-maxErrno, 0) is an error number.
	maxErrno = 4095
)

// onTracerThread runs f on a fresh goroutine locked to its own OS thread and returns its
// error. The thread is never unlocked: when f returns, Go discards the thread, and with it
// any tracee f failed to detach (PTRACE_O_EXITKILL then kills those).
func onTracerThread(f func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer func() {
			if r := recover(); r != nil {
				done <- fmt.Errorf("restore: internal error: %v", r)
			}
		}()
		done <- f()
	}()
	return <-done
}

// errno turns a raw syscall return value into an error (nil when it is not one).
func errno(ret uint64) error {
	if int64(ret) < 0 && int64(ret) >= -maxErrno {
		return unix.Errno(-int64(ret))
	}
	return nil
}

// wait4 waits for one state change of tid, retrying on EINTR.
func wait4(tid int, flags int) (unix.WaitStatus, error) {
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(tid, &ws, flags|unix.WALL, nil)
		if err == unix.EINTR {
			continue
		}
		return ws, err
	}
}

// describeStatus says in words how a thread ended.
func describeStatus(ws unix.WaitStatus) string {
	switch {
	case ws.Exited():
		return fmt.Sprintf("exited with status %d", ws.ExitStatus())
	case ws.Signaled():
		return fmt.Sprintf("killed by %v", ws.Signal())
	}
	return fmt.Sprintf("wait status %#x", uint32(ws))
}

// thread is one traced, stopped thread of a process being restored.
type thread struct {
	tid  int
	proc *process
	tmpl unix.PtraceRegs // registers at the first stop: the template of every injection
}

// waitStop waits for the first stop of a thread that was just created under ptrace (the
// SIGSTOP an auto-attached child starts with, or the exec SIGTRAP of the helper).
func waitStop(tid int) error {
	ws, err := wait4(tid, 0)
	if err != nil {
		return fmt.Errorf("waiting for thread %d: %w", tid, err)
	}
	if !ws.Stopped() {
		return fmt.Errorf("thread %d %s before it could be restored", tid, describeStatus(ws))
	}
	return nil
}

// newThread records a stopped thread and its register template.
func newThread(tid int, p *process) (*thread, error) {
	t := &thread{tid: tid, proc: p}
	if err := unix.PtraceGetRegs(tid, &t.tmpl); err != nil {
		return nil, fmt.Errorf("reading registers of thread %d: %w", tid, err)
	}
	return t, nil
}

// resume lets the thread run to its next syscall stop. Signal-delivery stops on the way
// are answered by suppressing the signal: the only code the thread runs while we shape it
// is one syscall instruction, and no signal may interrupt that. Event stops (a clone
// reported between the entry and exit of clone3) are passed over.
func (t *thread) resume() error {
	for {
		if err := unix.PtraceSyscall(t.tid, 0); err != nil {
			return fmt.Errorf("resuming thread %d: %w", t.tid, err)
		}
		ws, err := wait4(t.tid, 0)
		if err != nil {
			return fmt.Errorf("waiting for thread %d: %w", t.tid, err)
		}
		if !ws.Stopped() {
			return fmt.Errorf("thread %d %s while being restored", t.tid, describeStatus(ws))
		}
		if ws.StopSignal() == syscallStop {
			return nil
		}
	}
}

// syscall makes the thread execute one system call and returns its result. RIP points at a
// syscall instruction inside the process's vDSO, so no code of ours is ever written into
// the target; orig_rax = -1 keeps the kernel's restart logic away from our registers.
func (t *thread) syscall(nr uintptr, args ...uint64) (uint64, error) {
	if len(args) > 6 {
		panic("syscall: more than 6 arguments")
	}
	regs := t.tmpl
	regs.Rip = t.proc.sysInsn
	regs.Rax = uint64(nr)
	regs.Orig_rax = ^uint64(0)
	a := [6]uint64{}
	copy(a[:], args)
	regs.Rdi, regs.Rsi, regs.Rdx, regs.R10, regs.R8, regs.R9 = a[0], a[1], a[2], a[3], a[4], a[5]
	if err := unix.PtraceSetRegs(t.tid, &regs); err != nil {
		return 0, fmt.Errorf("setting registers of thread %d: %w", t.tid, err)
	}
	if err := t.resume(); err != nil { // syscall entry
		return 0, err
	}
	if err := t.resume(); err != nil { // syscall exit
		return 0, err
	}
	var out unix.PtraceRegs
	if err := unix.PtraceGetRegs(t.tid, &out); err != nil {
		return 0, fmt.Errorf("reading registers of thread %d: %w", t.tid, err)
	}
	if err := errno(out.Rax); err != nil {
		return out.Rax, &injectedError{tid: t.tid, nr: nr, err: err.(unix.Errno)}
	}
	return out.Rax, nil
}

// injectedError is a system call that failed inside a process being restored.
type injectedError struct {
	tid int
	nr  uintptr
	err unix.Errno
}

func (e *injectedError) Error() string {
	return fmt.Sprintf("thread %d: syscall %s: %v", e.tid, syscallName(e.nr), e.err)
}

func (e *injectedError) Unwrap() error { return e.err }

// syscallName names the syscalls restore injects, for error messages.
func syscallName(nr uintptr) string {
	names := map[uintptr]string{
		unix.SYS_MMAP: "mmap", unix.SYS_MUNMAP: "munmap", unix.SYS_MREMAP: "mremap",
		unix.SYS_CLONE3: "clone3", unix.SYS_PRCTL: "prctl", unix.SYS_RT_SIGACTION: "rt_sigaction",
		unix.SYS_RT_SIGPROCMASK: "rt_sigprocmask", unix.SYS_SIGALTSTACK: "sigaltstack",
		unix.SYS_SET_ROBUST_LIST: "set_robust_list", unix.SYS_SET_TID_ADDRESS: "set_tid_address",
		unix.SYS_RSEQ: "rseq", unix.SYS_DUP3: "dup3", unix.SYS_CLOSE: "close",
		unix.SYS_CLOSE_RANGE: "close_range", unix.SYS_PIDFD_OPEN: "pidfd_open",
		unix.SYS_PIDFD_GETFD: "pidfd_getfd", unix.SYS_FCHDIR: "fchdir", unix.SYS_CHROOT: "chroot",
		unix.SYS_UMASK: "umask", unix.SYS_SETSID: "setsid", unix.SYS_SETPGID: "setpgid",
		unix.SYS_SETITIMER: "setitimer", unix.SYS_PERSONALITY: "personality",
		unix.SYS_MADVISE: "madvise", unix.SYS_SETGROUPS: "setgroups", unix.SYS_SETRESUID: "setresuid",
		unix.SYS_SETRESGID: "setresgid", unix.SYS_CAPSET: "capset", unix.SYS_SETFSUID: "setfsuid",
		unix.SYS_SETFSGID: "setfsgid", unix.SYS_RT_TGSIGQUEUEINFO: "rt_tgsigqueueinfo",
		unix.SYS_RT_SIGQUEUEINFO: "rt_sigqueueinfo",
	}
	if n, ok := names[nr]; ok {
		return n
	}
	return fmt.Sprintf("#%d", nr)
}

// setRegset writes a register set (PTRACE_SETREGSET) of the thread.
func setRegset(tid int, note int, buf []byte) error {
	iov := unix.Iovec{Base: &buf[0]}
	iov.SetLen(len(buf))
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SETREGSET, uintptr(tid), uintptr(note),
		uintptr(unsafe.Pointer(&iov)), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// getRegset reads a register set (PTRACE_GETREGSET) of the thread; the kernel shortens the
// buffer to what it filled.
func getRegset(tid int, note int, buf []byte) ([]byte, error) {
	iov := unix.Iovec{Base: &buf[0]}
	iov.SetLen(len(buf))
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_GETREGSET, uintptr(tid), uintptr(note),
		uintptr(unsafe.Pointer(&iov)), 0, 0)
	if e != 0 {
		return nil, e
	}
	return buf[:iov.Len], nil
}

// killAndReap kills every listed process and reaps all their threads, non-leaders before
// leaders: the kernel reports a traced leader's death only after its other threads are
// reaped. It is bounded: a thread that cannot be reaped (already reaped by its parent) is
// given up on.
func killAndReap(procs []*process) {
	for _, p := range procs {
		unix.Kill(p.pid, unix.SIGKILL)
	}
	for _, p := range procs {
		for i := len(p.threads) - 1; i >= 0; i-- {
			reapThread(p.threads[i].tid)
		}
		if len(p.threads) == 0 {
			reapThread(p.pid)
		}
	}
}

// reapThread waits until tid is gone: reaped by us as its tracer or parent, or by someone
// else. Each wait4 returns once the thread has died, so the loop ends after at most a
// couple of rounds (tracer report, then parent report).
func reapThread(tid int) {
	for i := 0; i < 4; i++ {
		_, err := wait4(tid, 0)
		if err != nil { // ECHILD: not ours to reap (any more)
			return
		}
	}
}
