package dump

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/imgtool/imgtool/internal/procfs"
	"github.com/imgtool/imgtool/internal/ptrace"
)

// Syscall injection (internal/ptrace) reads what only the process itself can report (brk,
// signal handlers, the alternate stack, clear_child_tid, itimers, ...). All signals of a
// thread are blocked before its first injected call, so no handler runs on borrowed
// registers; the results land in a scratch mapping that is removed again before memory is
// read.

// findSyscallInsn returns the address of a `syscall` instruction (0f 05) inside the vDSO
// mapping [start, end) of pid.
func findSyscallInsn(pid int, start, end uint64) (uint64, error) {
	if end <= start || end-start > 1<<20 {
		return 0, fmt.Errorf("process %d: bad vDSO range %#x-%#x", pid, start, end)
	}
	buf := make([]byte, end-start)
	if err := readRemote(pid, start, buf); err != nil {
		return 0, fmt.Errorf("process %d: read vDSO: %w", pid, err)
	}
	off, err := ptrace.FindSyscallInsn(buf)
	if err != nil {
		return 0, fmt.Errorf("process %d: %w", pid, err)
	}
	return start + off, nil
}

// readRemote copies len(buf) bytes at addr of pid with process_vm_readv.
func readRemote(pid int, addr uint64, buf []byte) error {
	for len(buf) > 0 {
		local := []unix.Iovec{{Base: &buf[0]}}
		local[0].SetLen(len(buf))
		remote := []unix.RemoteIovec{{Base: uintptr(addr), Len: len(buf)}}
		n, err := unix.ProcessVMReadv(pid, local, remote, 0)
		if err != nil {
			return fmt.Errorf("process_vm_readv %#x+%d: %w", addr, len(buf), err)
		}
		if n == 0 {
			return fmt.Errorf("process_vm_readv %#x+%d: short read", addr, len(buf))
		}
		buf = buf[n:]
		addr += uint64(n)
	}
	return nil
}

// injector runs system calls in the threads of one stopped process.
type injector struct {
	pid     int
	insn    uint64 // address of the syscall instruction
	scratch uint64 // address of the scratch mapping, 0 until mapped
	size    uint64
	exec    bool        // the scratch mapping is executable: live batches may run there
	sig     unix.Signal // the signal that ends a live batch, 0 for none (chooseLiveSignal)
}

// call makes thread t execute syscall nr(args) and returns its result; a result in the
// errno range is an error naming the thread and the call.
func (in *injector) call(t *thread, nr uintptr, args ...uint64) (uint64, error) {
	if !t.masked {
		// Block everything (the kernel keeps SIGKILL and SIGSTOP deliverable).
		if err := ptrace.SetSigmask(t.tid, ^uint64(0)); err != nil {
			return 0, err
		}
		t.masked = true
	}
	t.injected = true
	return ptrace.Injector{Insn: in.insn, DiscardStopSignals: t.jobStopped}.Call(t.tid, t.orig, nr, args...)
}

// mapScratch maps size bytes of private anonymous memory in the target to receive the
// results of injected syscalls, executable for live batches where the process may have
// such a mapping (a memory-deny-write-execute policy refuses it: then one call at a time).
func (in *injector) mapScratch(t *thread, size uint64) error {
	size = (size + pageSize - 1) &^ (pageSize - 1)
	mmap := func(prot uint64) (uint64, error) {
		return in.call(t, unix.SYS_MMAP, 0, size, prot, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uint64(0), 0)
	}
	ret, err := mmap(unix.PROT_READ | unix.PROT_WRITE | unix.PROT_EXEC)
	in.exec = err == nil
	if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
		ret, err = mmap(unix.PROT_READ | unix.PROT_WRITE)
	}
	if err != nil {
		return err
	}
	in.scratch, in.size = ret, size
	return nil
}

// checkLockFuture refuses a process that called mlockall(MCL_FUTURE): every mapping it
// makes from then on is locked, which no image field records (CRIU drops it too), so a
// restored process would lock nothing new. It is seen on the scratch mapping, just made:
// the kernel locked it (VM_LOCKED, with or without MCL_ONFAULT), which adds its size to
// the process's locked memory, VmLck of /proc/PID/status (before: the status read once the
// tree was stopped, before the scratch mapping; nothing else runs in the process in
// between). One short file, where reading smaps again to find the mapping's "lo" flag
// cost a walk of every mapping (a third of the dump of a process with 20,000 of them),
// and missed a scratch mapping the kernel merged into a locked neighbour.
func (in *injector) checkLockFuture(before procfs.Status) error {
	after, err := procfs.ReadStatus(procfs.Path(in.pid, "status"))
	if err != nil {
		return err
	}
	b, err1 := vmLckKiB(before)
	a, err2 := vmLckKiB(after)
	if err := errors.Join(err1, err2); err != nil {
		return fmt.Errorf("process %d: %w", in.pid, err)
	}
	if a > b {
		return refuse(in.pid, -1, "mlockall(MCL_FUTURE)", "memory locked as it is mapped is not recorded by CRIU's images: a restored process would lock nothing it maps")
	}
	return nil
}

// vmLckKiB parses status's "VmLck:   4 kB".
func vmLckKiB(st procfs.Status) (uint64, error) {
	f := strings.Fields(st["VmLck"])
	if len(f) != 2 || f[1] != "kB" {
		return 0, fmt.Errorf("status VmLck: %q", st["VmLck"])
	}
	return strconv.ParseUint(f[0], 10, 64)
}

// membarrierGetRegistrations is MEMBARRIER_CMD_GET_REGISTRATIONS (Linux 6.3).
const membarrierGetRegistrations = 1 << 9

// membarrierRefusal refuses a process registered for membarrier's expedited commands
// (MEMBARRIER_CMD_REGISTER_*: .NET, liburcu): no image field records the registrations,
// and a restored process that was not registered again gets EPERM from the command it
// relies on. The process reports its own, by the last call of its leader's batch
// (injectAll), where a call of its own cost two more ptrace stops a process.
func membarrierRefusal(pid int, registrations uint64) error {
	return refuse(pid, -1, fmt.Sprintf("membarrier registrations %#x", registrations), "no image field records them: a restored process would not be registered")
}

// membarrierUnknown tells whether err is the membarrier query's EINVAL: a kernel without
// the query (before Linux 6.3), where nothing can be known.
func membarrierUnknown(err error) bool {
	var serr *ptrace.SyscallError
	return errors.As(err, &serr) && serr.Nr == unix.SYS_MEMBARRIER && serr.Errno == unix.EINVAL
}

// unmapScratch removes the scratch mapping again.
func (in *injector) unmapScratch(t *thread) error {
	if in.scratch == 0 {
		return nil
	}
	_, err := in.call(t, unix.SYS_MUNMAP, in.scratch, in.size)
	if err == nil {
		in.scratch = 0
	}
	return err
}

func (in *injector) read(off uint64, buf []byte) error {
	if off+uint64(len(buf)) > in.size {
		return fmt.Errorf("scratch read %d+%d beyond %d", off, len(buf), in.size)
	}
	return readRemote(in.pid, in.scratch+off, buf)
}

func le64(b []byte) uint64 { return binary.LittleEndian.Uint64(b) }
func le32(b []byte) uint32 { return binary.LittleEndian.Uint32(b) }

// Live batches (ptrace.RunLiveBatch): where it may, a thread makes all its injected reads
// in one go, two ptrace stops where one call at a time takes two a call (a process's 62
// signal actions were 80% of a tree's injected calls), and it still gets its registers
// back by itself if imgtool dies meanwhile. A batch ends with a signal the thread sends
// itself; it may run only where that signal cannot do anything untraced, and only where
// nothing but the tracer stands between the thread and its calls.

// liveSignals are the signals a live batch may end with, in order of preference: their
// default action is to ignore them.
var liveSignals = []unix.Signal{unix.SIGURG, unix.SIGWINCH, unix.SIGCHLD}

// chooseLiveSignal returns a signal of liveSignals the process (its status st) does not
// catch and has not pending, or 0: a handler would run if imgtool died during the batch,
// and a pending one would be taken for the batch's end and discarded.
func chooseLiveSignal(st procfs.Status) unix.Signal {
	caught, err1 := st.Hex("SigCgt")
	shared, err2 := st.Hex("ShdPnd")
	if err1 != nil || err2 != nil {
		return 0
	}
	for _, sig := range liveSignals {
		if bit := uint64(1) << (sig - 1); caught&bit == 0 && shared&bit == 0 {
			return sig
		}
	}
	return 0
}

// liveOK tells whether thread t may run a live batch: the scratch mapping is executable,
// the process has a signal to end it with, t has that signal not pending, is not in a
// job-control stop (untraced it would run on instead of staying stopped) and has no
// seccomp filter (suspended for the tracer only: untraced, a filter could kill the
// thread for one of the calls).
func (in *injector) liveOK(t *thread) bool {
	if !in.exec || in.sig == 0 || t.jobStopped || t.state.status["Seccomp"] != "0" {
		return false
	}
	pending, err := t.state.status.Hex("SigPnd")
	return err == nil && pending&(1<<(in.sig-1)) == 0
}

// run makes thread t make calls and returns their results: as one live batch whose area
// is at off in the scratch mapping where liveOK allows it (every call runs), else one
// call at a time (up to the first that fails). A result in the errno range is an error,
// as from call.
func (in *injector) run(t *thread, calls []ptrace.BatchCall, off uint64) ([]uint64, error) {
	if !in.liveOK(t) {
		out := make([]uint64, 0, len(calls))
		for _, c := range calls {
			ret, err := in.call(t, c.Nr, c.Args[:]...)
			if err != nil {
				return out, err
			}
			out = append(out, ret)
		}
		return out, nil
	}
	area, err := in.prepare(t, calls, off)
	if err != nil {
		return nil, err
	}
	if err := writeRemote(in.pid, in.scratch+off, area); err != nil {
		return nil, err
	}
	if err := in.launch(t, calls, off); err != nil {
		return nil, err
	}
	if err := in.wait(t, calls, off); err != nil {
		return nil, err
	}
	table := make([]byte, len(calls)*ptrace.LiveEntrySize)
	if err := readRemote(in.pid, in.scratch+off+ptrace.LiveTableOff, table); err != nil {
		return nil, err
	}
	return ptrace.BatchResults(t.tid, calls, table)
}

// prepare blocks t's signals and returns the live batch of calls of thread t (liveOK),
// for its area at off of the scratch mapping; launch starts it once it is written there,
// and wait waits for its end, its results then in its table (ptrace.LiveTableOff into
// the area). The batches of several threads, each in its own area, may be written at
// once and launched before any is waited for.
func (in *injector) prepare(t *thread, calls []ptrace.BatchCall, off uint64) ([]byte, error) {
	if off+ptrace.LiveAreaSize(len(calls)) > in.size {
		return nil, fmt.Errorf("process %d: a batch of %d calls at %d beyond the scratch mapping's %d bytes", in.pid, len(calls), off, in.size)
	}
	if !t.masked {
		if err := ptrace.SetSigmask(t.tid, ^uint64(0)); err != nil {
			return nil, err
		}
		t.masked = true
	}
	return ptrace.LiveArea(calls, in.pid, t.tid, in.sig, t.origMask, ptrace.Resumable(t.orig)), nil
}

func (in *injector) launch(t *thread, calls []ptrace.BatchCall, off uint64) error {
	t.injected = true
	inj := ptrace.Injector{Insn: in.insn, DiscardStopSignals: t.jobStopped}
	return inj.StartLiveBatch(t.tid, t.orig, in.scratch+off, len(calls))
}

func (in *injector) wait(t *thread, calls []ptrace.BatchCall, off uint64) error {
	inj := ptrace.Injector{Insn: in.insn, DiscardStopSignals: t.jobStopped}
	return inj.FinishLiveBatch(t.tid, in.scratch+off, len(calls), in.sig)
}

// writeRemote copies buf to addr of pid with process_vm_writev.
func writeRemote(pid int, addr uint64, buf []byte) error {
	for len(buf) > 0 {
		local := []unix.Iovec{{Base: &buf[0]}}
		local[0].SetLen(len(buf))
		remote := []unix.RemoteIovec{{Base: uintptr(addr), Len: len(buf)}}
		n, err := unix.ProcessVMWritev(pid, local, remote, 0)
		if err != nil {
			return fmt.Errorf("process_vm_writev %#x+%d: %w", addr, len(buf), err)
		}
		if n == 0 {
			return fmt.Errorf("process_vm_writev %#x+%d: short write", addr, len(buf))
		}
		buf = buf[n:]
		addr += uint64(n)
	}
	return nil
}
