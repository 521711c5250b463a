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

	"github.com/imgtool/imgtool/cipher"
	"github.com/imgtool/imgtool/dump"
	"github.com/imgtool/imgtool/imgset"
)

// launch starts a fixture program of fixtureRoot/bin; see launchPath.
func launch(t *testing.T, log string, prog string, args ...string) int {
	t.Helper()
	return launchPath(t, log, fixtureRoot+"/bin/"+prog, args...)
}

// launchPath starts a program the way the real sets' programs ran (bin/launch: own
// session, stdin /dev/null, output to log) and returns its pid once it has written two
// lines. We are its subreaper (TestMain), so it and its children are reaped once killed.
func launchPath(t *testing.T, log string, prog string, args ...string) int {
	t.Helper()
	out, err := exec.Command(fixtureRoot+"/bin/launch", append([]string{log, prog}, args...)...).Output()
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { killPids(descendants(pid)) })
	waitFor(t, 10*time.Second, filepath.Base(prog)+" to start", func() bool {
		b, _ := os.ReadFile(log)
		return strings.Count(string(b), "\n") >= 2
	})
	return pid
}

// descendants returns pid and every live descendant of it, parents first.
func descendants(pid int) []int {
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

// dumpTo checkpoints the tree of pid with imgtool's dump into a new set (encrypted for
// recipients, if any) and waits for the dumped processes to be gone (the dump kills them).
func dumpTo(t *testing.T, pid int, recipients ...cipher.Recipient) string {
	t.Helper()
	tree := descendants(pid)
	dir := filepath.Join(t.TempDir(), "set")
	w, err := imgset.Create(dir, imgset.CreateOptions{Recipients: recipients})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := dump.Dump(ctx, dump.Options{Pid: pid}, w); err != nil {
		w.Abort()
		t.Fatalf("imgtool dump of %d: %v", pid, err)
	}
	killPids(tree)
	waitPidsGone(t, tree)
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

// TestRoundTripBig restores the 256 MiB process of the dump benchmark (fixtures/src/big.c)
// from a plain set and from an encrypted copy of it, alternately, and logs the times and
// page rates of both: speed is judged by make bench and by reading this log, never asserted.
func TestRoundTripBig(t *testing.T) {
	requireRoot(t)
	if testing.Short() {
		t.Skip("256 MiB round trips")
	}
	setupFixtureFiles(t, "counter")
	log := filepath.Join(t.TempDir(), "big.log")
	pid := launch(t, log, "big")
	plain := dumpTo(t, pid)
	recipients, id := testKey(t)
	enc := filepath.Join(t.TempDir(), "enc")
	if err := imgset.Encrypt(plain, imgset.EncryptOptions{Recipients: recipients, Output: enc}); err != nil {
		t.Fatal(err)
	}
	pages := setPlan(t, openSet(t, plain)).pagesTotal
	const rounds = 3
	best := map[string]time.Duration{}
	for i := 0; i < rounds; i++ {
		for _, c := range []struct {
			name string
			dir  string
			ids  []cipher.Identity
		}{{"plain", plain, nil}, {"encrypted", enc, []cipher.Identity{id}}} {
			// The log must have the size the set recorded (files.img), as before the dump.
			if err := os.Truncate(log, savedPos(t, plain, log)); err != nil {
				t.Fatal(err)
			}
			d := timeRestore(t, c.dir, log, c.ids...)
			t.Logf("%-9s restore %d: %d MiB of pages in %v: %.2f GiB/s", c.name, i+1, pages>>20, d.Round(time.Millisecond), gibPerSec(pages, d))
			if b, ok := best[c.name]; !ok || d < b {
				best[c.name] = d
			}
		}
	}
	t.Logf("best of %d: plain %v (%.2f GiB/s), encrypted %v (%.2f GiB/s): encrypted/plain %.2f", rounds,
		best["plain"].Round(time.Millisecond), gibPerSec(pages, best["plain"]),
		best["encrypted"].Round(time.Millisecond), gibPerSec(pages, best["encrypted"]),
		float64(best["encrypted"])/float64(best["plain"]))
}

func gibPerSec(n int64, d time.Duration) float64 { return float64(n) / d.Seconds() / (1 << 30) }

// timeRestore restores a set of big, checks that it carries on, kills it, and returns how
// long Restore took.
func timeRestore(t *testing.T, dir, log string, ids ...cipher.Identity) time.Duration {
	t.Helper()
	set := openSet(t, dir, ids...)
	pids := setPids(t, set)
	t.Cleanup(func() { killPids(pids) })
	waitPidsGone(t, pids)
	before, _ := os.ReadFile(log)
	start := time.Now()
	if err := Restore(context.Background(), Options{Detach: true}, set); err != nil {
		t.Fatal(err)
	}
	d := time.Since(start)
	waitFor(t, 5*time.Second, "big to carry on", func() bool {
		return strings.Contains(logAfter(t, log, int64(len(before))), "alive ")
	})
	killPids(pids)
	waitPidsGone(t, pids)
	return d
}
