package dump

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	criu_core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pstree"

	"github.com/imgtool/imgtool/image"
	"github.com/imgtool/imgtool/internal/procfs"
	"github.com/imgtool/imgtool/internal/testproc"
)

// TestDumpStates dumps, leaving it running, each state of restore/testdata/states.c and
// checks the images and that the tree is left as it was: zombies (core only, task_state
// TASK_DEAD with the wait status, no other image; still zombies afterwards), POSIX timers
// (ids, clock, signal, value, notification), and a stopped child (TASK_STOPPED, SIGSTOP;
// still stopped afterwards).
func TestDumpStates(t *testing.T) {
	testproc.RequireRoot(t)
	bin := testproc.Build(t, "../restore/testdata/states.c")
	for _, mode := range []string{"zombie", "timers", "stopped", "stopped-pending"} {
		t.Run(mode, func(t *testing.T) {
			p := testproc.Launch(t, bin, testproc.Options{Ready: "ready pid="}, mode)
			kids := testproc.Descendants(p.Pid)
			s := newDirSink(t)
			if err := Dump(context.Background(), Options{Pid: p.Pid, LeaveRunning: true, COWCopies: true}, s); err != nil {
				t.Fatal(err)
			}
			var ps []*pstree.PstreeEntry
			for _, e := range readImg(t, s.dir, "pstree.img").Entries {
				ps = append(ps, e.Msg.(*pstree.PstreeEntry))
			}
			core := func(pid uint32) *criu_core.TaskCoreEntry {
				return readImg(t, s.dir, fmt.Sprintf("core-%d.img", pid)).Entries[0].Msg.(*criu_core.CoreEntry).GetTc()
			}
			switch mode {
			case "zombie":
				if len(ps) != 3 {
					t.Fatalf("pstree: %d processes, want 3", len(ps))
				}
				want := map[uint32]uint32{ps[1].GetPid(): 3 << 8, ps[2].GetPid(): 15}
				for _, e := range ps[1:] {
					tc := core(e.GetPid())
					if tc.GetTaskState() != image.TaskDead || tc.GetExitCode() != want[e.GetPid()] || len(e.Threads) != 1 {
						t.Errorf("zombie %d: state %d exit code %#x threads %v", e.GetPid(), tc.GetTaskState(), tc.GetExitCode(), e.Threads)
					}
					if _, err := os.Stat(filepath.Join(s.dir, fmt.Sprintf("mm-%d.img", e.GetPid()))); err == nil {
						t.Errorf("zombie %d has an mm image", e.GetPid())
					}
				}
			case "timers":
				var ids []uint32
				for _, pt := range core(ps[0].GetPid()).GetTimers().GetPosix() {
					ids = append(ids, pt.GetItId())
					if pt.GetItId() == 1 && (pt.GetSiSigno() != 34 || pt.GetSivalPtr() != 42 || pt.GetClockId() != 1 || pt.GetInsec() != 20e6) {
						t.Errorf("timer 1: %v", pt)
					}
					if pt.GetItId() == 4 && (pt.GetItSigevNotify() != 4 || pt.GetNotifyThreadId() != int32(p.Pid)) {
						t.Errorf("timer 4: %v", pt)
					}
				}
				slices.Sort(ids)
				if fmt.Sprint(ids) != "[1 3 4 5]" {
					t.Errorf("timer ids %v", ids)
				}
			case "stopped", "stopped-pending":
				tc := core(ps[1].GetPid())
				if tc.GetTaskState() != image.TaskStopped || tc.GetStopSigno() != 19 {
					t.Errorf("stopped child: state %d, stop signal %d", tc.GetTaskState(), tc.GetStopSigno())
				}
			}
			want := map[string]string{"zombie": "Z", "stopped": "T", "stopped-pending": "T"}[mode]
			for _, k := range kids {
				if k == p.Pid {
					continue
				}
				st, err := procfs.ReadStatus(procfs.Path(k, "status"))
				if err != nil {
					t.Fatal(err)
				}
				if st["TracerPid"] != "0" {
					t.Errorf("child %d left traced by %s", k, st["TracerPid"])
				}
				// A detached thread of a stopped process runs for a moment to stop
				// again (the kernel wakes it with its group stop pending): on a
				// loaded machine it may not have been scheduled yet.
				testproc.WaitFor(t, 0, fmt.Sprintf("child %d to be in state %s", k, want), func() bool {
					st, err := procfs.ReadStatus(procfs.Path(k, "status"))
					return err == nil && st["State"][:1] == want
				})
			}
		})
	}
}
