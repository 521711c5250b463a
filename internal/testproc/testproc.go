// Package testproc starts the C programs the engine tests checkpoint and restore: it
// compiles them with gcc (once per test binary), launches them detached the way the real
// CRIU sets' programs ran (fixtures/src/launch.c: own session, stdin /dev/null, stdout and
// stderr to a log, no other fds), waits on their logs, and kills and reaps them when a
// test ends. The test binary is a child subreaper (Main), so that every launched or
// restored process whose parent dies becomes its child and can be reaped (PID 1 here does
// not reap orphans).
package testproc

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Env is the environment the programs run with, as for the real CRIU sets (fixtures
// README), without HOME.
var Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"}

var (
	buildMu  sync.Mutex
	binDir   string
	binaries = map[string]string{} // gcc arguments -> binary
)

// Main runs the tests of m as a child subreaper and removes the compiled programs
// afterwards; a package's TestMain calls os.Exit(testproc.Main(m)).
func Main(m *testing.M) int {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintln(os.Stderr, "becoming a child subreaper:", err)
		return 1
	}
	// Launched programs get no fds but 0, 1 and 2, as with launch.c: whatever the test
	// binary inherited without close-on-exec (go test leaves a pipe open) gets it.
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		fmt.Fprintln(os.Stderr, "close-on-exec for inherited fds:", err)
		return 1
	}
	code := m.Run()
	buildMu.Lock()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	buildMu.Unlock()
	return code
}

// RequireRoot skips a test that needs root (ptrace of other processes, set_tid) or gcc.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("checkpointing and restoring processes needs root")
	}
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("gcc is not installed")
	}
}

// Build compiles the C program src (with -lpthread and any extra gcc flags) and returns
// the binary, compiling each source only once per test binary. The binaries' directory
// is world-readable: programs may run under other uids.
func Build(t testing.TB, src string, flags ...string) string {
	t.Helper()
	RequireRoot(t)
	abs, err := filepath.Abs(src)
	if err != nil {
		t.Fatal(err)
	}
	key := strings.Join(append([]string{abs}, flags...), "\x00")
	buildMu.Lock()
	defer buildMu.Unlock()
	if bin, ok := binaries[key]; ok {
		return bin
	}
	dir, err := binaryDir()
	if err != nil {
		t.Fatal(err)
	}
	name := strings.TrimSuffix(filepath.Base(src), ".c")
	bin := filepath.Join(dir, fmt.Sprintf("%s-%d", name, len(binaries)))
	args := append([]string{"-O1", "-g", "-Wall", "-o", bin, abs}, flags...)
	if out, err := exec.Command("gcc", append(args, "-lpthread")...).CombinedOutput(); err != nil {
		t.Fatalf("gcc %s: %v\n%s", src, err, out)
	}
	binaries[key] = bin
	return bin
}

// CRIU returns the CRIU 4.2 binary named by IMGTOOL_CRIU, for the tests that prove
// compatibility with the real thing; without it they are skipped, saying why. They need
// root too.
func CRIU(t testing.TB) string {
	t.Helper()
	bin := os.Getenv("IMGTOOL_CRIU")
	if bin == "" {
		t.Skip("IMGTOOL_CRIU is not set: no CRIU 4.2 binary to check against (build one from upstream's v4.2 tag)")
	}
	RequireRoot(t)
	if out, err := exec.Command(bin, "--version").CombinedOutput(); err != nil || !strings.Contains(string(out), "Version: 4.") {
		t.Fatalf("IMGTOOL_CRIU=%s: not a CRIU 4 binary: %v %s", bin, err, out)
	}
	return bin
}

// BuildImgtool builds the imgtool binary (as `make build` does) once per test binary run
// and returns its path. Tests that need the real command (signals, limits, other
// credentials) run it.
func BuildImgtool(t testing.TB) string {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go tool to build imgtool")
	}
	buildMu.Lock()
	defer buildMu.Unlock()
	const key = "imgtool"
	if bin, ok := binaries[key]; ok {
		return bin
	}
	dir, err := binaryDir()
	if err != nil {
		t.Fatal(err)
	}
	_, file, _, _ := runtime.Caller(0)
	main := filepath.Join(filepath.Dir(file), "..", "..", "cmd", "imgtool")
	bin := filepath.Join(dir, "imgtool")
	cmd := exec.Command("go", "build", "-trimpath", "-tags", "urfave_cli_no_docs", "-o", bin, main)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build imgtool: %v\n%s", err, out)
	}
	binaries[key] = bin
	return bin
}

// binaryDir returns the world-readable folder of the built programs; buildMu is held.
func binaryDir() (string, error) {
	if binDir != "" {
		return binDir, nil
	}
	dir, err := os.MkdirTemp("", "imgtool-testproc-")
	if err != nil {
		return "", err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", err
	}
	binDir = dir
	return dir, nil
}

// Options say how to launch a program.
type Options struct {
	Dir   string   // working directory; a new temporary one if empty
	Log   string   // log file (stdout and stderr); Dir/NAME.log if empty
	Env   []string // environment; Env if nil
	Ready string   // the program is ready once its log holds this; "pid=" if empty
	// Cred runs the program under other ids (and supplementary groups), AmbientCaps with
	// these capabilities raised in its ambient set.
	Cred        *syscall.Credential
	AmbientCaps []uintptr
}

// Proc is a launched program.
type Proc struct {
	Pid int
	Log string
	Dir string
}

// Launch starts bin with args as Options say, the way fixtures/src/launch.c does: in its
// own session, stdin /dev/null, stdout and stderr to the log (truncated), no other fds.
// "{dir}" in args stands for the working directory. It waits until the program is ready,
// and kills and reaps it and all its descendants when the test ends.
func Launch(t testing.TB, bin string, opts Options, args ...string) *Proc {
	t.Helper()
	p := &Proc{Dir: opts.Dir, Log: opts.Log}
	if p.Dir == "" {
		p.Dir = t.TempDir()
	}
	if p.Log == "" {
		p.Log = filepath.Join(p.Dir, strings.SplitN(filepath.Base(bin), "-", 2)[0]+".log")
	}
	args = append([]string(nil), args...)
	for i, a := range args {
		args[i] = strings.ReplaceAll(a, "{dir}", p.Dir)
	}
	null, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	log, err := os.OpenFile(p.Log, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	cmd := exec.Command(bin, args...)
	cmd.Dir, cmd.Env = p.Dir, opts.Env
	if cmd.Env == nil {
		cmd.Env = Env
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = null, log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Credential: opts.Cred, AmbientCaps: opts.AmbientCaps}
	if err := cmd.Start(); err != nil {
		t.Fatalf("launching %s: %v", bin, err)
	}
	// Never cmd.Wait: a wait of ours must not race the tracer's. Cleanup reaps.
	p.Pid = cmd.Process.Pid
	t.Cleanup(func() { KillAndReap(Descendants(p.Pid)) })
	ready := opts.Ready
	if ready == "" {
		ready = "pid="
	}
	p.WaitLog(t, ready, 10*time.Second)
	return p
}

// ReadLog returns the whole log.
func (p *Proc) ReadLog(t testing.TB) string {
	t.Helper()
	return LogAfter(t, p.Log, 0)
}

// WaitLog waits until the log holds s.
func (p *Proc) WaitLog(t testing.TB, s string, d time.Duration) {
	t.Helper()
	WaitFor(t, d, fmt.Sprintf("the log of %d to show %q", p.Pid, s), func() bool {
		return strings.Contains(p.ReadLog(t), s)
	})
}

// LogAfter returns what was written to a log after offset off.
func LogAfter(t testing.TB, name string, off int64) string {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.NewSectionReader(f, off, 1<<30))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// minWait is the shortest time a test waits for a program before failing: on a loaded
// two-core machine a program that runs in milliseconds here can take seconds. A wait
// ends as soon as its condition holds, so a long bound costs nothing when all is well.
const minWait = 30 * time.Second

// WaitFor polls cond until it holds, failing the test after d (at least minWait).
func WaitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(max(d, minWait))
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Descendants returns pid and every live descendant of it, parents first.
func Descendants(pid int) []int {
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", out[i]))
		for _, task := range tasks {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", out[i], task.Name()))
			for _, f := range strings.Fields(string(b)) {
				if c, err := strconv.Atoi(f); err == nil {
					out = append(out, c)
				}
			}
		}
	}
	return out
}

// KillAndReap kills pids and reaps those that are our children (all of them, for a
// subreaper), waiting at most a few seconds.
func KillAndReap(pids []int) {
	for _, pid := range pids {
		unix.Kill(pid, unix.SIGKILL)
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range pids {
		for time.Now().Before(deadline) {
			var ws unix.WaitStatus
			got, err := unix.Wait4(pid, &ws, unix.WNOHANG|unix.WALL, nil)
			if err != nil || got == pid {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// WaitGone waits until none of pids exists, reaping those that are ours.
func WaitGone(t testing.TB, pids []int) {
	t.Helper()
	deadline := time.Now().Add(minWait)
	for _, pid := range pids {
		for Exists(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("pid %d still exists", pid)
			}
			var ws unix.WaitStatus
			unix.Wait4(pid, &ws, unix.WNOHANG|unix.WALL, nil)
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// Exists tells whether pid is a task, zombies included.
func Exists(pid int) bool {
	_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
	return err == nil
}

// Alive tells whether pid is a live process (not a zombie).
func Alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X'
}
