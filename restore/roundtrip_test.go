package restore

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imgtool/imgtool/cipher"
	"github.com/imgtool/imgtool/dump"
	"github.com/imgtool/imgtool/imgset"
	"github.com/imgtool/imgtool/internal/testproc"
)

// launchFixture builds a program of fixtures/src and launches it (see testproc.Launch),
// its log in a fresh directory, ready once the log holds ready.
func launchFixture(t *testing.T, prog, ready string, args ...string) *testproc.Proc {
	t.Helper()
	bin := testproc.Build(t, filepath.Join(repoFixtures(t), "src", prog+".c"))
	return testproc.Launch(t, bin, testproc.Options{Ready: ready}, args...)
}

// dumpTo checkpoints the tree of pid with imgtool's dump into a new set (encrypted for
// recipients, if any) and waits for the dumped processes to be gone (the dump kills them).
// Nothing is accepted that a plain dump refuses (not even copies of pages shared
// copy-on-write): every tree here must restore exactly.
func dumpTo(t *testing.T, pid int, recipients ...cipher.Recipient) string {
	t.Helper()
	return dumpWith(t, dump.Options{Pid: pid}, recipients...)
}

// dumpWith is dumpTo with the dump's options opts (opts.Pid the tree's root).
func dumpWith(t *testing.T, opts dump.Options, recipients ...cipher.Recipient) string {
	t.Helper()
	pid := opts.Pid
	tree := testproc.Descendants(pid)
	dir := filepath.Join(t.TempDir(), "set")
	w, err := imgset.Create(dir, imgset.CreateOptions{Recipients: recipients})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := dump.Dump(ctx, opts, w); err != nil {
		w.Abort()
		t.Fatalf("imgtool dump of %d: %v", pid, err)
	}
	testproc.KillAndReap(tree)
	testproc.WaitGone(t, tree)
	return dir
}

func TestRoundTripCounter(t *testing.T) {
	requireRoot(t)
	p := launchFixture(t, "counter", "counter=2\n", "roundtrip")
	log := p.Log
	dir := dumpTo(t, p.Pid)
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
	testproc.WaitFor(t, 5*time.Second, "counter output", func() bool {
		return strings.Count(testproc.LogAfter(t, log, int64(len(before))), "\n") >= 2
	})
	got := strings.Split(testproc.LogAfter(t, log, int64(len(before))), "\n")
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
	p := launchFixture(t, "big", "alive ")
	log := p.Log
	plain := dumpTo(t, p.Pid)
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
	t.Cleanup(func() { testproc.KillAndReap(pids) })
	testproc.WaitGone(t, pids)
	before, _ := os.ReadFile(log)
	start := time.Now()
	if err := Restore(context.Background(), Options{Detach: true}, set); err != nil {
		t.Fatal(err)
	}
	d := time.Since(start)
	testproc.WaitFor(t, 5*time.Second, "big to carry on", func() bool {
		return strings.Contains(testproc.LogAfter(t, log, int64(len(before))), "alive ")
	})
	testproc.KillAndReap(pids)
	testproc.WaitGone(t, pids)
	return d
}

// restoresCounting restores the set dir of p, a program printing "n=N" lines, and checks
// that it goes on from the last line it wrote before the dump, with no gap or repeat.
func restoresCounting(t *testing.T, p *testproc.Proc, dir string) {
	t.Helper()
	off := savedPos(t, dir, p.Log)
	before := testproc.LogAfter(t, p.Log, 0)[:off]
	restoreSet(t, dir, Options{})
	num := regexp.MustCompile(`n=(\d+)\n`)
	var after []string
	testproc.WaitFor(t, 5*time.Second, "ticks after the restore", func() bool {
		after = num.FindAllString(testproc.LogAfter(t, p.Log, off), -1)
		return len(after) >= 5
	})
	last := num.FindAllStringSubmatch(before, -1)
	if len(last) == 0 {
		t.Fatalf("no tick before the dump: %q", before)
	}
	n, _ := strconv.Atoi(last[len(last)-1][1])
	for i, s := range after {
		if want := fmt.Sprintf("n=%d\n", n+1+i); s != want {
			t.Fatalf("after the restore, line %d is %q, want %q (last before the dump: n=%d)", i, s, want, n)
		}
	}
}
