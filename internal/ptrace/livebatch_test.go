package ptrace

import (
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestLiveBatchCodeIsTheSource assembles testdata/livebatch.S, when GNU as is there, and
// compares its bytes and labels with liveBatchCode and the offsets.
func TestLiveBatchCodeIsTheSource(t *testing.T) {
	as, err := exec.LookPath("as")
	if err != nil {
		t.Skip("no assembler (GNU as) to check liveBatchCode against its source")
	}
	objcopy, err := exec.LookPath("objcopy")
	if err != nil {
		t.Skip("no objcopy")
	}
	dir := t.TempDir()
	obj, bin := dir+"/live.o", dir+"/live.bin"
	if out, err := exec.Command(as, "-o", obj, "testdata/livebatch.S").CombinedOutput(); err != nil {
		t.Fatalf("as: %v %s", err, out)
	}
	if out, err := exec.Command(objcopy, "-O", "binary", "-j", ".text", obj, bin).CombinedOutput(); err != nil {
		t.Fatalf("objcopy: %v %s", err, out)
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != LiveTableOff-8 || string(b[:len(liveBatchCode)]) != string(liveBatchCode) {
		t.Errorf("testdata/livebatch.S assembles to %d bytes, %x; liveBatchCode is %x", len(b), b, liveBatchCode)
	}
	nm, err := exec.Command("nm", obj).Output()
	if err != nil {
		t.Skip("no nm")
	}
	for _, want := range []string{fmt.Sprintf("%016x t stop", LiveStopOff), fmt.Sprintf("%016x t data", liveDataOff)} {
		if !strings.Contains(string(nm), want) {
			t.Errorf("the source's labels %q lack %q", nm, want)
		}
	}
}

// liveCalls are the calls of the tests: their results say the calls ran, all of them.
var liveCalls = []BatchCall{{Nr: unix.SYS_GETPID}, {Nr: unix.SYS_CLOSE, Args: [6]uint64{^uint64(0)}}, {Nr: unix.SYS_GETPPID}}

// TestLiveBatch runs a live batch in a seized sleep(1), traced all along: every call ran
// (the failed one included), the thread stops where the code says, and once given back
// its registers and mask it sleeps on and exits 0.
func TestLiveBatch(t *testing.T) {
	cmd, pid := startShortSleeper(t)
	err := OnTracerThread(func() error {
		regs, in, mask, area, mem, err := prepareLive(t, pid)
		if err != nil {
			return err
		}
		defer mem.Close()
		if err := in.RunLiveBatch(pid, regs, area, len(liveCalls), unix.SIGURG); err != nil {
			return err
		}
		table := make([]byte, len(liveCalls)*LiveEntrySize)
		if _, err := mem.ReadAt(table, int64(area+LiveTableOff)); err != nil {
			return err
		}
		res := func(i int) int64 { return int64(binary.LittleEndian.Uint64(table[i*LiveEntrySize+56:])) }
		if int(res(0)) != pid || res(1) != -int64(unix.EBADF) || int(res(2)) != os.Getpid() {
			t.Errorf("results %d %d %d, want %d, -EBADF, %d", res(0), res(1), res(2), pid, os.Getpid())
		}
		if err := SetRegs(pid, &regs); err != nil {
			return err
		}
		if err := SetSigmask(pid, mask); err != nil {
			return err
		}
		return Detach(pid)
	})
	if err != nil {
		t.Fatal(err)
	}
	sleptWell(t, cmd, pid)
}

// TestLiveBatchSurvivesTheTracer lets a seized sleep(1) go, as the death of its tracer
// would, at each point of a live batch: before it starts, inside its calls (at a
// syscall stop), and at its end. Each time the thread puts its own registers and signal
// mask back: it sleeps on and exits 0.
func TestLiveBatchSurvivesTheTracer(t *testing.T) {
	for _, steps := range []int{0, 1, 2, 3, -1} {
		name := fmt.Sprintf("after %d syscall stops", steps)
		if steps < 0 {
			name = "at the end"
		}
		t.Run(name, func(t *testing.T) {
			cmd, pid := startShortSleeper(t)
			var before uint64
			err := OnTracerThread(func() error {
				regs, in, mask, area, mem, err := prepareLive(t, pid)
				if err != nil {
					return err
				}
				defer mem.Close()
				before = mask
				if steps < 0 {
					if err := in.RunLiveBatch(pid, regs, area, len(liveCalls), unix.SIGURG); err != nil {
						return err
					}
					return Detach(pid)
				}
				regs.Rip, regs.Rbx, regs.R12, regs.Orig_rax = area, area+LiveTableOff, uint64(len(liveCalls)), ^uint64(0)
				if err := SetRegs(pid, &regs); err != nil {
					return err
				}
				for i := 0; i < steps; i++ {
					if err := in.toSyscallStop(pid, 0); err != nil {
						return err
					}
				}
				return Detach(pid)
			})
			if err != nil {
				t.Fatal(err)
			}
			waitAsleep(t, pid)
			if m := sigBlk(t, pid); m != before {
				t.Errorf("signal mask %#x once let go, want %#x", m, before)
			}
			sleptWell(t, cmd, pid)
		})
	}
}

// startShortSleeper starts sleep 0.5, so that it is seized inside its nanosleep.
func startShortSleeper(t *testing.T) (*exec.Cmd, int) {
	t.Helper()
	cmd := exec.Command("sleep", "0.5")
	if err := cmd.Start(); err != nil {
		t.Skip("cannot start sleep:", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// Until it sleeps: seized in its start-up, it would have no system call to restart.
	waitAsleep(t, cmd.Process.Pid)
	return cmd, cmd.Process.Pid
}

// waitAsleep waits until pid sleeps in nanosleep, clock_nanosleep or restart_syscall
// (/proc/PID/syscall), for 5 s at most (then the checks that follow tell what went wrong).
func waitAsleep(t *testing.T, pid int) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(time.Millisecond) {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/syscall", pid))
		for _, nr := range []string{"230 ", "35 ", "219 "} {
			if strings.HasPrefix(string(b), nr) {
				return
			}
		}
	}
}

// prepareLive seizes pid, maps an executable page and writes the live batch area of
// liveCalls there, ending with SIGURG (at its default action in sleep).
func prepareLive(t *testing.T, pid int) (unix.PtraceRegs, Injector, uint64, uint64, *os.File, error) {
	t.Helper()
	if err := Seize(pid); err != nil {
		return unix.PtraceRegs{}, Injector{}, 0, 0, nil, err
	}
	mask, err := GetSigmask(pid)
	if err != nil {
		return unix.PtraceRegs{}, Injector{}, 0, 0, nil, err
	}
	if err := SetSigmask(pid, ^uint64(0)); err != nil {
		return unix.PtraceRegs{}, Injector{}, 0, 0, nil, err
	}
	regs, err := GetRegs(pid)
	if err != nil {
		return regs, Injector{}, 0, 0, nil, err
	}
	start, code := vdsoCode(t, pid)
	off, err := FindSyscallInsn(code)
	if err != nil {
		return regs, Injector{}, 0, 0, nil, err
	}
	in := Injector{Insn: start + off}
	area, err := in.Call(pid, regs, unix.SYS_MMAP, 0, 4096, unix.PROT_READ|unix.PROT_WRITE|unix.PROT_EXEC,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uint64(0), 0)
	if err != nil {
		return regs, in, 0, 0, nil, err
	}
	mem, err := os.OpenFile(fmt.Sprintf("/proc/%d/mem", pid), os.O_RDWR, 0)
	if err != nil {
		return regs, in, 0, 0, nil, err
	}
	if _, err := mem.WriteAt(LiveArea(liveCalls, pid, pid, unix.SIGURG, mask, Resumable(regs)), int64(area)); err != nil {
		mem.Close()
		return regs, in, 0, 0, nil, err
	}
	return regs, in, mask, area, mem, nil
}

// sigBlk reads a thread's signal mask from /proc.
func sigBlk(t *testing.T, pid int) uint64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "SigBlk:"); ok {
			var m uint64
			fmt.Sscanf(strings.TrimSpace(v), "%x", &m)
			return m
		}
	}
	t.Fatal("no SigBlk")
	return 0
}

// sleptWell waits for sleep to end: it must exit 0 (a thread resumed with wrong registers
// crashes, one whose nanosleep was not restarted exits early or fails).
func sleptWell(t *testing.T, cmd *exec.Cmd, pid int) {
	t.Helper()
	if err := cmd.Wait(); err != nil {
		t.Errorf("sleep %d after the batch: %v", pid, err)
	}
}
