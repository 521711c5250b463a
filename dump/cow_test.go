package dump

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"

	"golang.org/x/sys/unix"

	"github.com/imgtool/imgtool/internal/testproc"
)

// launchCOW starts fixtures/src/cow.c in mode and waits until its processes share what
// they are meant to.
func launchCOW(t *testing.T, mode string) *testproc.Proc {
	t.Helper()
	bin := testproc.Build(t, filepath.Join(fixtureSrc, "cow.c"))
	return testproc.Launch(t, bin, testproc.Options{Ready: "ready\n"}, mode)
}

// TestDumpCOWSharingFromFork: a child sharing pages with its parent since fork is dumped
// without a word (a restore forks it from its parent and shares them again), and a dump
// that leaves the tree running leaves the sharing as it was: the pages are not read in a
// way that gives each process its own copy. The child checks its frames against its
// parent's itself.
func TestDumpCOWSharingFromFork(t *testing.T) {
	testproc.RequireRoot(t)
	p := launchCOW(t, "share")
	if err := Dump(context.Background(), Options{Pid: p.Pid, LeaveRunning: true}, newDirSink(t)); err != nil {
		t.Fatalf("dump: %v", err)
	}
	kids := testproc.Descendants(p.Pid)
	if len(kids) != 2 {
		t.Fatalf("tree %v, want a parent and a child", kids)
	}
	at := int64(len(testproc.LogAfter(t, p.Log, 0)))
	if err := unix.Kill(kids[1], unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	var verdict string
	testproc.WaitFor(t, 5*time.Second, "the child's check of the sharing", func() bool {
		for _, l := range strings.Split(testproc.LogAfter(t, p.Log, at), "\n") {
			if l == "ok" || strings.HasPrefix(l, "FAIL") {
				verdict = l
				return true
			}
		}
		return false
	})
	if verdict != "ok" {
		t.Fatalf("after the dump: %s", verdict)
	}
}

// TestDumpCOWSiblings: two children sharing pages their parent has since rewritten are
// dumped (a restore gives them the pages by forking them while the parent holds them),
// each with the pages its parent must hold for its fork in imgtool-fork-pages-PID.img.
func TestDumpCOWSiblings(t *testing.T) {
	testproc.RequireRoot(t)
	p := launchCOW(t, "siblings")
	kids := testproc.Descendants(p.Pid)
	s := newDirSink(t)
	if err := Dump(context.Background(), Options{Pid: p.Pid, LeaveRunning: true}, s); err != nil {
		t.Fatalf("dump: %v", err)
	}
	region := cowRegion(t, p.Log)
	for _, k := range kids[1:] {
		var got []string
		for _, e := range readImg(t, s.dir, fmt.Sprintf("imgtool-fork-pages-%d.img", k)).Entries {
			pe := e.Msg.(*pagemap.PagemapEntry)
			got = append(got, fmt.Sprintf("%#x+%d/%d", pe.GetVaddr(), pe.GetNrPages(), pe.GetFlags()))
		}
		// The region, at least (other pages, of the stack, the heap, may be shared too).
		want := fmt.Sprintf("%#x+64/0", region)
		if !slices.ContainsFunc(got, func(g string) bool {
			return g == want || strings.HasPrefix(g, fmt.Sprintf("%#x+", region)) && strings.HasSuffix(g, "/0")
		}) {
			t.Errorf("child %d: fork pages %v, want %s among them", k, got, want)
		}
	}
	if _, err := os.Stat(filepath.Join(s.dir, fmt.Sprintf("imgtool-fork-pages-%d.img", p.Pid))); err == nil {
		t.Errorf("the root has fork pages")
	}
}

// cowRegion reads the address of cow.c's region from its log.
func cowRegion(t *testing.T, log string) uint64 {
	t.Helper()
	m := regexp.MustCompile(`region=0x([0-9a-f]+)`).FindStringSubmatch(testproc.LogAfter(t, log, 0))
	if m == nil {
		t.Fatal("no region= line in the log")
	}
	v, err := strconv.ParseUint(m[1], 16, 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestRefuseCOWSharingRestoreCannotRebuild: a child and its nephew sharing pages both
// their parents have since rewritten would each get a copy from a restore (each is forked
// from its own parent, and neither holds those pages): refused, naming the nephew and the
// child, before anything is seized, unless COWCopies accepts the copies.
func TestRefuseCOWSharingRestoreCannotRebuild(t *testing.T) {
	testproc.RequireRoot(t)
	p := launchCOW(t, "cousins")
	kids := testproc.Descendants(p.Pid)
	if len(kids) != 4 {
		t.Fatalf("tree %v, want 4 processes", kids)
	}
	seized := seizes.Load()
	err := Dump(context.Background(), Options{Pid: p.Pid, LeaveRunning: true}, newDirSink(t))
	if n := seizes.Load() - seized; n != 0 {
		t.Errorf("the refusal came after %d thread(s) were seized", n)
	}
	var one *RefusedError
	if !errors.As(err, &one) {
		t.Fatalf("err = %v, want one refusal", err)
	}
	want := fmt.Sprintf("shared copy-on-write with process %d", kids[2])
	if one.Pid != kids[3] || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "--cow-copies") {
		t.Fatalf("refusal %q, want process %d's pages %q", err, kids[3], want)
	}
	if err := Dump(context.Background(), Options{Pid: p.Pid, LeaveRunning: true, COWCopies: true}, newDirSink(t)); err != nil {
		t.Fatalf("with COWCopies: %v", err)
	}
}

// TestForkable: the orders in which a parent can fork its children so that each group of
// siblings gets its page and those sharing the parent's own get that.
func TestForkable(t *testing.T) {
	group := func(pids ...int) siblingGroup {
		var g siblingGroup
		for _, p := range pids {
			g.members = append(g.members, cowHolder{pid: p})
		}
		return g
	}
	for _, c := range []struct {
		name       string
		children   []int
		groups     []siblingGroup
		withParent []int
		want       bool
	}{
		{"one group", []int{1, 2, 3}, []siblingGroup{group(1, 2, 3)}, nil, true},
		{"a child between with no need", []int{1, 2, 3}, []siblingGroup{group(1, 3)}, nil, true},
		{"two groups one after the other", []int{1, 2, 3, 4}, []siblingGroup{group(1, 2), group(3, 4)}, nil, true},
		{"two groups interleaved", []int{1, 2, 3, 4}, []siblingGroup{group(1, 3), group(2, 4)}, nil, false},
		{"the parent's own last", []int{1, 2, 3}, []siblingGroup{group(1, 2)}, []int{3}, true},
		{"the parent's own first", []int{1, 2, 3}, []siblingGroup{group(2, 3)}, []int{1}, false},
	} {
		if got := forkable(c.children, c.groups, c.withParent); got != c.want {
			t.Errorf("%s: forkable = %v, want %v", c.name, got, c.want)
		}
	}
}
