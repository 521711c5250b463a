package dump

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"
)

// Syscall injection: state only the process itself can report (brk, signal handlers, the
// alternate stack, clear_child_tid, itimers, ...) is read by making a stopped thread execute
// one system call. The target's code is never written: the thread's instruction pointer is
// pointed at an existing `syscall` instruction in its vDSO, and PTRACE_SYSCALL steps it to
// the syscall entry and exit stops. orig_rax = -1 keeps the kernel's restart logic away from
// the borrowed registers. All signals are blocked while injecting, so no handler runs on
// borrowed registers.

const (
	sysMmap           = 9
	sysMunmap         = 11
	sysBrk            = 12
	sysRtSigaction    = 13
	sysGetitimer      = 36
	sysSigaltstack    = 131
	sysPrctl          = 157
	sysTimerGettime   = 224
	sysTimerGetoverun = 225

	prGetPdeathsig      = 2
	prGetDumpable       = 3
	prGetSecurebits     = 27
	prGetTidAddress     = 40
	prGetChildSubreaper = 37
	prGetThpDisable     = 42
)

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
	i := bytes.Index(buf, []byte{0x0f, 0x05})
	if i < 0 {
		return 0, fmt.Errorf("process %d: no syscall instruction in its vDSO", pid)
	}
	return start + uint64(i), nil
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

// call makes thread t execute syscall nr(args) and returns the raw result.
func (in *injector) call(t *thread, nr uint64, args ...uint64) (int64, error) {
	if len(args) > 6 {
		return 0, fmt.Errorf("inject: %d arguments", len(args))
	}
	if !t.masked {
		// Block everything (the kernel keeps SIGKILL and SIGSTOP deliverable).
		if err := setSigmask(t.tid, ^uint64(0)); err != nil {
			return 0, err
		}
		t.masked = true
	}
	var a [6]uint64
	copy(a[:], args)
	r := t.orig
	r.Rip = in.insn
	r.Rax = nr
	r.Orig_rax = ^uint64(0)
	r.Rdi, r.Rsi, r.Rdx, r.R10, r.R8, r.R9 = a[0], a[1], a[2], a[3], a[4], a[5]
	if err := setRegs(t.tid, &r); err != nil {
		return 0, err
	}
	t.injected = true
	for step := 0; step < 2; step++ { // syscall entry, then exit
		if err := ptrace(unix.PTRACE_SYSCALL, t.tid, 0, 0); err != nil {
			return 0, fmt.Errorf("step thread %d: %w", t.tid, err)
		}
		kind, sig, err := waitStop(t.tid)
		if err != nil {
			return 0, err
		}
		if kind != stopSyscall {
			return 0, fmt.Errorf("thread %d: injected syscall %d stopped by signal %v instead of a syscall stop", t.tid, nr, sig)
		}
	}
	out, err := getRegs(t.tid)
	if err != nil {
		return 0, err
	}
	if out.Rip != in.insn+2 {
		return 0, fmt.Errorf("thread %d: injected syscall %d returned at %#x, want %#x", t.tid, nr, out.Rip, in.insn+2)
	}
	return int64(out.Rax), nil
}

// callOK is call for syscalls that return 0 or -errno.
func (in *injector) callOK(t *thread, name string, nr uint64, args ...uint64) (int64, error) {
	ret, err := in.call(t, nr, args...)
	if err != nil {
		return 0, err
	}
	if ret < 0 && ret > -4096 {
		return 0, fmt.Errorf("thread %d: injected %s: %w", t.tid, name, unix.Errno(-ret))
	}
	return ret, nil
}

// mapScratch maps size bytes of private anonymous memory in the target to receive the
// results of injected syscalls.
func (in *injector) mapScratch(t *thread, size uint64) error {
	size = (size + pageSize - 1) &^ (pageSize - 1)
	ret, err := in.callOK(t, "mmap", sysMmap, 0, size, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uint64(0), 0)
	if err != nil {
		return err
	}
	in.scratch, in.size = uint64(ret), size
	return nil
}

// unmapScratch removes the scratch mapping again.
func (in *injector) unmapScratch(t *thread) error {
	if in.scratch == 0 {
		return nil
	}
	_, err := in.callOK(t, "munmap", sysMunmap, in.scratch, in.size)
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
