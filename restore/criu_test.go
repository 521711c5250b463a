package restore

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imgtool/imgtool/dump"
	"github.com/imgtool/imgtool/internal/testproc"
)

// Interoperability with a real CRIU 4.2, both ways: CRIU restores imgtool's dumps, and
// imgtool restores CRIU's. The CRIU binary is IMGTOOL_CRIU (built from upstream's v4.2 tag;
// Debian's 3.17 does not run on these kernels); without it these tests are skipped.

// criuBin returns the CRIU binary named by IMGTOOL_CRIU, or skips the test.
func criuBin(t *testing.T) string { return testproc.CRIU(t) }

// runCRIU runs criu with args, logging into dir/LOG; a failure shows the log's errors.
func runCRIU(t *testing.T, bin, dir, log string, args ...string) {
	t.Helper()
	cmd := exec.Command(bin, append(args, "-D", dir, "-o", log, "-v4")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		logText, _ := os.ReadFile(filepath.Join(dir, log))
		var errs []string
		for _, l := range strings.Split(string(logText), "\n") {
			if strings.Contains(l, "Error") {
				errs = append(errs, l)
			}
		}
		t.Fatalf("criu %s: %v %s\n%s", args[0], err, out, strings.Join(errs, "\n"))
	}
}

// criuRestore restores dir with CRIU, detached, with the options extra, and returns the
// root's pid; the restored tree is killed when the test ends.
func criuRestore(t *testing.T, bin, dir string, pids []int, extra ...string) int {
	t.Helper()
	t.Cleanup(func() { testproc.KillAndReap(pids) })
	testproc.WaitGone(t, pids)
	pidfile := filepath.Join(t.TempDir(), "pid")
	runCRIU(t, bin, dir, "restore.log", append([]string{"restore", "-d", "--pidfile", pidfile}, extra...)...)
	b, err := os.ReadFile(pidfile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// crossCheckpoint dumps p with one tool and restores it with the other: CRIU's dump and
// imgtool's restore when byCRIU, else the reverse. It returns the restored root and the
// offset of p's log saved in the set, after which the restored program writes.
func crossCheckpoint(t *testing.T, criu string, p *testproc.Proc, byCRIU bool) (root int, off int64) {
	t.Helper()
	return crossCheckpointWith(t, criu, p, byCRIU, dump.Options{})
}

// crossCheckpointWith is crossCheckpoint with imgtool's dump options opts (Pid set here)
// and criu dump's criuArgs.
func crossCheckpointWith(t *testing.T, criu string, p *testproc.Proc, byCRIU bool, opts dump.Options, criuArgs ...string) (root int, off int64) {
	t.Helper()
	var dir string
	if byCRIU {
		dir = t.TempDir()
		runCRIU(t, criu, dir, "dump.log", append([]string{"dump", "-t", fmt.Sprint(p.Pid)}, criuArgs...)...)
		testproc.WaitGone(t, []int{p.Pid})
	} else {
		opts.Pid = p.Pid
		dir = dumpWith(t, opts)
	}
	off = savedPos(t, dir, p.Log)
	if byCRIU {
		return restoreSet(t, dir, Options{})[0], off
	}
	return criuRestore(t, criu, dir, treePids(t, dir)), off
}

// haveCap tells whether this process has capability c in its effective set.
func haveCap(c int) bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if unix.Capget(&hdr, &data[0]) != nil {
		return false
	}
	return data[c/32].Effective&(1<<(c%32)) != 0
}

// silentModes are the states of testdata/silent.c (see TestRoundTripSilentStates).
var silentModes = []struct {
	mode string
	args []string
}{
	{"mlock", nil}, {"mlock-setuid", nil}, {"subreaper", nil}, {"sched", nil},
	{"fown", nil}, {"mapprot", []string{"{dir}/mapped"}}, {"memfd", nil},
	{"pipesize", nil}, {"oom", nil}, {"droppable", nil}, {"loginuid", nil}, {"protruns", nil}, {"bigruns", nil},
}

// checkSelf signals the restored program to check its own state and waits for its
// verdict after the log offset off.
func checkSelf(t *testing.T, pid int, log string, off int64) {
	t.Helper()
	if err := unix.Kill(pid, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	var out string
	testproc.WaitFor(t, 5*time.Second, "the restored program's own check", func() bool {
		out = testproc.LogAfter(t, log, off)
		return strings.Contains(out, "ok\n") || strings.Contains(out, "FAIL")
	})
	if !strings.HasPrefix(out, "ok\n") {
		t.Fatalf("after the restore: %s", strings.TrimSpace(out))
	}
}

// TestCRIURestoresImgtoolDumps: every state of silent.c, dumped by imgtool, restored by
// CRIU 4.2, checks itself.
func TestCRIURestoresImgtoolDumps(t *testing.T) {
	criu := criuBin(t)
	bin := testproc.Build(t, "testdata/silent.c")
	for _, c := range silentModes {
		t.Run(c.mode, func(t *testing.T) {
			p := testproc.Launch(t, bin, testproc.Options{Ready: "ready pid="}, append([]string{c.mode}, c.args...)...)
			dir := dumpTo(t, p.Pid)
			off := savedPos(t, dir, p.Log)
			pids := treePids(t, dir)
			root := criuRestore(t, criu, dir, pids)
			if root != p.Pid {
				t.Errorf("CRIU restored pid %d, want %d", root, p.Pid)
			}
			checkSelf(t, root, p.Log, off)
		})
	}
}

// TestImgtoolRestoresCRIUDumps: every state of silent.c, dumped by CRIU 4.2, restored by
// imgtool, checks itself.
func TestImgtoolRestoresCRIUDumps(t *testing.T) {
	criu := criuBin(t)
	bin := testproc.Build(t, "testdata/silent.c")
	for _, c := range silentModes {
		t.Run(c.mode, func(t *testing.T) {
			if c.mode == "mlock-setuid" && !haveCap(unix.CAP_SYS_RESOURCE) {
				// The program runs as uid 65534: CRIU's dump reads its rlimits with prlimit,
				// which needs CAP_SYS_RESOURCE for another uid (imgtool's injects the call).
				t.Skip("CRIU cannot dump a process of another uid without CAP_SYS_RESOURCE")
			}
			p := testproc.Launch(t, bin, testproc.Options{Ready: "ready pid="}, append([]string{c.mode}, c.args...)...)
			dir := t.TempDir()
			runCRIU(t, criu, dir, "dump.log", "dump", "-t", fmt.Sprint(p.Pid))
			testproc.WaitGone(t, []int{p.Pid})
			off := savedPos(t, dir, p.Log)
			pids := restoreSet(t, dir, Options{})
			checkSelf(t, pids[0], p.Log, off)
		})
	}
}

// TestCRIUInteropThreads: the three-thread, 128 MiB program of the dump interruption tests
// (dump/testdata/steady.c: it checks its masks and memory itself while it ticks), dumped by
// one tool and restored by the other, both ways, ticks on unharmed.
func TestCRIUInteropThreads(t *testing.T) {
	criu := criuBin(t)
	bin := testproc.Build(t, "../dump/testdata/steady.c")
	for _, way := range []string{"imgtool dump, CRIU restore", "CRIU dump, imgtool restore"} {
		t.Run(way, func(t *testing.T) {
			p := testproc.Launch(t, bin, testproc.Options{})
			var dir string
			if strings.HasPrefix(way, "imgtool") {
				dir = dumpTo(t, p.Pid)
			} else {
				dir = t.TempDir()
				runCRIU(t, criu, dir, "dump.log", "dump", "-t", fmt.Sprint(p.Pid))
				testproc.WaitGone(t, []int{p.Pid})
			}
			off := savedPos(t, dir, p.Log)
			pids := treePids(t, dir)
			if strings.HasPrefix(way, "imgtool") {
				criuRestore(t, criu, dir, pids)
			} else {
				restoreSet(t, dir, Options{})
			}
			testproc.WaitFor(t, 5*time.Second, "ticks after the restore", func() bool {
				return strings.Count(testproc.LogAfter(t, p.Log, off), "tick") >= 2
			})
			if out := testproc.LogAfter(t, p.Log, off); strings.Contains(out, "BROKEN") {
				t.Fatalf("the restored program found itself broken: %s", out)
			}
			if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pids[0])); err != nil || !strings.Contains(string(st), "Threads:\t3") {
				t.Errorf("restored process: %v\n%s", err, st)
			}
		})
	}
}
