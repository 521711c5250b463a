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
// results of injected syscalls.
func (in *injector) mapScratch(t *thread, size uint64) error {
	size = (size + pageSize - 1) &^ (pageSize - 1)
	ret, err := in.call(t, unix.SYS_MMAP, 0, size, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uint64(0), 0)
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

// checkMembarrier refuses a process registered for membarrier's expedited commands
// (MEMBARRIER_CMD_REGISTER_*: .NET, liburcu): no image field records the registrations,
// and a restored process that was not registered again gets EPERM from the command it
// relies on. The process reports its own (a kernel without the query answers EINVAL:
// nothing can be known there).
func (in *injector) checkMembarrier(t *thread) error {
	regs, err := in.call(t, unix.SYS_MEMBARRIER, membarrierGetRegistrations, 0, 0)
	var serr *ptrace.SyscallError
	switch {
	case errors.As(err, &serr) && serr.Errno == unix.EINVAL:
		return nil
	case err != nil:
		return err
	case regs != 0:
		return refuse(in.pid, -1, fmt.Sprintf("membarrier registrations %#x", regs), "no image field records them: a restored process would not be registered")
	}
	return nil
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
