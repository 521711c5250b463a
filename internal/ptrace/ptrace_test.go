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
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Skip("cannot start sleep:", err)
	}
	pid := cmd.Process.Pid
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	err := OnTracerThread(func() error {
		if err := Seize(pid); err != nil {
			return err
		}
		regs, err := GetRegs(pid)
		if err != nil {
			return err
		}
		if err := SetSigmask(pid, ^uint64(0)); err != nil {
			return err
		}
		start, code := vdsoCode(t, pid)
		off, err := FindSyscallInsn(code)
		if err != nil {
			return err
		}
		in := Injector{Insn: start + off}
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
