package restore

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imgtool/imgtool/internal/testproc"
)

// TestRoundTripSilentStates dumps and restores testdata/silent.c once per state that
// CRIU's test suite (zdtm) caught restored wrong without an error, and lets the program
// check its own state after the restore: memory locks (maps02, mlock_setuid), the child
// subreaper flag (child_subreaper), SCHED_RESET_ON_FORK (sched_policy00), file owners,
// signals and O_ASYNC (file_fown), the access a shared file mapping may be given
// (maps_file_prot), and a memfd smaller than a page (memfd00).
func TestRoundTripSilentStates(t *testing.T) {
	requireRoot(t)
	bin := testproc.Build(t, "testdata/silent.c")
	for _, c := range silentModes {
		t.Run(c.mode, func(t *testing.T) {
			p := testproc.Launch(t, bin, testproc.Options{Ready: "ready pid="}, append([]string{c.mode}, c.args...)...)
			dir := dumpTo(t, p.Pid)
			off := savedPos(t, dir, p.Log)
			pids := restoreSet(t, dir, Options{})
			if err := unix.Kill(pids[0], unix.SIGUSR1); err != nil {
				t.Fatal(err)
			}
			var out string
			testproc.WaitFor(t, 5*time.Second, "the restored program's own check", func() bool {
				out = testproc.LogAfter(t, p.Log, off)
				return strings.Contains(out, "ok\n") || strings.Contains(out, "FAIL")
			})
			if !strings.HasPrefix(out, "ok\n") {
				t.Fatalf("after the restore: %s (set %s)", strings.TrimSpace(out), filepath.Base(dir))
			}
		})
	}
}
