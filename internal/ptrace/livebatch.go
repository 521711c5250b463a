package ptrace

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"
)

// Live batches: the calls a dump makes in a live process (a process's 64 signal actions,
// its interval timers, each thread's alternate stack, ...), run by the thread itself in
// one go, as BatchCode does for a restore, but safe if the tracer dies at any moment.
//
// BatchCode ends in an int3: a thread that reaches it untraced (imgtool killed with
// SIGKILL meanwhile) dies of the SIGTRAP, and one left with borrowed registers crashes.
// LiveBatchCode instead ends by putting the thread back as it was, by itself: its
// signal mask (rt_sigprocmask), then every register, and a jump to where it stopped
// (Resumable: a system call it was in runs again, as the kernel's restart would). The
// tracer learns that the calls are done from a signal the code sends its own thread and
// then unblocks: a signal whose action is to ignore it (SIG_IGN, or SIG_DFL for
// SIGCHLD, SIGURG or SIGWINCH), so that untraced it is discarded, while a tracer sees a
// signal-delivery-stop at LiveStopOff, which it ends (discarding the signal) without
// letting the thread run the rest. So whenever the tracer dies, the thread either has
// its own registers already, or runs on to the end of the code and gets them back.
//
// The code (testdata/livebatch.S, assembled with GNU as) runs with rbx = the table and
// r12 = the number of entries (at least one), each LiveEntrySize bytes like BatchCode's:
// nr, six arguments, result. Unlike BatchCode it runs every call whatever the results
// (the dump's are reads). It uses no stack until its last instructions, which borrow
// the area's own data for popfq. It addresses its data relative to itself: each thread
// gets its own copy of the area (LiveArea), the code followed by:
//
//	0x100 tgid, tid, signal, the signal's sigset (for tgkill and SIG_UNBLOCK)
//	0x120 the signal mask to put back
//	0x128 rflags, rax, rbx, rcx, rdx, rsi, rdi, rbp, r8-r15, rsp, rip to resume at
//	0x1c0 the table
var liveBatchCode = []byte{
	0x48, 0x8b, 0x03, 0x48, 0x8b, 0x7b, 0x08, 0x48, 0x8b, 0x73, 0x10, 0x48,
	0x8b, 0x53, 0x18, 0x4c, 0x8b, 0x53, 0x20, 0x4c, 0x8b, 0x43, 0x28, 0x4c,
	0x8b, 0x4b, 0x30, 0x0f, 0x05, 0x48, 0x89, 0x43, 0x38, 0x48, 0x83, 0xc3,
	0x40, 0x49, 0xff, 0xcc, 0x75, 0xd6, 0xb8, 0xea, 0x00, 0x00, 0x00, 0x48,
	0x8b, 0x3d, 0xca, 0x00, 0x00, 0x00, 0x48, 0x8b, 0x35, 0xcb, 0x00, 0x00,
	0x00, 0x48, 0x8b, 0x15, 0xcc, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xb8, 0x0e,
	0x00, 0x00, 0x00, 0xbf, 0x01, 0x00, 0x00, 0x00, 0x48, 0x8d, 0x35, 0xc1,
	0x00, 0x00, 0x00, 0x31, 0xd2, 0x41, 0xba, 0x08, 0x00, 0x00, 0x00, 0x0f,
	0x05, 0xb8, 0x0e, 0x00, 0x00, 0x00, 0xbf, 0x02, 0x00, 0x00, 0x00, 0x48,
	0x8d, 0x35, 0xae, 0x00, 0x00, 0x00, 0x31, 0xd2, 0x41, 0xba, 0x08, 0x00,
	0x00, 0x00, 0x0f, 0x05, 0x48, 0x8d, 0x25, 0xa5, 0x00, 0x00, 0x00, 0x9d,
	0x48, 0x8b, 0x05, 0xa5, 0x00, 0x00, 0x00, 0x48, 0x8b, 0x1d, 0xa6, 0x00,
	0x00, 0x00, 0x48, 0x8b, 0x0d, 0xa7, 0x00, 0x00, 0x00, 0x48, 0x8b, 0x15,
	0xa8, 0x00, 0x00, 0x00, 0x48, 0x8b, 0x35, 0xa9, 0x00, 0x00, 0x00, 0x48,
	0x8b, 0x3d, 0xaa, 0x00, 0x00, 0x00, 0x48, 0x8b, 0x2d, 0xab, 0x00, 0x00,
	0x00, 0x4c, 0x8b, 0x05, 0xac, 0x00, 0x00, 0x00, 0x4c, 0x8b, 0x0d, 0xad,
	0x00, 0x00, 0x00, 0x4c, 0x8b, 0x15, 0xae, 0x00, 0x00, 0x00, 0x4c, 0x8b,
	0x1d, 0xaf, 0x00, 0x00, 0x00, 0x4c, 0x8b, 0x25, 0xb0, 0x00, 0x00, 0x00,
	0x4c, 0x8b, 0x2d, 0xb1, 0x00, 0x00, 0x00, 0x4c, 0x8b, 0x35, 0xb2, 0x00,
	0x00, 0x00, 0x4c, 0x8b, 0x3d, 0xb3, 0x00, 0x00, 0x00, 0x48, 0x8b, 0x25,
	0xb4, 0x00, 0x00, 0x00, 0xff, 0x25, 0xb6, 0x00, 0x00, 0x00,
}

const (
	// LiveStopOff is where the signal-delivery-stop that ends a live batch is, from the
	// start of its area.
	LiveStopOff = 0x61
	liveDataOff = 0x100
	// LiveTableOff is where the table of calls starts, from the start of the area.
	LiveTableOff = 0x1c0
	// LiveEntrySize is the size of one entry of the table.
	LiveEntrySize = BatchEntrySize
)

// LiveAreaSize is the size of the area of a live batch of n calls.
func LiveAreaSize(n int) uint64 { return LiveTableOff + uint64(n)*LiveEntrySize }

// LiveArea lays out the area of a live batch of calls for thread tid of process tgid: the
// code, then the signal sig that ends it, the signal mask mask and the registers resume
// the thread gets back by itself if the tracer dies (see Resumable), then the table.
func LiveArea(calls []BatchCall, tgid, tid int, sig unix.Signal, mask uint64, resume unix.PtraceRegs) []byte {
	b := make([]byte, LiveAreaSize(len(calls)))
	copy(b, liveBatchCode)
	put := func(off int, v uint64) { binary.LittleEndian.PutUint64(b[off:], v) }
	d := liveDataOff
	put(d, uint64(tgid))
	put(d+8, uint64(tid))
	put(d+16, uint64(sig))
	put(d+24, 1<<(uint(sig)-1))
	put(d+32, mask)
	r := &resume
	for i, v := range []uint64{r.Eflags, r.Rax, r.Rbx, r.Rcx, r.Rdx, r.Rsi, r.Rdi, r.Rbp,
		r.R8, r.R9, r.R10, r.R11, r.R12, r.R13, r.R14, r.R15, r.Rsp, r.Rip} {
		put(d+40+8*i, v)
	}
	copy(b[LiveTableOff:], EncodeBatch(calls))
	return b
}

// Resumable returns registers that resume a thread stopped with registers r as the
// kernel would have, for code that jumps to them: a system call interrupted to be
// restarted is rewound to run again (rax its number, or restart_syscall's for one that
// restarts through its restart block). The kernel does this itself for registers put
// back with SetRegs; code running in the thread has to.
func Resumable(r unix.PtraceRegs) unix.PtraceRegs {
	if int64(r.Orig_rax) < 0 {
		return r
	}
	switch int64(r.Rax) {
	case -errRestartSys, -errRestartNoIntr, -errRestartNoHand:
		r.Rax = r.Orig_rax
		r.Rip -= 2
	case -RestartBlock:
		r.Rax = unix.SYS_RESTART_SYSCALL
		r.Rip -= 2
	}
	return r
}

// The kernel's restart codes (include/linux/errno.h), negated in rax of a thread stopped
// in an interrupted system call.
const (
	errRestartSys    = 512
	errRestartNoIntr = 513
	errRestartNoHand = 514
	// RestartBlock is ERESTART_RESTARTBLOCK: the call goes on through restart_syscall and
	// the thread's restart block.
	RestartBlock = 516
)

// RunLiveBatch makes thread tid, stopped with registers regs and every signal blocked,
// run the n calls of the live batch whose area (LiveArea) is at area in its memory, and
// returns once the batch signalled its end with sig. The thread is left in that
// signal-delivery-stop with the borrowed registers; the next resume (an injected call,
// or its own registers put back) discards the signal. Any other stop is an error, but
// for job-control stop signals with DiscardStopSignals.
func (in Injector) RunLiveBatch(tid int, regs unix.PtraceRegs, area uint64, n int, sig unix.Signal) error {
	if n <= 0 {
		return nil
	}
	if err := in.StartLiveBatch(tid, regs, area, n); err != nil {
		return err
	}
	return in.FinishLiveBatch(tid, area, n, sig)
}

// StartLiveBatch is the first half of RunLiveBatch: it points the thread at the batch
// and resumes it, without waiting. A tracer may start the batches of several threads
// (each in its own area) and then wait for each with FinishLiveBatch: they run at once,
// on every core.
func (in Injector) StartLiveBatch(tid int, regs unix.PtraceRegs, area uint64, n int) error {
	regs.Rip = area
	regs.Rbx = area + LiveTableOff
	regs.R12 = uint64(n)
	regs.Orig_rax = ^uint64(0)
	if err := SetRegs(tid, &regs); err != nil {
		return err
	}
	if err := Cont(tid, 0); err != nil {
		return fmt.Errorf("run a batch of %d calls in thread %d: %w", n, tid, err)
	}
	return nil
}

// FinishLiveBatch waits until a thread started by StartLiveBatch signalled the end of
// its batch with sig.
func (in Injector) FinishLiveBatch(tid int, area uint64, n int, sig unix.Signal) error {
	for {
		st, err := Wait(tid)
		if err != nil {
			return err
		}
		if st.Kind == StopSignal && st.Sig == sig {
			out, err := GetRegs(tid)
			if err != nil {
				return err
			}
			if out.Rip == area+LiveStopOff {
				return nil
			}
		}
		if st.Kind == StopSignal && in.DiscardStopSignals && IsStopSignal(st.Sig) {
			if err := Cont(tid, 0); err != nil {
				return fmt.Errorf("run a batch of %d calls in thread %d: %w", n, tid, err)
			}
			continue
		}
		return fmt.Errorf("thread %d: a batch of %d calls stopped by signal %v before its end", tid, n, st.Sig)
	}
}
