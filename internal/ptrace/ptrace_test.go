package ptrace

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// vdsoCode returns the address and bytes of pid's vDSO.
func vdsoCode(t *testing.T, pid int) (uint64, []byte) {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if !strings.HasSuffix(sc.Text(), "[vdso]") {
			continue
		}
		lo, hi, _ := strings.Cut(strings.Fields(sc.Text())[0], "-")
		start, _ := strconv.ParseUint(lo, 16, 64)
		end, _ := strconv.ParseUint(hi, 16, 64)
		mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
		if err != nil {
			t.Fatal(err)
		}
		defer mem.Close()
		code := make([]byte, end-start)
		if _, err := mem.ReadAt(code, int64(start)); err != nil {
			t.Fatal(err)
		}
		return start, code
	}
	t.Fatalf("process %d has no vDSO", pid)
	return 0, nil
}

// TestInjectIntoSeizedProcess seizes a sleeping child, makes it call getpid and a failing
// close, and lets it go again unharmed.
func TestInjectIntoSeizedProcess(t *testing.T) {
	cmd, pid := startSleeper(t)
	err := OnTracerThread(func() error {
		regs, in, err := seizeForInjection(t, pid)
		if err != nil {
			return err
		}
		got, err := in.Call(pid, regs, unix.SYS_GETPID)
		if err != nil {
			return err
		}
		if int(got) != pid {
			t.Errorf("injected getpid = %d, want %d", got, pid)
		}
		_, err = in.Call(pid, regs, unix.SYS_CLOSE, ^uint64(0))
		var se *SyscallError
		if !errors.As(err, &se) || !errors.Is(err, unix.EBADF) || !strings.Contains(err.Error(), "injected close") {
			t.Errorf("close(-1) injected: %v, want a SyscallError EBADF naming close", err)
		}
		if err := SetRegs(pid, &regs); err != nil {
			return err
		}
		return Detach(pid)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(unix.Signal(0)); err != nil {
		t.Errorf("sleep did not survive the injection: %v", err)
	}
}

// TestWaitReportsGone expects a thread that ends to be reported as ErrGone, with how.
func TestWaitReportsGone(t *testing.T) {
	cmd := exec.Command("sh", "-c", "exit 3")
	if err := cmd.Start(); err != nil {
		t.Skip("cannot start sh:", err)
	}
	_, err := Wait(cmd.Process.Pid)
	if !errors.Is(err, ErrGone) || !strings.Contains(err.Error(), "exited with status 3") {
		t.Errorf("Wait for an exiting child: %v", err)
	}
}

func TestFindSyscallInsn(t *testing.T) {
	if off, err := FindSyscallInsn([]byte{0x90, 0x90, 0x0f, 0x05, 0xc3}); err != nil || off != 2 {
		t.Errorf("FindSyscallInsn = %d, %v; want 2", off, err)
	}
	if _, err := FindSyscallInsn([]byte{0x90, 0x0f, 0xc3}); err == nil {
		t.Error("FindSyscallInsn found a syscall in code without one")
	}
}

// TestRunBatch runs a table of calls in a seized child with BatchCode: the results of the
// calls up to the first failure, none after it, and the child goes on unharmed.
func TestRunBatch(t *testing.T) {
	cmd, pid := startSleeper(t)
	err := OnTracerThread(func() error {
		regs, in, err := seizeForInjection(t, pid)
		if err != nil {
			return err
		}
		page, err := in.Call(pid, regs, unix.SYS_MMAP, 0, 4096, unix.PROT_READ|unix.PROT_WRITE|unix.PROT_EXEC,
			unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uint64(0), 0)
		if err != nil {
			return err
		}
		calls := []BatchCall{{Nr: unix.SYS_GETPID}, {Nr: unix.SYS_GETPPID}, {Nr: unix.SYS_CLOSE, Args: [6]uint64{^uint64(0)}}, {Nr: unix.SYS_GETPID}}
		mem, err := os.OpenFile(fmt.Sprintf("/proc/%d/mem", pid), os.O_RDWR, 0)
		if err != nil {
			return err
		}
		defer mem.Close()
		table := page + 64
		if _, err := mem.WriteAt(BatchCode, int64(page)); err != nil {
			return err
		}
		if _, err := mem.WriteAt(EncodeBatch(calls), int64(table)); err != nil {
			return err
		}
		before, err := GetSigmask(pid)
		if err != nil {
			return err
		}
		if err := in.RunBatch(pid, regs, page, table, len(calls)); err != nil {
			return err
		}
		if m, err := GetSigmask(pid); err != nil || m != before {
			t.Errorf("signal mask after the batch %#x (%v), want %#x as before", m, err, before)
		}
		back := make([]byte, len(calls)*BatchEntrySize)
		if _, err := mem.ReadAt(back, int64(table)); err != nil {
			return err
		}
		got, err := BatchResults(pid, calls, back)
		var se *SyscallError
		if !errors.As(err, &se) || se.Errno != unix.EBADF || se.Nr != unix.SYS_CLOSE {
			t.Errorf("batch error %v, want close's EBADF", err)
		}
		if len(got) != 2 || int(got[0]) != pid || int(got[1]) != os.Getpid() {
			t.Errorf("batch results %v, want [%d %d]", got, pid, os.Getpid())
		}
		if last := back[3*BatchEntrySize+56:]; string(last[:8]) != "\x00\x00\x00\x00\x00\x00\x00\x00" {
			t.Errorf("the call after the failed one ran: %x", last[:8])
		}
		// An injected call from the SIGTRAP stop discards the signal.
		if _, err := in.Call(pid, regs, unix.SYS_MUNMAP, page, 4096); err != nil {
			return err
		}
		if err := SetRegs(pid, &regs); err != nil {
			return err
		}
		return Detach(pid)
	})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if err := cmd.Process.Signal(unix.Signal(0)); err != nil {
		t.Errorf("sleep did not survive the batch: %v", err)
	}
	if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err != nil || strings.Contains(string(st), ") Z") {
		t.Errorf("sleep died after the batch: %s %v", st, err)
	}
}

// startSleeper starts a sleeping child, killed and reaped when the test ends.
func startSleeper(t *testing.T) (*exec.Cmd, int) {
	t.Helper()
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Skip("cannot start sleep:", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd, cmd.Process.Pid
}

// seizeForInjection seizes pid with every signal blocked and returns its registers and
// an Injector at a syscall instruction of its vDSO.
func seizeForInjection(t *testing.T, pid int) (unix.PtraceRegs, Injector, error) {
	if err := Seize(pid); err != nil {
		return unix.PtraceRegs{}, Injector{}, err
	}
	regs, err := GetRegs(pid)
	if err != nil {
		return regs, Injector{}, err
	}
	if err := SetSigmask(pid, ^uint64(0)); err != nil {
		return regs, Injector{}, err
	}
	start, code := vdsoCode(t, pid)
	off, err := FindSyscallInsn(code)
	if err != nil {
		return regs, Injector{}, err
	}
	return regs, Injector{Insn: start + off}, nil
}
