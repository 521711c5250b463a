package restore

import (
	"encoding/binary"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// The helper is the blank process every restored process is cloned from. It is a tiny
// static ELF built here in memory: one page of code at helperBase that exits with status
// 127 should it ever run. It never does: it is executed under ptrace and caught at its exec
// stop, before its first instruction, and then only ever executes syscalls we inject.

const (
	helperBase    = 0x400000 // load address of the helper's only segment
	helperExitRun = 127      // exit status of the helper if it ever ran its own code
)

// helperELF returns the bytes of the helper executable.
func helperELF() []byte {
	const ehdr, phdr = 64, 56
	code := []byte{
		0xb8, 60, 0, 0, 0, // mov eax, SYS_exit
		0xbf, helperExitRun, 0, 0, 0, // mov edi, 127
		0x0f, 0x05, // syscall
	}
	size := ehdr + phdr + len(code)
	b := make([]byte, size)
	le := binary.LittleEndian
	copy(b, []byte{0x7f, 'E', 'L', 'F', 2 /* 64-bit */, 1 /* LE */, 1 /* version */})
	le.PutUint16(b[16:], 2)    // ET_EXEC
	le.PutUint16(b[18:], 0x3e) // EM_X86_64
	le.PutUint32(b[20:], 1)    // EV_CURRENT
	le.PutUint64(b[24:], helperBase+ehdr+phdr)
	le.PutUint64(b[32:], ehdr) // e_phoff
	le.PutUint16(b[52:], ehdr) // e_ehsize
	le.PutUint16(b[54:], phdr) // e_phentsize
	le.PutUint16(b[56:], 1)    // e_phnum
	p := b[ehdr:]
	le.PutUint32(p[0:], 1)             // PT_LOAD
	le.PutUint32(p[4:], 5)             // PF_R|PF_X
	le.PutUint64(p[16:], helperBase)   // p_vaddr
	le.PutUint64(p[24:], helperBase)   // p_paddr
	le.PutUint64(p[32:], uint64(size)) // p_filesz
	le.PutUint64(p[40:], uint64(size)) // p_memsz
	le.PutUint64(p[48:], uint64(unix.Getpagesize()))
	copy(b[ehdr+phdr:], code)
	return b
}

// tracerOptions are the ptrace options of the helper, which every process and thread
// cloned from it inherits: each is traced from its birth, and killed if imgtool dies.
const tracerOptions = unix.PTRACE_O_TRACESYSGOOD | unix.PTRACE_O_TRACEFORK | unix.PTRACE_O_TRACECLONE |
	unix.PTRACE_O_TRACEVFORK | unix.PTRACE_O_EXITKILL

// startHelper executes the helper under ptrace from the calling (tracer) thread and returns
// its pid, stopped at its exec stop with our ptrace options set.
// helperStarts counts the helpers ever started, so that tests can prove a refusal came
// before anything was created.
var helperStarts atomic.Int64

func startHelper() (int, error) {
	helperStarts.Add(1)
	fd, err := unix.MemfdCreate("imgtool-restore-helper", unix.MFD_CLOEXEC)
	if err != nil {
		return 0, fmt.Errorf("creating the restore helper: %w", err)
	}
	f := os.NewFile(uintptr(fd), "imgtool-restore-helper")
	defer f.Close()
	if _, err := f.Write(helperELF()); err != nil {
		return 0, fmt.Errorf("writing the restore helper: %w", err)
	}
	path := fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), fd)
	pid, err := syscall.ForkExec(path, []string{"imgtool-restore-helper"}, &syscall.ProcAttr{
		Env: []string{},
		Sys: &syscall.SysProcAttr{Ptrace: true},
	})
	if err != nil {
		return 0, fmt.Errorf("starting the restore helper: %w", err)
	}
	if err := waitFirstStop(pid); err != nil {
		unix.Kill(pid, unix.SIGKILL)
		reapThread(pid)
		return 0, err
	}
	if err := unix.PtraceSetOptions(pid, tracerOptions); err != nil {
		unix.Kill(pid, unix.SIGKILL)
		reapThread(pid)
		return 0, fmt.Errorf("tracing the restore helper: %w", err)
	}
	return pid, nil
}
