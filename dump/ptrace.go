package dump

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Raw ptrace requests and constants that golang.org/x/sys/unix has no wrapper for. Every
// function here must be called from the one locked OS thread that seized the tracee: the
// kernel ties a tracee to the tracing thread, not to the process.
const (
	ptraceSeize         = 0x4206
	ptraceInterrupt     = 0x4207
	ptraceGetSigmask    = 0x420a
	ptraceSetSigmask    = 0x420b
	ptracePeekSiginfo   = 0x4209
	ptraceGetRseqConfig = 0x420f
	ptraceGetThreadArea = 25
	ptraceGetRegset     = 0x4204
	ptraceOTraceSysGood = 1
	ptraceEventStop     = 0x80
	ptraceSyscallTrap   = int(unix.SIGTRAP) | 0x80
	ntX86Xstate         = 0x202
	ntX86Shstk          = 0x204
	peekSiginfoShared   = 1
)

func ptrace(req, tid int, addr, data uintptr) error {
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, uintptr(req), uintptr(tid), addr, data, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// errGone reports a thread that exited or was killed while the dump was stopping or
// inspecting it.
var errGone = errors.New("exited during the dump")

// stopKind tells which ptrace-stop a thread reached.
type stopKind int

const (
	stopInterrupt stopKind = iota // PTRACE_EVENT_STOP (after PTRACE_INTERRUPT or a group stop)
	stopSyscall                   // syscall entry or exit (PTRACE_O_TRACESYSGOOD)
	stopSignal                    // signal-delivery-stop carrying sig
)

// waitStop waits for tid's next ptrace-stop.
func waitStop(tid int) (kind stopKind, sig unix.Signal, err error) {
	var ws unix.WaitStatus
	for {
		_, err = unix.Wait4(tid, &ws, unix.WALL, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, 0, fmt.Errorf("wait for thread %d: %w", tid, err)
		}
		break
	}
	switch {
	case ws.Exited() || ws.Signaled():
		return 0, 0, fmt.Errorf("thread %d %w", tid, errGone)
	case !ws.Stopped():
		return 0, 0, fmt.Errorf("thread %d: unexpected wait status %#x", tid, uint32(ws))
	}
	stopSig := int(ws) >> 8 & 0xff
	event := int(ws) >> 16
	switch {
	case event == ptraceEventStop:
		return stopInterrupt, ws.StopSignal(), nil
	case stopSig == ptraceSyscallTrap:
		return stopSyscall, unix.SIGTRAP, nil
	default:
		return stopSignal, ws.StopSignal(), nil
	}
}

// seize attaches to tid without stopping it and then stops it with PTRACE_INTERRUPT, so no
// signal is ever sent to the target. It returns once the thread sits in the interrupt stop.
func seize(tid int) error {
	if err := ptrace(ptraceSeize, tid, 0, ptraceOTraceSysGood); err != nil {
		if err == unix.ESRCH {
			return fmt.Errorf("thread %d %w", tid, errGone)
		}
		if err == unix.EPERM {
			return fmt.Errorf("thread %d: cannot trace it (already traced, or not permitted): %w", tid, err)
		}
		return fmt.Errorf("seize thread %d: %w", tid, err)
	}
	if err := ptrace(ptraceInterrupt, tid, 0, 0); err != nil {
		return fmt.Errorf("interrupt thread %d: %w", tid, err)
	}
	for {
		kind, sig, err := waitStop(tid)
		if err != nil {
			return err
		}
		if kind == stopInterrupt {
			return nil
		}
		// A signal-delivery-stop can only precede the interrupt trap when the signal was
		// dequeued first; deliver it as the kernel would have and wait for the trap.
		if err := ptrace(unix.PTRACE_CONT, tid, 0, uintptr(sig)); err != nil {
			return fmt.Errorf("continue thread %d: %w", tid, err)
		}
	}
}

func getRegs(tid int) (unix.PtraceRegs, error) {
	var r unix.PtraceRegs
	err := ptrace(unix.PTRACE_GETREGS, tid, 0, uintptr(unsafe.Pointer(&r)))
	if err != nil {
		return r, fmt.Errorf("read registers of thread %d: %w", tid, err)
	}
	return r, nil
}

func setRegs(tid int, r *unix.PtraceRegs) error {
	if err := ptrace(unix.PTRACE_SETREGS, tid, 0, uintptr(unsafe.Pointer(r))); err != nil {
		return fmt.Errorf("write registers of thread %d: %w", tid, err)
	}
	return nil
}

func getSigmask(tid int) (uint64, error) {
	var m uint64
	if err := ptrace(ptraceGetSigmask, tid, 8, uintptr(unsafe.Pointer(&m))); err != nil {
		return 0, fmt.Errorf("read signal mask of thread %d: %w", tid, err)
	}
	return m, nil
}

func setSigmask(tid int, m uint64) error {
	if err := ptrace(ptraceSetSigmask, tid, 8, uintptr(unsafe.Pointer(&m))); err != nil {
		return fmt.Errorf("set signal mask of thread %d: %w", tid, err)
	}
	return nil
}

// getRegset reads one PTRACE_GETREGSET note into buf and returns the bytes filled.
func getRegset(tid int, note uintptr, buf []byte) (int, error) {
	iov := unix.Iovec{Base: &buf[0]}
	iov.SetLen(len(buf))
	if err := ptrace(ptraceGetRegset, tid, note, uintptr(unsafe.Pointer(&iov))); err != nil {
		return 0, err
	}
	return int(iov.Len), nil
}

// userDesc is struct user_desc of <asm/ldt.h>.
type userDesc struct {
	EntryNumber uint32
	BaseAddr    uint32
	Limit       uint32
	Flags       uint32
}

func getThreadArea(tid int, entry uint32) (userDesc, error) {
	d := userDesc{EntryNumber: entry}
	err := ptrace(ptraceGetThreadArea, tid, uintptr(entry), uintptr(unsafe.Pointer(&d)))
	return d, err
}

// rseqConfig is struct ptrace_rseq_configuration.
type rseqConfig struct {
	RseqAbiPointer uint64
	RseqAbiSize    uint32
	Signature      uint32
	Flags          uint32
	Pad            uint32
}

func getRseq(tid int) (rseqConfig, error) {
	var c rseqConfig
	err := ptrace(ptraceGetRseqConfig, tid, unsafe.Sizeof(c), uintptr(unsafe.Pointer(&c)))
	return c, err
}

// peekSiginfoArgs is struct ptrace_peeksiginfo_args.
type peekSiginfoArgs struct {
	Off   uint64
	Flags uint32
	Nr    int32
}

// pendingSignals copies the queued siginfos of tid (shared: the process-wide queue)
// without dequeuing them; each is the raw 128-byte siginfo_t CRIU stores.
func pendingSignals(tid int, shared bool) ([][]byte, error) {
	var out [][]byte
	buf := make([]byte, 128*32)
	for {
		a := peekSiginfoArgs{Off: uint64(len(out)), Nr: 32}
		if shared {
			a.Flags = peekSiginfoShared
		}
		r, _, e := unix.Syscall6(unix.SYS_PTRACE, ptracePeekSiginfo, uintptr(tid),
			uintptr(unsafe.Pointer(&a)), uintptr(unsafe.Pointer(&buf[0])), 0, 0)
		if e != 0 {
			return nil, fmt.Errorf("read pending signals of thread %d: %w", tid, e)
		}
		if r == 0 {
			return out, nil
		}
		for i := 0; i < int(r); i++ {
			out = append(out, append([]byte(nil), buf[i*128:(i+1)*128]...))
		}
		if len(out) > 1<<16 {
			return nil, fmt.Errorf("thread %d: more than %d pending signals", tid, 1<<16)
		}
	}
}
