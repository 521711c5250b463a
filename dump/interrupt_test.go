package dump

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imgtool/imgtool/internal/procfs"
	"github.com/imgtool/imgtool/internal/testproc"
)

// targetSnapshot is what an interrupted dump must leave exactly as it found it.
type targetSnapshot struct {
	maps  string
	masks map[int]string // tid -> SigBlk
}

func snapshotTarget(t *testing.T, pid int) targetSnapshot {
	t.Helper()
	maps, err := os.ReadFile(procfs.Path(pid, "maps"))
	if err != nil {
		t.Fatal(err)
	}
	s := targetSnapshot{maps: string(maps), masks: map[int]string{}}
	tids, err := procfs.ListNumeric(procfs.Path(pid, "task"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tid := range tids {
		st, err := procfs.ReadStatus(procfs.Path(pid, "task", strconv.Itoa(tid), "status"))
		if err != nil {
			t.Fatal(err)
		}
		s.masks[tid] = st["SigBlk"]
		if st["TracerPid"] != "0" {
			s.masks[tid] += " traced by " + st["TracerPid"]
		}
	}
	return s
}

// checkUnharmed fails if the target is dead, reported a broken invariant, or differs from
// its snapshot (a scratch mapping left, a mask not restored, a thread still traced).
func checkUnharmed(t *testing.T, tg *testproc.Proc, want targetSnapshot, what string) {
	t.Helper()
	if !testproc.Alive(tg.Pid) {
		t.Fatalf("%s: the target died; its log ends:\n%s", what, tail(tg.ReadLog(t)))
	}
	if log := tg.ReadLog(t); strings.Contains(log, "BROKEN") {
		t.Fatalf("%s: the target found itself broken:\n%s", what, tail(log))
	}
	got := snapshotTarget(t, tg.Pid)
	if got.maps != want.maps {
		t.Errorf("%s: the target's mappings changed:\nbefore:\n%s\nafter:\n%s", what, want.maps, got.maps)
	}
	if fmt.Sprint(got.masks) != fmt.Sprint(want.masks) {
		t.Errorf("%s: the target's threads changed: before %v, after %v", what, want.masks, got.masks)
	}
}

func tail(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-5):], "\n")
}

// interruptPoint says when a trial sends its signal: after a delay, or once the dump is
// writing pages (every injected call is over by then).
type interruptPoint struct {
	name  string
	delay time.Duration
	pages bool
}

// runInterrupted runs the real `imgtool dump` of pid into parent/set and sends sig at the
// point; it returns the exit code and stderr.
func runInterrupted(t *testing.T, bin string, pid int, parent string, at interruptPoint, sig syscall.Signal, extra ...string) (int, string) {
	t.Helper()
	args := append([]string{"dump", "-t", strconv.Itoa(pid), "-D", filepath.Join(parent, "set"), "-q"}, extra...)
	cmd := exec.Command(bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done: // finished before the signal was due
	case <-trigger(parent, at):
		_ = cmd.Process.Signal(sig)
		err = <-done
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, stderr.String()
	case errors.As(err, &ee) && ee.Exited():
		return ee.ExitCode(), stderr.String()
	case errors.As(err, &ee):
		return -int(ee.Sys().(syscall.WaitStatus).Signal()), stderr.String()
	}
	t.Fatal(err)
	return 0, ""
}

// trigger fires at the interrupt point.
func trigger(parent string, at interruptPoint) <-chan struct{} {
	c := make(chan struct{})
	go func() {
		defer close(c)
		if !at.pages {
			time.Sleep(at.delay)
			return
		}
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
			if pagesBeingWritten(parent) {
				return
			}
			time.Sleep(200 * time.Microsecond)
		}
	}()
	return c
}

// pagesBeingWritten tells whether a staging folder under parent holds a non-empty pages
// file.
func pagesBeingWritten(parent string) bool {
	files, _ := filepath.Glob(filepath.Join(parent, ".*", "pages-*.img"))
	for _, f := range files {
		if st, err := os.Stat(f); err == nil && st.Size() > 0 {
			return true
		}
	}
	return false
}

// TestDumpSignals interrupts the real binary with SIGINT, SIGTERM and SIGHUP at many
// points of a dump of a 128 MiB, 3-thread process: each time it must stop, put every thread
// back as it was (registers, signal mask, no scratch mapping, not traced), leave no set and
// no staging folder, say so in one line and exit 1; the target carries on and checks
// itself. A dump that finished before the signal is fine (and its set complete).
func TestDumpSignals(t *testing.T) {
	testproc.RequireRoot(t)
	bin := testproc.BuildImgtool(t)
	tg := launch(t, "steady")
	before := snapshotTarget(t, tg.Pid)
	points := []interruptPoint{{name: "0ms"}, {name: "2ms", delay: 2 * time.Millisecond},
		{name: "5ms", delay: 5 * time.Millisecond}, {name: "15ms", delay: 15 * time.Millisecond},
		{name: "40ms", delay: 40 * time.Millisecond}, {name: "pages", pages: true}}
	interrupted := 0
	for _, sig := range []syscall.Signal{unix.SIGINT, unix.SIGTERM, unix.SIGHUP} {
		for _, at := range points {
			what := fmt.Sprintf("%v at %s", sig, at.name)
			parent := t.TempDir()
			code, stderr := runInterrupted(t, bin, tg.Pid, parent, at, sig, "--leave-running")
			switch {
			case code == -int(sig):
				// Killed before main installed its handlers: nothing was touched yet (the
				// checks below hold that).
			case code == 0:
				if _, err := os.Stat(filepath.Join(parent, "set", "inventory.img")); err != nil {
					t.Errorf("%s: the dump succeeded but left no complete set: %v", what, err)
				}
				os.RemoveAll(filepath.Join(parent, "set"))
			case code == 1:
				interrupted++
				want := "interrupted by " + unix.SignalName(sig)
				if strings.Count(strings.TrimSpace(stderr), "\n") != 0 || !strings.Contains(stderr, want) {
					t.Errorf("%s: stderr %q, want one line saying %q", what, stderr, want)
				}
			default:
				t.Errorf("%s: exit %d, stderr %q", what, code, stderr)
			}
			if left, _ := os.ReadDir(parent); len(left) != 0 {
				t.Errorf("%s: left %v behind", what, left)
			}
			checkUnharmed(t, tg, before, what)
		}
	}
	if interrupted == 0 {
		t.Error("no trial interrupted a dump: the points are all too late")
	}
	// Without --leave-running, an interrupted dump must not kill the tree either.
	parent := t.TempDir()
	if code, stderr := runInterrupted(t, bin, tg.Pid, parent, interruptPoint{name: "pages", pages: true}, unix.SIGTERM); code != 1 {
		t.Errorf("SIGTERM without --leave-running: exit %d, %q", code, stderr)
	}
	checkUnharmed(t, tg, before, "SIGTERM without --leave-running")
	// And it still runs: a new tick after all that.
	n := strings.Count(tg.ReadLog(t), "tick")
	testproc.WaitFor(t, 5*time.Second, "a new tick", func() bool { return strings.Count(tg.ReadLog(t), "tick") > n })
	checkUnharmed(t, tg, before, "the end")
}

// TestDumpKilledWhileWritingPages: SIGKILL cannot be caught, but once pages are being
// written every thread has its own registers and mask back, so a dump killed then leaves
// the target running unharmed (the kernel detaches its threads).
func TestDumpKilledWhileWritingPages(t *testing.T) {
	testproc.RequireRoot(t)
	bin := testproc.BuildImgtool(t)
	tg := launch(t, "steady")
	before := snapshotTarget(t, tg.Pid)
	parent := t.TempDir()
	for i := 0; i < 3; i++ {
		code, _ := runInterrupted(t, bin, tg.Pid, parent, interruptPoint{name: "pages", pages: true}, unix.SIGKILL, "--leave-running")
		if code != -int(unix.SIGKILL) && code != 0 {
			t.Errorf("exit %d", code)
		}
		// The kernel resumes the threads as the tracer dies: give it a moment.
		testproc.WaitFor(t, 5*time.Second, "the target no longer traced", func() bool {
			return !strings.Contains(fmt.Sprint(snapshotTarget(t, tg.Pid).masks), "traced")
		})
		checkUnharmed(t, tg, before, fmt.Sprintf("SIGKILL %d while writing pages", i))
	}
	// The killed runs left their staging folders; the next dump of the same set removes
	// them, says so, and leaves only the set.
	left, _ := os.ReadDir(parent)
	if len(left) == 0 {
		t.Fatal("the killed dumps left no staging folder: they were not killed while writing")
	}
	out, err := exec.Command(bin, "dump", "-q", "--leave-running", "-t", strconv.Itoa(tg.Pid), "-D", filepath.Join(parent, "set")).CombinedOutput()
	if err != nil {
		t.Fatalf("dump after the kills: %v: %s", err, out)
	}
	if !strings.Contains(string(out), "removed what interrupted earlier runs left beside") {
		t.Errorf("the next dump did not say it removed %d leftovers: %q", len(left), out)
	}
	if now, _ := os.ReadDir(parent); len(now) != 1 || now[0].Name() != "set" {
		t.Errorf("after the next dump the folder holds %v", now)
	}
	n := strings.Count(tg.ReadLog(t), "tick")
	testproc.WaitFor(t, 5*time.Second, "a new tick", func() bool { return strings.Count(tg.ReadLog(t), "tick") > n })
	checkUnharmed(t, tg, before, "the end")
}

// TestDumpRandomSIGKILL measures what an uncatchable SIGKILL of imgtool costs the target:
// N kills at random moments of a dump, counting the targets harmed (dead, broken, or left
// with a scratch mapping). dump/doc.go quotes its result. It is part of `make test-long`
// (IMGTOOL_TEST_LONG=1): a kill that lands inside an injected call can harm the target, so
// the count is a measurement, not an assertion.
func TestDumpRandomSIGKILL(t *testing.T) {
	if os.Getenv("IMGTOOL_TEST_LONG") == "" {
		t.Skip("a measurement: set IMGTOOL_TEST_LONG=1 (make test-long)")
	}
	testproc.RequireRoot(t)
	bin := testproc.BuildImgtool(t)
	// One full dump tells how long a dump of this target takes.
	tg := launch(t, "steady")
	start := time.Now()
	if out, err := exec.Command(bin, "dump", "-q", "--leave-running", "-t", strconv.Itoa(tg.Pid), "-D", filepath.Join(t.TempDir(), "set")).CombinedOutput(); err != nil {
		t.Fatalf("a full dump: %v: %s", err, out)
	}
	full := time.Since(start)
	const n = 60
	harmed, mappingsLeft := 0, 0
	for i := 0; i < n; i++ {
		before := snapshotTarget(t, tg.Pid)
		delay := time.Duration(uint64(time.Now().UnixNano()) % uint64(full))
		runInterrupted(t, bin, tg.Pid, t.TempDir(), interruptPoint{delay: delay}, unix.SIGKILL, "--leave-running")
		deadline := time.Now().Add(2 * time.Second)
		for time.Now().Before(deadline) && strings.Contains(fmt.Sprint(snapshotTarget(t, tg.Pid).masks), "traced") {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(20 * time.Millisecond) // let it run a few ticks
		after := snapshotTarget(t, tg.Pid)
		switch {
		case !testproc.Alive(tg.Pid) || strings.Contains(tg.ReadLog(t), "BROKEN") || fmt.Sprint(after.masks) != fmt.Sprint(before.masks):
			harmed++
			t.Logf("kill %d at %v of %v harmed the target: %s", i, delay, full, tail(tg.ReadLog(t)))
			testproc.KillAndReap([]int{tg.Pid})
			tg = launch(t, "steady")
		case after.maps != before.maps:
			mappingsLeft++
		}
	}
	t.Logf("SIGKILL of imgtool at a random moment of a %v dump: %d of %d targets harmed, %d more left with a stray scratch mapping", full, harmed, n, mappingsLeft)
}
