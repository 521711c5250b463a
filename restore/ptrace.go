package restore

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/imgtool/imgtool/internal/ptrace"
)

// Every ptrace request must come from the thread that is the tracer, so the whole restore
// runs on one goroutine locked to its OS thread (ptrace.OnTracerThread). Nothing in this
// file may be called from another goroutine.

// thread is one traced, stopped thread of a process being restored.
type thread struct {
	tid  int
	proc *process
	tmpl unix.PtraceRegs // registers at the first stop: the template of every injection
}

// waitFirstStop waits for the first stop of a thread that was just created under ptrace
// (the SIGSTOP an auto-attached child starts with, or the exec SIGTRAP of the helper).
func waitFirstStop(tid int) error {
	if _, err := ptrace.Wait(tid); err != nil {
		return fmt.Errorf("%w before it could be restored", err)
	}
	return nil
}

// newThread records a stopped thread and its register template.
func newThread(tid int, p *process) (*thread, error) {
	regs, err := ptrace.GetRegs(tid)
	if err != nil {
		return nil, err
	}
	return &thread{tid: tid, proc: p, tmpl: regs}, nil
}

// syscall makes the thread execute one system call and returns its result; a failed call
// is a *ptrace.SyscallError. Signal-delivery stops on the way are answered by discarding
// the signal: the only code the thread runs while we shape it is one syscall instruction,
// and no signal may interrupt that. Event stops (a clone reported between the entry and
// exit of clone3) are passed over.
//
// While the process may take a batch's trap (process.traps), the call runs as a batch of
// one: one ptrace stop, at the trap, where a call stepped to its syscall entry and exit
// takes two; a tree's restore makes some fifteen such calls a process.
func (t *thread) syscall(nr uintptr, args ...uint64) (uint64, error) {
	if t.proc.traps {
		c := ptrace.BatchCall{Nr: nr}
		copy(c.Args[:], args)
		got, err := runBatch(t.proc, t, []ptrace.BatchCall{c})
		if err != nil {
			return 0, err
		}
		return got[0], nil
	}
	in := ptrace.Injector{Insn: t.proc.sysInsn, DiscardSignals: true}
	return in.Call(t.tid, t.tmpl, nr, args...)
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
		_, err := ptrace.Wait4(tid, 0)
		if err != nil { // ECHILD: not ours to reap (any more)
			return
		}
	}
}
