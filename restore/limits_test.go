package restore

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imgtool/imgtool/internal/procfs"
	"github.com/imgtool/imgtool/internal/testproc"
)

// TestRestoreUnderLowerLimits restores real CRIU sets with the real binary on a machine
// made poorer than the one they were dumped on: hard limits below the saved ones and no
// CAP_SYS_RESOURCE, so nothing can raise them (as on machines where the hard RLIMIT_NPROC is
// a few below the fixtures' 96365). Like CRIU, restore clamps each such limit to what is
// allowed, says so once, and the programs carry on.
func TestRestoreUnderLowerLimits(t *testing.T) {
	requireRoot(t)
	for _, tool := range []string{"prlimit", "setpriv"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s (util-linux) is not installed", tool)
		}
	}
	bin := testproc.BuildImgtool(t)
	for _, name := range []string{"counter", "tree"} {
		t.Run(name, func(t *testing.T) {
			dir := criuSet(t, name)
			setupFixtureFiles(t, name)
			want := setPlan(t, openSet(t, dir)).procs[0].leaderCore().Tc.GetRlimits().GetRlimits()
			nproc := lowerThan(want[unix.RLIMIT_NPROC].GetMax(), unix.RLIMIT_NPROC)
			nofile := lowerThan(want[unix.RLIMIT_NOFILE].GetMax(), unix.RLIMIT_NOFILE)
			log := fmt.Sprintf("%s/run/%s/%s.log", fixtureRoot, name, name)
			off := savedPos(t, dir, log)
			pids := treePids(t, dir)
			t.Cleanup(func() { testproc.KillAndReap(pids) })
			testproc.WaitGone(t, pids)

			cmd := exec.Command("prlimit",
				fmt.Sprintf("--nproc=%d:%d", nproc, nproc), fmt.Sprintf("--nofile=%d:%d", nofile, nofile), "--",
				"setpriv", "--bounding-set=-sys_resource", "--inh-caps=-sys_resource", "--",
				bin, "restore", "-D", dir, "-d")
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("restore under lower limits: %v\n%s", err, stderr.String())
			}
			for _, l := range []struct {
				name      string
				got, want uint64
			}{{"RLIMIT_NPROC", nproc, want[unix.RLIMIT_NPROC].GetMax()}, {"RLIMIT_NOFILE", nofile, want[unix.RLIMIT_NOFILE].GetMax()}} {
				line := fmt.Sprintf("resource limit %s: wanted %d/%d, got %d/%d", l.name, l.want, l.want, l.got, l.got)
				if n := strings.Count(stderr.String(), line); n != 1 {
					t.Errorf("want the warning %q once, got it %d times in:\n%s", line, n, stderr.String())
				}
			}
			for _, pid := range pids {
				lim, err := os.ReadFile(procfs.Path(pid, "limits"))
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(string(lim), fmt.Sprintf("Max processes             %-20d %-20d", nproc, nproc)) {
					t.Errorf("process %d limits:\n%s", pid, lim)
				}
			}
			testproc.WaitFor(t, 5*time.Second, "the restored program's output", func() bool {
				return strings.Count(testproc.LogAfter(t, log, off), "\n") >= 2
			})
		})
	}
}

// lowerThan returns a hard limit below both the saved one and this process's own, so that
// restoring the saved one needs CAP_SYS_RESOURCE whatever the machine's limits are.
func lowerThan(saved uint64, res int) uint64 {
	var now unix.Rlimit
	if err := unix.Getrlimit(res, &now); err != nil {
		panic(err)
	}
	return min(saved, now.Max) - 3
}
