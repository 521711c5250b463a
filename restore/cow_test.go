package restore

import (
	"encoding/binary"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imgtool/imgtool/cipher"

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

// frames reads the page frames of n pages at addr in pid (0 for a page not present).
func frames(t *testing.T, pid int, addr uint64, n int) []uint64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n*8)
	if _, err := f.ReadAt(b, int64(addr/4096*8)); err != nil {
		t.Fatal(err)
	}
	out := make([]uint64, n)
	for i := range out {
		if e := binary.LittleEndian.Uint64(b[i*8:]); e&(1<<63) != 0 {
			out[i] = e & (1<<55 - 1)
		}
	}
	return out
}

// TestRestoreKeepsSiblingSharing: two children sharing the pages their parent rewrote
// after forking them share them again after imgtool's dump and restore (the parent holds
// them while it forks the two), and the parent has its own.
func TestRestoreKeepsSiblingSharing(t *testing.T) {
	t.Run("plain", func(t *testing.T) { siblingSharing(t, false) })
	// The pages held for the forks are read from the encrypted set, authenticated.
	t.Run("encrypted", func(t *testing.T) { siblingSharing(t, true) })
}

func siblingSharing(t *testing.T, encrypted bool) {
	requireRoot(t)
	p := launchFixture(t, "cow", "ready\n", "siblings")
	m := regexp.MustCompile(`region=0x([0-9a-f]+)`).FindStringSubmatch(testproc.LogAfter(t, p.Log, 0))
	region, err := strconv.ParseUint(m[1], 16, 64)
	if err != nil {
		t.Fatal(err)
	}
	var dir string
	var ids []cipher.Identity
	if encrypted {
		recipients, id := testKey(t)
		dir, ids = dumpTo(t, p.Pid, recipients...), []cipher.Identity{id}
	} else {
		dir = dumpTo(t, p.Pid)
	}
	off := fileSize(t, p.Log) // the dump killed the tree: the log is where the set left it
	pids := restoreSet(t, dir, Options{}, ids...)
	if len(pids) != 3 {
		t.Fatalf("restored %v, want a parent and two children", pids)
	}
	parent, c0, c1 := frames(t, pids[0], region, 64), frames(t, pids[1], region, 64), frames(t, pids[2], region, 64)
	for i := range 64 {
		if c0[i] == 0 || c0[i] != c1[i] || parent[i] == c0[i] {
			t.Fatalf("page %d: frames parent %d, children %d and %d: want the children's the same, the parent's its own", i, parent[i], c0[i], c1[i])
		}
	}
	testproc.WaitFor(t, 5*time.Second, "all three going on", func() bool {
		out := testproc.LogAfter(t, p.Log, off)
		return strings.Contains(out, "parent n=") && strings.Contains(out, "child0 n=") && strings.Contains(out, "child1 n=")
	})
	if out := testproc.LogAfter(t, p.Log, off); strings.Contains(out, "FAIL") {
		t.Fatalf("the restored processes found their memory wrong: %s", out)
	}
}

// TestCRIURestoresSiblings: CRIU 4.2 restores imgtool's dump of siblings sharing pages
// (it does not read imgtool-fork-pages-PID.img: it gives them copies), and the three go on.
func TestCRIURestoresSiblings(t *testing.T) {
	criu := criuBin(t)
	p := launchFixture(t, "cow", "ready\n", "siblings")
	root, off := crossCheckpoint(t, criu, p, false)
	if root != p.Pid {
		t.Fatalf("restored root %d, want %d", root, p.Pid)
	}
	testproc.WaitFor(t, 5*time.Second, "all three going on", func() bool {
		out := testproc.LogAfter(t, p.Log, off)
		return strings.Contains(out, "parent n=") && strings.Contains(out, "child0 n=") && strings.Contains(out, "child1 n=")
	})
	if out := testproc.LogAfter(t, p.Log, off); strings.Contains(out, "FAIL") {
		t.Fatalf("the restored processes found their memory wrong: %s", out)
	}
}

// TestRestoreOneCallAtATime: where the scratch area cannot be executable (an LSM refusing
// writable and executable memory), the mappings are made one injected call at a time
// instead of in batches: the same trees come back the same.
func TestRestoreOneCallAtATime(t *testing.T) {
	singleCalls = true
	defer func() { singleCalls = false }()
	t.Run("cow", TestRestoreKeepsCOWSharing)
	t.Run("kitchen", TestRoundTripKitchenSink)
}
