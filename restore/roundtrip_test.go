package restore

import (
	"context"
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
	"github.com/imgtool/imgtool/imgset"
)

// launch starts a fixture program the way the real sets' programs ran (bin/launch: own
// session, stdin /dev/null, output to log) and returns its pid. We are its subreaper, so
// it can be reaped once killed.
func launch(t *testing.T, log string, prog string, args ...string) int {
	t.Helper()
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(fixtureRoot+"/bin/launch", append([]string{log, fixtureRoot + "/bin/" + prog}, args...)...).Output()
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { killPids([]int{pid}) })
	waitFor(t, 10*time.Second, prog+" to start", func() bool {
		b, _ := os.ReadFile(log)
		return strings.Count(string(b), "\n") >= 2
	})
	return pid
}

// dumpTo checkpoints pid with imgtool's dump into a new set and waits for the dumped
// process to be gone (the dump kills it).
func dumpTo(t *testing.T, pid int) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "set")
	w, err := imgset.Create(dir, imgset.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := dump.Dump(context.Background(), dump.Options{Pid: pid}, w); err != nil {
		w.Abort()
		t.Skipf("imgtool dump cannot dump this program yet: %v", err)
	}
	killPids([]int{pid})
	waitPidsGone(t, []int{pid})
	return dir
}

func TestRoundTripCounter(t *testing.T) {
	requireRoot(t)
	setupFixtureFiles(t, "counter")
	log := filepath.Join(t.TempDir(), "counter.log")
	pid := launch(t, log, "counter", "roundtrip")
	dir := dumpTo(t, pid)
	before, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(before)), "\n")
	var last int
	if _, err := fmt.Sscanf(lines[len(lines)-1], "counter=%d", &last); err != nil {
		t.Fatalf("last line %q: %v", lines[len(lines)-1], err)
	}
	restoreSet(t, dir, Options{})
	waitFor(t, 5*time.Second, "counter output", func() bool {
		return strings.Count(logAfter(t, log, int64(len(before))), "\n") >= 2
	})
	got := strings.Split(logAfter(t, log, int64(len(before))), "\n")
	if want := fmt.Sprintf("counter=%d", last+1); got[0] != want {
		t.Fatalf("restored counter printed %q, want %q", got[0], want)
	}
	checkMM(t, dir)
	checkFds(t, dir)
}

// TestRoundTripBig restores a 256 MiB process and logs the page rate (speed is judged by
// make bench, not here).
func TestRoundTripBig(t *testing.T) {
	requireRoot(t)
	if testing.Short() {
		t.Skip("256 MiB round trip")
	}
	setupFixtureFiles(t, "counter")
	log := filepath.Join(t.TempDir(), "big.log")
	pid := launch(t, log, "big")
	dir := dumpTo(t, pid)
	set, err := imgset.Open(dir, imgset.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pl, err := loadPlan(setSource{set})
	if err != nil {
		t.Fatal(err)
	}
	pids := treePids(t, dir)
	t.Cleanup(func() { killPids(pids) })
	start := time.Now()
	if err := Restore(context.Background(), Options{Detach: true}, set); err != nil {
		t.Fatal(err)
	}
	d := time.Since(start)
	t.Logf("restored %d MiB of pages in %v: %.2f GiB/s", pl.pagesTotal>>20, d, float64(pl.pagesTotal)/d.Seconds()/(1<<30))
	before, _ := os.ReadFile(log)
	waitFor(t, 5*time.Second, "big to carry on", func() bool {
		return strings.Contains(logAfter(t, log, int64(len(before))), "alive ")
	})
}
