package restore

import (
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imgtool/imgtool/internal/testproc"
)

// The copy-on-write tests run fixtures/src/cow.c: a parent and its child that share 32 of
// 64 private pages (each wrote 16 of the others since the fork). After a restore the child
// checks, through /proc/PID/pagemap, that the 32 are still the very frames of its parent's
// and the others are not (zdtm's cow00 and cow01 check the same), and both check their
// bytes as they go on.

// restoredCOWChecks waits for the restored pair to carry on and asks the child to check
// the sharing.
func restoredCOWChecks(t *testing.T, pids []int, log string, off int64) {
	t.Helper()
	testproc.WaitFor(t, 5*time.Second, "both processes going on", func() bool {
		out := testproc.LogAfter(t, log, off)
		return strings.Contains(out, "parent n=") && strings.Contains(out, "child0 n=")
	})
	if out := testproc.LogAfter(t, log, off); strings.Contains(out, "FAIL") {
		t.Fatalf("the restored processes found their memory wrong: %s", out)
	}
	if len(pids) != 2 {
		t.Fatalf("restored pids %v, want a parent and a child", pids)
	}
	at := int64(len(testproc.LogAfter(t, log, 0)))
	if err := unix.Kill(pids[1], unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	var verdict string
	testproc.WaitFor(t, 5*time.Second, "the child's check of the sharing", func() bool {
		for _, l := range strings.Split(testproc.LogAfter(t, log, at), "\n") {
			if l == "ok" || strings.HasPrefix(l, "FAIL") {
				verdict = l
				return true
			}
		}
		return false
	})
	if verdict != "ok" {
		t.Fatalf("after the restore: %s", verdict)
	}
}

// TestRestoreKeepsCOWSharing: imgtool's dump of the pair (not refused: the sharing is
// fork's) restored by imgtool shares the same pages again.
func TestRestoreKeepsCOWSharing(t *testing.T) {
	requireRoot(t)
	p := launchFixture(t, "cow", "ready\n", "share")
	dir := dumpTo(t, p.Pid)
	off := savedPos(t, dir, p.Log)
	pids := restoreSet(t, dir, Options{})
	restoredCOWChecks(t, pids, p.Log, off)
}

// TestCRIUInteropCOWSharing: the same pair across tools, both ways: CRIU restores
// imgtool's dump with the sharing, and imgtool CRIU's.
func TestCRIUInteropCOWSharing(t *testing.T) {
	criu := criuBin(t)
	for _, byCRIU := range []bool{false, true} {
		name := map[bool]string{false: "imgtool dump, CRIU restore", true: "CRIU dump, imgtool restore"}[byCRIU]
		t.Run(name, func(t *testing.T) {
			p := launchFixture(t, "cow", "ready\n", "share")
			pids := testproc.Descendants(p.Pid)
			root, off := crossCheckpoint(t, criu, p, byCRIU)
			if root != p.Pid {
				t.Fatalf("restored root %d, want %d", root, p.Pid)
			}
			restoredCOWChecks(t, pids, p.Log, off)
		})
	}
}
