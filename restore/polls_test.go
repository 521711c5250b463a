package restore

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"golang.org/x/sys/unix"

	"github.com/imgtool/imgtool/internal/testproc"
)

// pollsCheck makes the restored testdata/polls.c check itself: SIGUSR2 first for the modes
// with a signalfd (a signal sent after the restore), then SIGUSR1.
func pollsCheck(t *testing.T, mode string, pid int, log string, off int64) {
	t.Helper()
	if mode == "signalfd" || mode == "all" {
		if err := unix.Kill(pid, unix.SIGUSR2); err != nil {
			t.Fatal(err)
		}
	}
	checkSelf(t, pid, log, off)
}

// TestRoundTripPolls dumps and restores testdata/polls.c once per state and lets it check
// itself: an eventfd's counter and semaphore mode, timerfds (relative periodic, absolute,
// expired with an unread expiry) ticking on with their period, a signalfd receiving a
// signal sent after the restore, an epoll over a pipe, an eventfd, a timerfd and another
// epoll waking with its data values, and an epoll shared by a parent and its child.
func TestRoundTripPolls(t *testing.T) {
	requireRoot(t)
	bin := testproc.Build(t, "testdata/polls.c")
	for _, mode := range []string{"eventfd", "timerfd", "signalfd", "epoll", "shared", "inotify"} {
		t.Run(mode, func(t *testing.T) {
			p := testproc.Launch(t, bin, testproc.Options{Ready: "ready pid="}, mode)
			dir := dumpTo(t, p.Pid)
			off := savedPos(t, dir, p.Log)
			pids := restoreSet(t, dir, Options{})
			pollsCheck(t, mode, pids[0], p.Log, off)
		})
	}
}

// TestCRIUInteropPolls: testdata/polls.c with every state but the shared epoll, dumped by
// one tool and restored by the other, checks itself. CRIU 4.2 re-arms an absolute timer
// from the clock's seconds only, so it may fire up to a second early after CRIU's restore
// ("lenient"); CRIU 4.2 neither records an eventfd's semaphore mode nor restores imgtool's
// record of it (a bit of the flags it sets with F_SETFL), so either way the semaphore
// eventfd comes back a plain counter ("nosem").
func TestCRIUInteropPolls(t *testing.T) {
	criu := criuBin(t)
	bin := testproc.Build(t, "testdata/polls.c")
	for _, way := range []string{"imgtool dump, CRIU restore", "CRIU dump, imgtool restore"} {
		t.Run(way, func(t *testing.T) {
			byCRIU := strings.HasPrefix(way, "CRIU")
			args := []string{"all", "lenient,nosem"}
			if byCRIU {
				args = []string{"all", "nosem"}
			}
			p := testproc.Launch(t, bin, testproc.Options{Ready: "ready pid="}, args...)
			root, off := crossCheckpoint(t, criu, p, byCRIU)
			pollsCheck(t, "all", root, p.Log, off)
		})
	}
}

// TestRoundTripGoProgram: a Go program (testdata/goticker: goroutines, a time.Ticker, a pipe
// the runtime waits for with epoll and an eventfd) dumped and restored carries on counting
// from where it stopped, with no number missing or repeated.
func TestRoundTripGoProgram(t *testing.T) {
	requireRoot(t)
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	}
	bin := filepath.Join(t.TempDir(), "goticker")
	cmd := exec.Command(goBin, "build", "-o", bin, "./testdata/goticker")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	p := testproc.Launch(t, bin, testproc.Options{})
	p.WaitLog(t, "n=5\n", 10*time.Second)
	dir := dumpTo(t, p.Pid)
	kinds := map[fdinfo.FdTypes]int{}
	for _, fe := range readFiles(t, dir) {
		kinds[fe.GetType()]++
	}
	if kinds[fdinfo.FdTypes_EVENTPOLL] != 1 || kinds[fdinfo.FdTypes_EVENTFD] != 1 {
		t.Fatalf("the Go runtime's epoll and eventfd are not in the set: %v", kinds)
	}
	restoresCounting(t, p, dir)
}
