package restore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imgtool/imgtool/internal/ptrace"
)

// process is one process being restored: traced and stopped in all its threads.
type process struct {
	pid      int
	pl       *procPlan      // nil for the helper
	threads  []*thread      // leader first
	mem      *os.File       // /proc/PID/mem, for arguments and pages
	sysInsn  uint64         // address of a syscall instruction (in the vDSO) to inject at
	scratch  uint64         // address of the scratch area
	specials kernelSpecials // where its vvar, vvar_vclock and vDSO are now
	held     spans          // pages holding a child's content for its fork (cow.go)
	// traps: single injected calls may run as batches, whose trap (ptrace.BatchCode's
	// int3) forces a SIGTRAP: the scratch area is executable and the process's signal
	// actions and pending signals are not restored yet (endSigactions clears it).
	traps bool
	// batchCode: ptrace.BatchCode is in the scratch area already.
	batchCode bool
	// readOnly: its mappings without PROT_WRITE, once its pages are being written
	// (writeMemory).
	readOnly spans
}

func (p *process) leader() *thread { return p.threads[0] }

// openMem opens /proc/PID/mem for reading and writing the process's memory.
func (p *process) openMem() error {
	f, err := os.OpenFile(fmt.Sprintf("/proc/%d/mem", p.pid), os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("opening memory of %d: %w", p.pid, err)
	}
	p.mem = f
	return nil
}

// poke writes b into the process at addr.
func (p *process) poke(addr uint64, b []byte) error {
	if _, err := p.mem.WriteAt(b, int64(addr)); err != nil {
		return fmt.Errorf("writing memory of %d at %#x: %w", p.pid, addr, err)
	}
	return nil
}

// The scratch area: a few pages mapped at the same free address in every process for the
// arguments of injected syscalls, unmapped at the end.
const (
	scratchSize   = 16 * 4096 // a seccomp filter takes up to 32 KiB (seccomp.go)
	scratchArgs   = 0         // clone_args, prctl_mm_map, sigaction, ...
	scratchExtra  = 1024      // set_tid array, auxv, strings
	scratchStrBuf = 8192      // paths and names
	scratchThread = 12288     // the leader's own calls' arguments (threadCalls) in its first batch
)

// stopAndAttach records a new process or thread whose first stop is awaited, with all
// signals blocked so that none is delivered while it is being shaped (they stay pending).
func stopAndAttach(tid int, p *process) (*thread, error) {
	if err := waitFirstStop(tid); err != nil {
		return nil, err
	}
	if err := ptrace.SetSigmask(tid, ^uint64(0)); err != nil {
		return nil, err
	}
	return newThread(tid, p)
}

// cloneArgs is struct clone_args up to set_tid_size (CLONE_ARGS_SIZE_VER1, 80 bytes).
type cloneArgs struct {
	flags, pidfd, childTid, parentTid, exitSignal, stack, stackSize, tls, setTid, setTidSize uint64
}

// pidRetry bounds how long a clone3 keeps retrying a PID the kernel still holds (a
// just-reaped zombie's PID can stay referenced by its process group for a moment).
const pidRetry = 3 * time.Second

// clone3 makes t create a child process or thread with exactly the id want, retrying
// briefly while the id is still held. The child starts stopped (auto-attached).
func (t *thread) clone3(flags, exitSignal uint64, want int) error {
	p := t.proc
	args := cloneArgs{flags: flags, exitSignal: exitSignal, setTid: p.scratch + scratchExtra, setTidSize: 1}
	var buf bytes.Buffer
	binary.Write(&buf, binary.LittleEndian, &args)
	if err := p.poke(p.scratch+scratchArgs, buf.Bytes()); err != nil {
		return err
	}
	var tid [8]byte
	binary.LittleEndian.PutUint32(tid[:], uint32(want))
	if err := p.poke(p.scratch+scratchExtra, tid[:]); err != nil {
		return err
	}
	deadline := time.Now().Add(pidRetry)
	for {
		got, err := t.syscall(unix.SYS_CLONE3, p.scratch+scratchArgs, uint64(buf.Len()))
		if errors.Is(err, unix.EEXIST) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		if errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("pid %d is in use", want)
		}
		if err != nil {
			return fmt.Errorf("creating %d: %w", want, err)
		}
		if int(got) != want {
			return fmt.Errorf("creating %d: the kernel gave pid %d", want, got)
		}
		return nil
	}
}
