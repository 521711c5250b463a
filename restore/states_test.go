package restore

import (
	"fmt"
	"testing"

	"github.com/imgtool/imgtool/internal/testproc"
)

// stateModes are the states of testdata/states.c: zombies, POSIX timers, a stopped child,
// ..., pidfds.
var stateModes = []string{"zombie", "timers", "stopped", "stopped-pending", "seccomp", "seccomp-tsync", "seccomp-strict", "chroot", "clone-files", "leaderless-group", "pidfd"}

// TestRoundTripStates dumps and restores testdata/states.c once per state and lets it
// check itself: its zombie children reaped with their status (exit 3, SIGTERM), its POSIX
// timers with their ids, clocks, signals and times ticking on, its stopped child still
// stopped and continuing on SIGCONT.
func TestRoundTripStates(t *testing.T) {
	requireRoot(t)
	bin := testproc.Build(t, "testdata/states.c")
	for _, mode := range stateModes {
		t.Run(mode, func(t *testing.T) {
			p := testproc.Launch(t, bin, testproc.Options{Ready: "ready pid="}, mode)
			dir := dumpTo(t, p.Pid)
			off := savedPos(t, dir, p.Log)
			pids := restoreSet(t, dir, Options{})
			checkSelf(t, pids[0], p.Log, off)
		})
	}
}

// TestCRIUInteropStates: every state of testdata/states.c, dumped by one tool and restored
// by the other, checks itself.
func TestCRIUInteropStates(t *testing.T) {
	criu := criuBin(t)
	bin := testproc.Build(t, "testdata/states.c")
	for _, mode := range stateModes {
		for _, way := range []string{"imgtool-criu", "criu-imgtool"} {
			t.Run(mode+"/"+way, func(t *testing.T) {
				p := testproc.Launch(t, bin, testproc.Options{Ready: "ready pid="}, mode)
				var dir string
				if way == "criu-imgtool" {
					dir = t.TempDir()
					runCRIU(t, criu, dir, "dump.log", "dump", "-t", fmt.Sprint(p.Pid))
					testproc.WaitGone(t, []int{p.Pid})
				} else {
					dir = dumpTo(t, p.Pid)
				}
				off := savedPos(t, dir, p.Log)
				var root int
				if way == "criu-imgtool" {
					root = restoreSet(t, dir, Options{})[0]
				} else {
					root = criuRestore(t, criu, dir, treePids(t, dir))
				}
				checkSelf(t, root, p.Log, off)
			})
		}
	}
}
