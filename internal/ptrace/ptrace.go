// Package ptrace is a tracer on one locked OS thread: seizing and interrupting threads,
// waiting for their stops, reading and writing registers, signal masks and register sets,
// and system calls injected into a stopped thread.
//
// The kernel ties a tracee to the thread that attached it, not to the process: every
// function here must be called from that one thread, normally from a function run by
// OnTracerThread.
package ptrace

import (
	"errors"
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Raw ptrace requests golang.org/x/sys/unix has no wrapper for.
const (
	reqGetRegset     = unix.PTRACE_GETREGSET
	reqSetRegset     = unix.PTRACE_SETREGSET
	reqSeize         = 0x4206
	reqInterrupt     = 0x4207
	reqPeekSiginfo   = 0x4209
	reqGetSigmask    = 0x420a
	reqSetSigmask    = 0x420b
	reqGetRseqConfig = 0x420f
	reqGetThreadArea = 25

	eventStop         = 0x80 // PTRACE_EVENT_STOP
	syscallTrap       = int(unix.SIGTRAP) | 0x80
	peekSiginfoShared = 1
)

// Register sets (ELF note types) of PTRACE_GETREGSET and PTRACE_SETREGSET.
const (
	NTX86XState = 0x202 // the XSAVE area, in the standard format
	NTX86Shstk  = 0x204 // the CET shadow-stack state: cet and ssp
)

// OnTracerThread runs f on a fresh goroutine locked to its own OS thread and returns its
// error. The thread is never unlocked: when f returns, Go discards the thread, and with it
// any tracee f failed to detach (PTRACE_O_EXITKILL then kills those; others are detached
// by the kernel). A panic in f is returned as an error.
func OnTracerThread(f func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer func() {
			if r := recover(); r != nil {
				done <- fmt.Errorf("internal error on the tracer thread: %v", r)
			}
		}()
		done <- f()
	}()
	return <-done
}

func request(req, tid int, addr, data uintptr) error {
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, uintptr(req), uintptr(tid), addr, data, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// ErrGone is matched (errors.Is) by every error that reports a thread that exited or was
// killed while it was traced.
var ErrGone = errors.New("thread gone")

// GoneError reports a traced thread that ended.
type GoneError struct {
	Tid int
	How string // "exited with status 1", "killed by signal 9", ...
}

func (e *GoneError) Error() string        { return fmt.Sprintf("thread %d %s", e.Tid, e.How) }
func (e *GoneError) Is(target error) bool { return target == ErrGone }

// DescribeStatus says in words how a thread ended.
func DescribeStatus(ws unix.WaitStatus) string {
	switch {
	case ws.Exited():
		return fmt.Sprintf("exited with status %d", ws.ExitStatus())
	case ws.Signaled():
		return fmt.Sprintf("killed by %v", ws.Signal())
	}
	return fmt.Sprintf("wait status %#x", uint32(ws))
}

// Wait4 waits for one state change of tid (any thread: __WALL), retrying on EINTR.
func Wait4(tid int, flags int) (unix.WaitStatus, error) {
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(tid, &ws, flags|unix.WALL, nil)
		if err == unix.EINTR {
			continue
		}
		return ws, err
	}
}

// StopKind tells which ptrace-stop a thread reached.
type StopKind int

const (
	StopInterrupt StopKind = iota // PTRACE_EVENT_STOP: after PTRACE_INTERRUPT, or a group stop
	StopSyscall                   // syscall entry or exit (PTRACE_O_TRACESYSGOOD)
	StopSignal                    // signal-delivery-stop (or the stop of a new tracee)
	StopEvent                     // another ptrace event (clone, fork, exec, ...)
)

// Stop is one ptrace-stop.
type Stop struct {
	Kind StopKind
	Sig  unix.Signal // the signal of a signal-delivery-stop
}

// Wait waits for tid's next ptrace-stop. A thread that ends instead is a *GoneError.
func Wait(tid int) (Stop, error) {
	ws, err := Wait4(tid, 0)
	if err != nil {
		return Stop{}, fmt.Errorf("wait for thread %d: %w", tid, err)
	}
	switch {
	case ws.Exited() || ws.Signaled():
		return Stop{}, &GoneError{Tid: tid, How: DescribeStatus(ws)}
	case !ws.Stopped():
		return Stop{}, fmt.Errorf("thread %d: unexpected wait status %#x", tid, uint32(ws))
	}
	switch event := int(ws) >> 16; {
	case event == eventStop:
		return Stop{Kind: StopInterrupt, Sig: ws.StopSignal()}, nil
	case int(ws)>>8&0xff == syscallTrap:
		return Stop{Kind: StopSyscall, Sig: unix.SIGTRAP}, nil
	case event != 0:
		return Stop{Kind: StopEvent, Sig: ws.StopSignal()}, nil
	default:
		return Stop{Kind: StopSignal, Sig: ws.StopSignal()}, nil
	}
}

// Seize attaches to tid without stopping it (PTRACE_SEIZE with PTRACE_O_TRACESYSGOOD) and
// then stops it with PTRACE_INTERRUPT, so no signal is ever sent to it. It returns once
// the thread sits in the interrupt stop.
func Seize(tid int) error { return SeizeWith(tid, 0) }

// SeizeWith is Seize with more ptrace options (PTRACE_O_SUSPEND_SECCOMP, for a thread
// whose seccomp filters would refuse the calls injected into it).
func SeizeWith(tid int, opts int) error {
	if err := Attach(tid, opts); err != nil {
		return err
	}
	return WaitInterrupt(tid)
}

// Attach is the first half of SeizeWith: it seizes tid and asks it to stop, without
// waiting for the stop, so that a tracer can ask every thread of a process first and
// wait for them after, while they stop in parallel. A thread that attached but failed
// to take the interrupt is detached again.
func Attach(tid int, opts int) error {
	if err := request(reqSeize, tid, 0, uintptr(unix.PTRACE_O_TRACESYSGOOD|opts)); err != nil {
		if err == unix.ESRCH {
			return &GoneError{Tid: tid, How: "no longer exists"}
		}
		if err == unix.EPERM {
			return fmt.Errorf("thread %d: cannot trace it (already traced, or not permitted): %w", tid, err)
		}
		return fmt.Errorf("seize thread %d: %w", tid, err)
	}
	if err := Interrupt(tid); err != nil {
		_ = Detach(tid)
		return err
	}
	return nil
}

// WaitInterrupt is the second half of SeizeWith: it waits until an attached thread sits
// in its interrupt stop.
func WaitInterrupt(tid int) error {
	for {
		st, err := Wait(tid)
		if err != nil {
			return err
		}
		if st.Kind == StopInterrupt {
			return nil
		}
		// A signal-delivery-stop can only precede the interrupt trap when the signal was
		// dequeued first; deliver it as the kernel would have and wait for the trap.
		if err := Cont(tid, st.Sig); err != nil {
			return err
		}
	}
}

// SetOptions replaces the ptrace options of a stopped tracee; PTRACE_O_TRACESYSGOOD,
// which every seize sets, is kept.
func SetOptions(tid int, opts int) error {
	if err := request(unix.PTRACE_SETOPTIONS, tid, 0, uintptr(unix.PTRACE_O_TRACESYSGOOD|opts)); err != nil {
		return fmt.Errorf("set ptrace options of thread %d: %w", tid, err)
	}
	return nil
}

// Interrupt stops a seized thread (PTRACE_INTERRUPT).
func Interrupt(tid int) error {
	if err := request(reqInterrupt, tid, 0, 0); err != nil {
		return fmt.Errorf("interrupt thread %d: %w", tid, err)
	}
	return nil
}

// Cont resumes a stopped thread, delivering sig (0: none).
func Cont(tid int, sig unix.Signal) error {
	if err := request(unix.PTRACE_CONT, tid, 0, uintptr(sig)); err != nil {
		return fmt.Errorf("continue thread %d: %w", tid, err)
	}
	return nil
}

// Detach lets a thread go (PTRACE_DETACH).
func Detach(tid int) error {
	if err := request(unix.PTRACE_DETACH, tid, 0, 0); err != nil {
		return fmt.Errorf("detach thread %d: %w", tid, err)
	}
	return nil
}

// GetRegs reads a stopped thread's general-purpose registers.
func GetRegs(tid int) (unix.PtraceRegs, error) {
	var r unix.PtraceRegs
	if err := unix.PtraceGetRegs(tid, &r); err != nil {
		return r, fmt.Errorf("read registers of thread %d: %w", tid, err)
	}
	return r, nil
}

// SetRegs writes a stopped thread's general-purpose registers.
func SetRegs(tid int, r *unix.PtraceRegs) error {
	if err := unix.PtraceSetRegs(tid, r); err != nil {
		return fmt.Errorf("write registers of thread %d: %w", tid, err)
	}
	return nil
}

// GetSigmask reads a stopped thread's blocked signals (PTRACE_GETSIGMASK).
func GetSigmask(tid int) (uint64, error) {
	var m uint64
	if err := request(reqGetSigmask, tid, 8, uintptr(unsafe.Pointer(&m))); err != nil {
		return 0, fmt.Errorf("read signal mask of thread %d: %w", tid, err)
	}
	return m, nil
}

// SetSigmask sets a stopped thread's blocked signals (PTRACE_SETSIGMASK): no memory of
// the target is needed, and the kernel re-evaluates pending signals when it resumes.
func SetSigmask(tid int, m uint64) error {
	if err := request(reqSetSigmask, tid, 8, uintptr(unsafe.Pointer(&m))); err != nil {
		return fmt.Errorf("set signal mask of thread %d: %w", tid, err)
	}
	return nil
}

// GetRegset reads one register set (PTRACE_GETREGSET) into buf and returns the part the
// kernel filled. The error is the bare errno; callers say which set they wanted.
func GetRegset(tid int, note uintptr, buf []byte) ([]byte, error) {
	iov := unix.Iovec{Base: &buf[0]}
	iov.SetLen(len(buf))
	if err := request(reqGetRegset, tid, note, uintptr(unsafe.Pointer(&iov))); err != nil {
		return nil, err
	}
	return buf[:iov.Len], nil
}

// SetRegset writes one register set (PTRACE_SETREGSET). The error is the bare errno.
func SetRegset(tid int, note uintptr, buf []byte) error {
	iov := unix.Iovec{Base: &buf[0]}
	iov.SetLen(len(buf))
	return request(reqSetRegset, tid, note, uintptr(unsafe.Pointer(&iov)))
}

// UserDesc is struct user_desc of <asm/ldt.h>: one GDT TLS slot.
type UserDesc struct {
	EntryNumber uint32
	BaseAddr    uint32
	Limit       uint32
	Flags       uint32
}

// GetThreadArea reads GDT TLS slot entry of a stopped thread (PTRACE_GET_THREAD_AREA).
func GetThreadArea(tid int, entry uint32) (UserDesc, error) {
	d := UserDesc{EntryNumber: entry}
	err := request(reqGetThreadArea, tid, uintptr(entry), uintptr(unsafe.Pointer(&d)))
	return d, err
}

// RseqConfig is struct ptrace_rseq_configuration.
type RseqConfig struct {
	RseqAbiPointer uint64
	RseqAbiSize    uint32
	Signature      uint32
	Flags          uint32
	Pad            uint32
}

// GetRseq reads a stopped thread's rseq registration (PTRACE_GET_RSEQ_CONFIGURATION).
func GetRseq(tid int) (RseqConfig, error) {
	var c RseqConfig
	err := request(reqGetRseqConfig, tid, unsafe.Sizeof(c), uintptr(unsafe.Pointer(&c)))
	return c, err
}

// peekSiginfoArgs is struct ptrace_peeksiginfo_args.
type peekSiginfoArgs struct {
	Off   uint64
	Flags uint32
	Nr    int32
}

// maxPendingSignals bounds the queued signals PendingSignals copies.
const maxPendingSignals = 1 << 16

// PendingSignals copies the queued siginfos of tid (shared: the process-wide queue)
// without dequeuing them; each is the raw 128-byte siginfo_t.
func PendingSignals(tid int, shared bool) ([][]byte, error) {
	var out [][]byte
	buf := make([]byte, 128*32)
	for {
		a := peekSiginfoArgs{Off: uint64(len(out)), Nr: 32}
		if shared {
			a.Flags = peekSiginfoShared
		}
		r, _, e := unix.Syscall6(unix.SYS_PTRACE, reqPeekSiginfo, uintptr(tid),
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
		if len(out) > maxPendingSignals {
			return nil, fmt.Errorf("thread %d: more than %d pending signals", tid, maxPendingSignals)
		}
	}
}
