package restore

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"golang.org/x/sys/unix"

	"github.com/imgtool/imgtool/internal/procfs"
	"github.com/imgtool/imgtool/internal/testproc"
)

// ptyTree is testdata/pty.c launched: its root (holding the master), the session leader
// (the slave its controlling terminal), the foreground group's answerer, and the slave.
type ptyTree struct {
	p                *testproc.Proc
	leader, fg       int
	slave            string
	slaveRdev, index int
}

func launchPty(t *testing.T, args ...string) *ptyTree {
	t.Helper()
	bin := testproc.Build(t, "testdata/pty.c")
	p := testproc.Launch(t, bin, testproc.Options{Ready: "ready pid="}, args...)
	m := regexp.MustCompile(`ready pid=\d+ leader=(\d+) fg=(\d+) slave=(\S+)`).FindStringSubmatch(testproc.LogAfter(t, p.Log, 0))
	if m == nil {
		t.Fatalf("pty.c: %s", testproc.LogAfter(t, p.Log, 0))
	}
	tr := &ptyTree{p: p, slave: m[3]}
	tr.leader, _ = strconv.Atoi(m[1])
	tr.fg, _ = strconv.Atoi(m[2])
	var st unix.Stat_t
	if err := unix.Stat(tr.slave, &st); err != nil {
		t.Fatal(err)
	}
	tr.slaveRdev = int(st.Rdev)
	tr.index, _ = strconv.Atoi(strings.TrimPrefix(tr.slave, "/dev/pts/"))
	p.WaitLog(t, "n=3\n", 5*time.Second)
	return tr
}

// checkSessions checks, in /proc, that the leader and the answerer have the slave as
// their controlling terminal, in the leader's session, with the answerer's group in the
// foreground, and that the root has none.
func (tr *ptyTree) checkSessions(t *testing.T) {
	t.Helper()
	for _, c := range []struct{ pid, sid, tty, tpgid int }{
		{tr.leader, tr.leader, tr.slaveRdev, tr.fg},
		{tr.fg, tr.leader, tr.slaveRdev, tr.fg},
		{tr.p.Pid, tr.p.Pid, 0, -1},
	} {
		st, err := procfs.ReadStat(procfs.Path(c.pid, "stat"))
		if err != nil {
			t.Fatal(err)
		}
		if st.Sid != c.sid || st.TTYNr != c.tty || st.Tpgid != c.tpgid {
			t.Errorf("process %d: session %d, tty_nr %#x, foreground group %d; want %d, %#x, %d", c.pid, st.Sid, st.TTYNr, st.Tpgid, c.sid, c.tty, c.tpgid)
		}
	}
}

// checkSelf signals pty.c's root to check its terminal and waits for its verdict (it logs
// "ok" between its ticks).
func (tr *ptyTree) checkSelf(t *testing.T, root int) {
	t.Helper()
	off := int64(len(testproc.LogAfter(t, tr.p.Log, 0)))
	if err := unix.Kill(root, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	var out string
	testproc.WaitFor(t, 5*time.Second, "the restored program's own check", func() bool {
		out = testproc.LogAfter(t, tr.p.Log, off)
		return strings.Contains(out, "ok\n") || strings.Contains(out, "FAIL")
	})
	if strings.Contains(out, "FAIL") {
		t.Fatalf("after the restore: %s", strings.TrimSpace(out))
	}
}

// TestRoundTripPty: a pty pair whose both ends are in the tree (testdata/pty.c: termios
// changed, a window size, a session whose controlling terminal is the slave, another
// group in the foreground) carries its counter on with no gap after a restore, with the
// same index, sessions and foreground group, and the program's own checks pass.
// In "devtty" mode the answerer talks through /dev/tty, which comes back open on the
// terminal (opened by the session leader once it has it, inherited by the answerer).
func TestRoundTripPty(t *testing.T) {
	requireRoot(t)
	for _, mode := range []string{"ctty", "devtty"} {
		t.Run(mode, func(t *testing.T) {
			tr := launchPty(t, mode)
			tr.checkSessions(t)
			dir := dumpTo(t, tr.p.Pid)
			kinds := map[fdinfo.FdTypes]int{}
			for _, fe := range readFiles(t, dir) {
				kinds[fe.GetType()]++
			}
			if want := map[string]int{"ctty": 2, "devtty": 3}[mode]; kinds[fdinfo.FdTypes_TTY] != want {
				t.Fatalf("%d tty files in the set, want %d (the master, the slave, /dev/tty)", kinds[fdinfo.FdTypes_TTY], want)
			}
			restoresCounting(t, tr.p, dir)
			if _, err := os.Stat(tr.slave); err != nil {
				t.Fatalf("the pty was not made again with its index: %v", err)
			}
			tr.checkSessions(t)
			tr.checkSelf(t, tr.p.Pid)
			if mode == "devtty" {
				if link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/3", tr.fg)); err != nil || link != "/dev/tty" {
					t.Errorf("the answerer's fd 3 is %q (%v), want /dev/tty", link, err)
				}
			}
		})
	}
}

// TestCRIUInteropPty: testdata/pty.c dumped by one tool and restored by the other carries
// on and checks itself. CRIU 4.2's restore gives the session leader its terminal after it
// has forked, so that its child would have none: with CRIU restoring, the session leader
// answers itself ("leader" mode).
func TestCRIUInteropPty(t *testing.T) {
	criu := criuBin(t)
	for _, way := range []string{"imgtool dump, CRIU restore", "CRIU dump, imgtool restore"} {
		t.Run(way, func(t *testing.T) {
			byCRIU := strings.HasPrefix(way, "CRIU")
			args := []string{"ctty"}
			if !byCRIU {
				args = []string{"leader"}
			}
			tr := launchPty(t, args...)
			root, off := crossCheckpoint(t, criu, tr.p, byCRIU)
			testproc.WaitFor(t, 5*time.Second, "ticks after the restore", func() bool {
				return strings.Count(testproc.LogAfter(t, tr.p.Log, off), "n=") >= 3
			})
			if byCRIU {
				tr.checkSessions(t)
			}
			tr.checkSelf(t, root)
		})
	}
}

// TestRestoreRefusesPtyInUse: a set whose pty index is taken (by another pair opened
// since) is refused before any process exists.
func TestRestoreRefusesPtyInUse(t *testing.T) {
	requireRoot(t)
	tr := launchPty(t)
	dir := dumpTo(t, tr.p.Pid)
	var held []*os.File
	defer func() {
		for _, f := range held {
			f.Close()
		}
	}()
	for {
		f, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, f)
		n, err := unix.IoctlGetUint32(int(f.Fd()), unix.TIOCGPTN)
		if err != nil || int(n) >= tr.index {
			break
		}
	}
	err := Restore(t.Context(), Options{Detach: true}, openSet(t, dir))
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("pty index %d is in use", tr.index)) {
		t.Fatalf("restore with /dev/pts/%d taken: %v", tr.index, err)
	}
	for _, pid := range []int{tr.p.Pid, tr.leader, tr.fg} {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			t.Errorf("process %d exists after a refused restore", pid)
		}
	}
}

// openPty returns a new pty pair: the master and the slave.
func openPty(t *testing.T) (*os.File, *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetUint32(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}

// onTerminal starts name with args in a new session whose controlling terminal is slave,
// its standard streams on it, as a shell in a terminal is; the test ends it.
func onTerminal(t *testing.T, slave *os.File, name string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.Env = testproc.Env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd
}

// TestRestoreShellJob: a job of a shell (testdata/pty.c shell: its own process group in the
// foreground of the shell's terminal, a session the shell leads) is dumped with --shell-job
// and restored with restore --shell-job from another terminal: it carries on, on the
// restorer's terminal (its controlling terminal, its stdin), its group in the foreground.
// Without --shell-job the dump and the restore are refused before anything is touched.
// With IMGTOOL_CRIU, CRIU's dump --shell-job is restored by imgtool and imgtool's by CRIU.
func TestRestoreShellJob(t *testing.T) {
	requireRoot(t)
	for _, way := range []string{"imgtool", "CRIU dump, imgtool restore", "imgtool dump, CRIU restore"} {
		t.Run(way, func(t *testing.T) {
			var criu string
			if way != "imgtool" {
				criu = criuBin(t)
			}
			shellJob(t, criu, strings.HasPrefix(way, "CRIU"), strings.HasSuffix(way, "CRIU restore"))
		})
	}
}

// shellJob runs TestRestoreShellJob one way: criuDump, criuRestore tell which tool does what.
func shellJob(t *testing.T, criu string, criuDump, criuRestore bool) {
	bin := testproc.Build(t, "testdata/pty.c")
	imgtool := testproc.BuildImgtool(t)
	log := filepath.Join(t.TempDir(), "job.log")
	_, slave := openPty(t)
	onTerminal(t, slave, "/bin/sh", "-c", `exec 3<&0; "$0" shell <&3 3<&- >"$1" 2>&1 & wait`, bin, log)
	var pid int
	testproc.WaitFor(t, 5*time.Second, "the job", func() bool {
		b, _ := os.ReadFile(log) // the shell creates it
		m := regexp.MustCompile(`ready pid=(\d+)\n`).FindSubmatch(b)
		if m != nil {
			pid, _ = strconv.Atoi(string(m[1]))
		}
		return m != nil && strings.Contains(string(b), "n=3\n")
	})
	t.Cleanup(func() { testproc.KillAndReap([]int{pid}) })
	dir := filepath.Join(t.TempDir(), "set")
	if criuDump {
		os.MkdirAll(dir, 0o755)
		runCRIU(t, criu, dir, "dump.log", "dump", "-t", strconv.Itoa(pid), "--shell-job")
	} else {
		if out, err := exec.Command(imgtool, "dump", "-t", strconv.Itoa(pid), "-D", dir).CombinedOutput(); err == nil || !strings.Contains(string(out), "use --shell-job") {
			t.Fatalf("dump without --shell-job: %v %s", err, out)
		}
		if out, err := exec.Command(imgtool, "dump", "-t", strconv.Itoa(pid), "-D", dir, "--shell-job").CombinedOutput(); err != nil {
			t.Fatalf("dump --shell-job: %v %s", err, out)
		}
	}
	testproc.WaitGone(t, []int{pid})
	off := savedPos(t, dir, log)
	if !criuRestore {
		err := Restore(t.Context(), Options{Detach: true}, openSet(t, dir))
		if err == nil || !strings.Contains(err.Error(), "restore it with --shell-job") {
			t.Fatalf("restore without --shell-job: %v", err)
		}
	}
	_, slave2 := openPty(t)
	if criuRestore {
		onTerminal(t, slave2, criu, "restore", "-D", dir, "--shell-job", "-o", "restore.log", "-v4")
	} else {
		onTerminal(t, slave2, imgtool, "restore", "-D", dir, "--shell-job")
	}
	testproc.WaitFor(t, 5*time.Second, "ticks after the restore", func() bool {
		return strings.Count(testproc.LogAfter(t, log, off), "n=") >= 3
	})
	var st2 unix.Stat_t
	if err := unix.Fstat(int(slave2.Fd()), &st2); err != nil {
		t.Fatal(err)
	}
	st, err := procfs.ReadStat(procfs.Path(pid, "stat"))
	if err != nil || st.TTYNr != int(st2.Rdev) || st.Tpgid != pid {
		t.Fatalf("restored job: %+v (%v), want the terminal %#x, its group %d in the foreground", st, err, st2.Rdev, pid)
	}
	before := int64(len(testproc.LogAfter(t, log, 0)))
	if err := unix.Kill(pid, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	testproc.WaitFor(t, 5*time.Second, "the job's own check", func() bool {
		out := testproc.LogAfter(t, log, before)
		return strings.Contains(out, "ok\n") || strings.Contains(out, "FAIL")
	})
	if out := testproc.LogAfter(t, log, before); strings.Contains(out, "FAIL") {
		t.Fatalf("after the restore: %s", out)
	}
}

// TestRestoreRefusesCRIUTtyData: CRIU saves the bytes queued in a pty (tty-data.img) and
// replays them through the line discipline, which echoes and translates them again: a
// CRIU set holding them (dump/testdata/tty.c queued: a line written into the master and
// not read) is refused before any process exists, naming the terminal.
func TestRestoreRefusesCRIUTtyData(t *testing.T) {
	criu := criuBin(t)
	bin := testproc.Build(t, "../dump/testdata/tty.c")
	p := testproc.Launch(t, bin, testproc.Options{}, "queued")
	dir := t.TempDir()
	runCRIU(t, criu, dir, "dump.log", "dump", "-t", strconv.Itoa(p.Pid))
	testproc.WaitGone(t, []int{p.Pid})
	if _, err := os.Stat(filepath.Join(dir, "tty-data.img")); err != nil {
		t.Fatalf("CRIU saved no terminal data: %v", err)
	}
	err := Restore(t.Context(), Options{Detach: true}, openSet(t, dir))
	if err == nil || !strings.Contains(err.Error(), "terminal data is not restored") || !strings.Contains(err.Error(), "/dev/pts/") {
		t.Fatalf("restore of a set with tty-data.img: %v", err)
	}
	if testproc.Exists(p.Pid) {
		t.Errorf("process %d exists after a refused restore", p.Pid)
	}
}
