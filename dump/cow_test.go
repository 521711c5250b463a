package dump

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

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

// TestRefuseCOWSharingRestoreCannotRebuild: two children sharing pages their parent has
// since rewritten would each get a copy from a restore (each is forked from the parent,
// which no longer has those pages): refused, naming the second child and the first,
// before anything is seized, unless COWCopies accepts the copies.
func TestRefuseCOWSharingRestoreCannotRebuild(t *testing.T) {
	testproc.RequireRoot(t)
	p := launchCOW(t, "siblings")
	kids := testproc.Descendants(p.Pid)
	seized := seizes.Load()
	err := Dump(context.Background(), Options{Pid: p.Pid, LeaveRunning: true}, newDirSink(t))
	if n := seizes.Load() - seized; n != 0 {
		t.Errorf("the refusal came after %d thread(s) were seized", n)
	}
	var one *RefusedError
	if !errors.As(err, &one) {
		t.Fatalf("err = %v, want one refusal", err)
	}
	want := fmt.Sprintf("shared copy-on-write with process %d", kids[1])
	if one.Pid != kids[2] || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "--cow-copies") {
		t.Fatalf("refusal %q, want process %d's pages %q", err, kids[2], want)
	}
	if err := Dump(context.Background(), Options{Pid: p.Pid, LeaveRunning: true, COWCopies: true}, newDirSink(t)); err != nil {
		t.Fatalf("with COWCopies: %v", err)
	}
}
