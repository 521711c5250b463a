package ptrace

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"
)

// Batched injection: where a stopped thread has to make many system calls whose arguments
// are all known beforehand (a restore's thousands of mmaps), each injected call costs two
// ptrace stops (syscall entry and exit), each a round trip through the scheduler. BatchCode
// instead runs a whole table of calls in the thread and traps once at the end, as CRIU's
// restorer blob maps every VMA from inside the process.
//
// The code, written by the caller into an executable mapping of the tracee, runs with
// rbx = the table and r12 = the number of entries; each entry is BatchEntrySize bytes:
// nr, six arguments, and the result, which the code stores. It stops at the first result
// in the errno range, so that nothing after a failed call runs, as with one call at a
// time. It touches no stack and no other memory. It ends with int3: the kernel sends the
// thread a SIGTRAP, which the tracer sees as a signal-delivery-stop and discards. That
// forced SIGTRAP resets the thread's SIGTRAP action to SIG_DFL when it was blocked or
// ignored (RunBatch puts the mask back): only for threads whose signal actions are set
// afterwards (a process being restored), never for a live process being dumped.
//
//	loop: mov rax,[rbx]; mov rdi,[rbx+8]; mov rsi,[rbx+16]; mov rdx,[rbx+24]
//	      mov r10,[rbx+32]; mov r8,[rbx+40]; mov r9,[rbx+48]; syscall
//	      mov [rbx+56],rax; cmp rax,-4095; jae done
//	      add rbx,64; dec r12; jnz loop
//	done: int3
var BatchCode = []byte{
	0x48, 0x8b, 0x03,
	0x48, 0x8b, 0x7b, 0x08,
	0x48, 0x8b, 0x73, 0x10,
	0x48, 0x8b, 0x53, 0x18,
	0x4c, 0x8b, 0x53, 0x20,
	0x4c, 0x8b, 0x43, 0x28,
	0x4c, 0x8b, 0x4b, 0x30,
	0x0f, 0x05,
	0x48, 0x89, 0x43, 0x38,
	0x48, 0x3d, 0x01, 0xf0, 0xff, 0xff,
	0x73, 0x09,
	0x48, 0x83, 0xc3, 0x40,
	0x49, 0xff, 0xcc,
	0x75, 0xce,
	0xcc,
}

// BatchEntrySize is the size of one entry of a batch table.
const BatchEntrySize = 64

// BatchCall is one system call of a batch.
type BatchCall struct {
	Nr   uintptr
	Args [6]uint64
}

// EncodeBatch lays calls out as a batch table (results zeroed).
func EncodeBatch(calls []BatchCall) []byte {
	b := make([]byte, len(calls)*BatchEntrySize)
	for i, c := range calls {
		e := b[i*BatchEntrySize:]
		binary.LittleEndian.PutUint64(e, uint64(c.Nr))
		for j, a := range c.Args {
			binary.LittleEndian.PutUint64(e[8+8*j:], a)
		}
	}
	return b
}

// BatchResults reads the results out of a table the code ran: one per call, up to and
// including the first that failed (a *SyscallError naming tid and the call); the calls
// after it did not run.
func BatchResults(tid int, calls []BatchCall, table []byte) ([]uint64, error) {
	out := make([]uint64, 0, len(calls))
	for i, c := range calls {
		ret := binary.LittleEndian.Uint64(table[i*BatchEntrySize+56:])
		if r := int64(ret); r < 0 && r >= -maxErrno {
			return out, &SyscallError{Tid: tid, Nr: c.Nr, Errno: unix.Errno(-r)}
		}
		out = append(out, ret)
	}
	return out, nil
}

// RunBatch makes thread tid, stopped with registers regs, run the n entries of the table
// at table with BatchCode at code, and returns once it trapped at the end of the code. The
// thread is left in the SIGTRAP's signal-delivery-stop with the borrowed registers; the
// next resume (an injected call, or the thread's own registers put back) discards the
// signal. Other stops on the way are passed over with their signals discarded when
// DiscardSignals is set, and are an error otherwise.
func (in Injector) RunBatch(tid int, regs unix.PtraceRegs, code, table uint64, n int) error {
	if n <= 0 {
		return nil
	}
	mask, err := in.StartBatch(tid, regs, code, table, n)
	if err != nil {
		return err
	}
	return in.FinishBatch(tid, code, n, mask)
}

// StartBatch is the first half of RunBatch: it points thread tid at the batch and
// resumes it, without waiting. A tracer may start the batches of several threads (each
// with its own table) and then wait for each with FinishBatch: they run at once, on
// every core. It returns the thread's signal mask, for FinishBatch to put back.
func (in Injector) StartBatch(tid int, regs unix.PtraceRegs, code, table uint64, n int) (uint64, error) {
	// The int3's forced SIGTRAP unblocks SIGTRAP: the mask is put back once it trapped.
	mask, err := GetSigmask(tid)
	if err != nil {
		return 0, err
	}
	regs.Rip = code
	regs.Rbx = table
	regs.R12 = uint64(n)
	regs.Orig_rax = ^uint64(0)
	if err := SetRegs(tid, &regs); err != nil {
		return 0, err
	}
	if err := Cont(tid, 0); err != nil {
		return 0, fmt.Errorf("run a batch of %d calls in thread %d: %w", n, tid, err)
	}
	return mask, nil
}

// FinishBatch waits until thread tid, started by StartBatch, trapped at the end of the
// code, and puts its signal mask back.
func (in Injector) FinishBatch(tid int, code uint64, n int, mask uint64) error {
	end := code + uint64(len(BatchCode))
	for {
		st, err := Wait(tid)
		if err != nil {
			return err
		}
		if st.Kind == StopSignal && st.Sig == unix.SIGTRAP {
			out, err := GetRegs(tid)
			if err != nil {
				return err
			}
			if out.Rip == end {
				return SetSigmask(tid, mask)
			}
		}
		if !in.DiscardSignals {
			return fmt.Errorf("thread %d: a batch of %d calls stopped by signal %v before its end", tid, n, st.Sig)
		}
		if err := Cont(tid, 0); err != nil {
			return fmt.Errorf("run a batch of %d calls in thread %d: %w", n, tid, err)
		}
	}
}
