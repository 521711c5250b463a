package dump

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unsafe"

	criu_core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pstree"
	"golang.org/x/sys/cpu"
	"golang.org/x/sys/unix"

	"github.com/imgtool/imgtool/internal/procfs"
	"github.com/imgtool/imgtool/internal/testproc"
)

// refusedAtOnce dumps a launched program that must be refused before any thread is
// seized, and returns every refusal.
func refusedAtOnce(t *testing.T, prog string, args ...string) Refusals {
	t.Helper()
	return refusedWith(t, Options{}, prog, args...)
}

// refusedWith is refusedAtOnce with the dump's options opts (Pid set here).
func refusedWith(t *testing.T, opts Options, prog string, args ...string) Refusals {
	t.Helper()
	all, _ := refusedProc(t, opts, prog, args...)
	return all
}

// refusedProc is refusedWith, which also returns the program it launched.
func refusedProc(t *testing.T, opts Options, prog string, args ...string) (Refusals, *testproc.Proc) {
	t.Helper()
	tg := launch(t, prog, args...)
	return refusedTarget(t, opts, tg), tg
}

// refusedTarget is refusedWith for a program already launched.
func refusedTarget(t *testing.T, opts Options, tg *testproc.Proc) Refusals {
	t.Helper()
	seized := seizes.Load()
	opts.Pid = tg.Pid
	err := Dump(context.Background(), opts, newDirSink(t))
	if n := seizes.Load() - seized; n != 0 {
		t.Errorf("the refusal came after %d thread(s) were seized", n)
	}
	if err == nil {
		t.Fatal("the dump succeeded")
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("not one line: %q", err)
	}
	var all Refusals
	var one *RefusedError
	switch {
	case errors.As(err, &all):
	case errors.As(err, &one):
		all = Refusals{one}
	default:
		t.Fatalf("err = %v, want a refusal", err)
	}
	if st, _ := procfs.ReadStatus(procfs.Path(tg.Pid, "status")); st["TracerPid"] != "0" || st["State"][0] == 'T' {
		t.Errorf("target left traced or stopped: %v %v", st["TracerPid"], st["State"])
	}
	return all
}

// TestRefuseFileLocks: a process holding file locks is refused, every lock at once
// (POSIX, OFD and flock), naming fd and lock: dumped without them, the restored program
// would write while another writer thinks it holds the file (SQLite loses data so).
func TestRefuseFileLocks(t *testing.T) {
	all := refusedAtOnce(t, "refusals", "locks")
	want := []string{"posix.db: holds a lock (POSIX WRITE 0-3): file locks are only dumped with --file-locks",
		"ofd.db: holds a lock (OFDLCK READ 2-3)", "flock.db: holds a lock (FLOCK WRITE)"}
	if len(all) != len(want) {
		t.Fatalf("%d refusals, want %d: %v", len(all), len(want), all)
	}
	for _, w := range want {
		if !strings.Contains(all.Error(), w) {
			t.Errorf("%q does not say %q", all.Error(), w)
		}
	}
}

// TestDumpSharedFdTable: a child cloned with its parent's fd table (CLONE_FILES) is
// dumped with its parent's files id, the table's fds written once (restore clones it
// sharing the table, as CRIU does).
func TestDumpSharedFdTable(t *testing.T) {
	tg := launch(t, "refusals", "files")
	s := dumpTarget(t, tg.Pid, true)
	var ids []uint32
	for _, e := range readImg(t, s.dir, "pstree.img").Entries {
		pid := e.Msg.(*pstree.PstreeEntry).GetPid()
		ids = append(ids, readImg(t, s.dir, fmt.Sprintf("ids-%d.img", pid)).Entries[0].Msg.(*criu_core.TaskKobjIdsEntry).GetFilesId())
	}
	if len(ids) != 2 || ids[0] != ids[1] {
		t.Fatalf("files ids %v, want the parent's and the child's the same", ids)
	}
}

// TestRefuseOwnerOutsideTheTree: an fd whose owner (F_SETOWN) is outside the tree would
// signal whatever process gets that number after a restore: refused, before anything is
// touched.
func TestRefuseOwnerOutsideTheTree(t *testing.T) {
	all := refusedAtOnce(t, "fownout", "parent")
	if len(all) != 1 || all[0].Fd != 3 || !strings.Contains(all[0].Error(), "is outside the tree") {
		t.Errorf("refusals %v, want fd 3's owner", all)
	}
}

// TestDumpRefusesLockOnFault: memory locked on fault (mlock2 MLOCK_ONFAULT) has no field
// in vma_entry; a restore would lock, and fault in, every page. It is refused before the
// tree is touched.
func TestDumpRefusesLockOnFault(t *testing.T) {
	all := refusedAtOnce(t, "lockonfault")
	if len(all) != 1 || !strings.Contains(all[0].Error(), "locked on fault") {
		t.Errorf("refusals %v, want the memory locked on fault", all)
	}
}

// TestDumpRefusesHugetlb: a hugetlb mapping is refused before the tree is touched, even
// one whose page was never faulted in (no hugetlb page counted in the process's status,
// which lets precheck read maps instead of smaps: precheckMappings). Skipped where this
// kernel makes no such mapping.
func TestDumpRefusesHugetlb(t *testing.T) {
	b, err := unix.Mmap(-1, 0, 2<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_HUGETLB|unix.MAP_NORESERVE)
	if err != nil {
		t.Skipf("no hugetlb mapping on this machine: %v", err)
	}
	unix.Munmap(b)
	all := refusedAtOnce(t, "hugetlb")
	if len(all) != 1 || !strings.Contains(all[0].Error(), "hugetlb mappings are not supported") {
		t.Errorf("refusals %v, want the hugetlb mapping", all)
	}
}

// TestRefuseEpollTargets: an epoll is dumped with every target registered in it, each to
// be registered again under its fd number; one watching a file the dump cannot save, or a
// file registered under a number that is closed or names another file now, is refused,
// naming the epoll's fd and the target.
func TestRefuseEpollTargets(t *testing.T) {
	for _, c := range []struct{ mode, want string }{
		{"socket", "fd 3 is anon_inode:[eventpoll]: watches fd 6 (socket:["},
		{"closed", "fd 3 is anon_inode:[eventpoll]: watches a file registered as fd 4, which is no longer open"},
		{"reused", "fd 3 is anon_inode:[eventpoll]: watches a file registered as fd 4, but fd 4 is now another file"},
	} {
		t.Run(c.mode, func(t *testing.T) {
			all := refusedAtOnce(t, "epollrefuse", c.mode)
			if !strings.Contains(all.Error(), c.want) {
				t.Errorf("%q does not say %q", all.Error(), c.want)
			}
		})
	}
}

// TestRefuseWhatCannotBeReopened: an open file of /proc (it names a process's state, and
// is reopened before the restored processes exist), an unlinked device node (zdtm's
// memfd02 and deleted_dev were dumped, then failed to restore), a file whose name was
// removed while it keeps another without --link-remap (remap_test.go has more), a working
// directory in the /proc directory of a process that has exited. Refused, before anything
// is touched.
func TestRefuseWhatCannotBeReopened(t *testing.T) {
	for _, c := range []struct{ mode, want string }{
		{"procfile", "is /proc/"},
		{"devnode", "null.dev (deleted): device nodes that were removed cannot be recreated"},
		{"linkremap", "a.txt (deleted): its name was removed while another name of it remains (a hard link): use --link-remap"},
		{"procdir", " (deleted): it is in the /proc directory of a process that has exited: not supported"},
	} {
		t.Run(c.mode, func(t *testing.T) {
			all := refusedAtOnce(t, "refusals", c.mode)
			if len(all) != 1 || !strings.Contains(all.Error(), c.want) {
				t.Errorf("refusals %v, want one saying %q", all, c.want)
			}
		})
	}
}

// TestRefusePipeEndsOutside: a pipe the tree holds one end of while a process outside
// holds the other is refused (a restore would leave the reader at the end of the file,
// the writer to SIGPIPE), naming the fd and the end; an end whose other end is closed, or
// held in the tree, is not.
func TestRefusePipeEndsOutside(t *testing.T) {
	testproc.RequireRoot(t)
	all, p := refusedProc(t, Options{}, "refusals", "pipes")
	reapOrphan(t, p)
	want := map[int]string{3: "its read end is open outside the tree", 4: "its write end is open outside the tree"}
	if len(all) != len(want) {
		t.Errorf("%d refusals, want %d: %v", len(all), len(want), all)
	}
	for _, re := range all {
		if w, ok := want[re.Fd]; !ok || !strings.Contains(re.Error(), "pipe:[") || !strings.Contains(re.Error(), w) {
			t.Errorf("fd %d: %q, want one saying %q", re.Fd, re.Error(), w)
		}
	}
}

// TestRefuseRootOutsideItsSession: a root that does not lead its session (a shell's job
// here; a daemon that forked twice alike) is refused before anything is seized, as CRIU
// refuses it, unless ShellJob accepts it.
func TestRefuseRootOutsideItsSession(t *testing.T) {
	testproc.RequireRoot(t)
	sh := testproc.Launch(t, "/bin/sh", testproc.Options{Ready: "job="}, "-c", "sleep 1000 & echo job=$!; wait")
	var job int
	log := sh.ReadLog(t)
	if _, err := fmt.Sscanf(log[strings.Index(log, "job="):], "job=%d", &job); err != nil {
		t.Fatal(err)
	}
	all := refusedTarget(t, Options{}, &testproc.Proc{Pid: job})
	if want := "the root does not lead its session"; len(all) != 1 || !strings.Contains(all.Error(), want) {
		t.Errorf("refusals %v, want one saying %q", all, want)
	}
	if err := Dump(context.Background(), Options{Pid: job, ShellJob: true, LeaveRunning: true}, newDirSink(t)); err != nil {
		t.Errorf("dump with ShellJob: %v", err)
	}
}

// TestRefuseIOPriority: a thread whose I/O priority (ionice) is not imgtool's is refused,
// named: CRIU's images have no place for it, and a restore gives its processes its own.
func TestRefuseIOPriority(t *testing.T) {
	all := refusedAtOnce(t, "refusals", "ioprio")
	if want := "is not imgtool's"; len(all) != 1 || !strings.Contains(all.Error(), "its I/O priority (ionice: ") || !strings.Contains(all.Error(), want) {
		t.Errorf("refusals %v, want one saying %q", all, want)
	}
}

// TestRefusePidfds: a pidfd a restore could not open again is refused, naming why: of a
// process outside the tree, of a zombie of the tree, of a thread (PIDFD_THREAD). (A pidfd
// of a live process of the tree is dumped: restore/testdata/states.c's pidfd.)
func TestRefusePidfds(t *testing.T) {
	testproc.RequireRoot(t)
	all, p := refusedProc(t, Options{}, "refusals", "pidfd")
	want := map[int]string{
		3: "which is not part of the tree",
		4: "a zombie of the tree",
		5: "a pidfd of a thread (PIDFD_THREAD)",
	}
	if strings.Contains(p.ReadLog(t), "no PIDFD_THREAD") {
		delete(want, 5)
	}
	if len(all) != len(want) {
		t.Errorf("%d refusals, want %d: %v", len(all), len(want), all)
	}
	for _, re := range all {
		if w, ok := want[re.Fd]; !ok || !strings.Contains(re.Error(), w) || !strings.Contains(re.Error(), "pidfd") {
			t.Errorf("fd %d: %q, want one saying %q", re.Fd, re.Error(), w)
		}
	}
}

// TestRefuseAnonKinds: anonymous inodes CRIU knows and imgtool cannot restore are refused
// by their kind, before anything is touched.
func TestRefuseAnonKinds(t *testing.T) {
	for _, mode := range []string{"fanotify"} {
		t.Run(mode, func(t *testing.T) {
			all := refusedAtOnce(t, "refusals", mode)
			want := "anon_inode:[" + mode + "]: this kind of file is not supported"
			if len(all) != 1 || !strings.Contains(all.Error(), want) {
				t.Errorf("refusals %v, want one saying %q", all, want)
			}
		})
	}
}

// TestDumpOPathFd: an O_PATH fd has no owner to read (fcntl says EBADF): it is dumped,
// not refused (zdtm's opath_file).
func TestDumpOPathFd(t *testing.T) {
	testproc.RequireRoot(t)
	tg := launch(t, "refusals", "opath")
	dumpTarget(t, tg.Pid, true)
}

// TestRefuseInotifyQueued: an inotify's events not read yet would be lost (no image
// keeps them): refused, naming how much, before anything is seized.
func TestRefuseInotifyQueued(t *testing.T) {
	all := refusedAtOnce(t, "refusals", "inotifyq")
	if len(all) != 1 || !strings.Contains(all.Error(), "anon_inode:inotify") || !strings.Contains(all.Error(), "events not read yet") {
		t.Errorf("refusals %v, want the inotify's queued events", all)
	}
}

// TestRefuseInotifyGhost: an inotify watching a file deleted while an fd keeps it (zdtm's
// inotify00): its handle opens it while the tree lives, not once the set is restored
// (CRIU watches its ghost file; imgtool does not): refused, naming the watch, before
// anything is seized.
func TestRefuseInotifyGhost(t *testing.T) {
	all := refusedAtOnce(t, "refusals", "inotifyghost")
	if len(all) != 1 || !strings.Contains(all.Error(), "anon_inode:inotify: watch 1 (inode ") || !strings.Contains(all.Error(), "it was deleted") {
		t.Errorf("refusals %v, want the inotify's watch of a deleted file", all)
	}
}

// TestRefuseUnrecordedState: state no image field records, seen once the tree is stopped
// (the process is asked): mlockall(MCL_FUTURE), which locks every mapping made later (the
// dump's own scratch mapping shows it), and membarrier registrations. Each is refused,
// named, and the process carries on untraced.
func TestRefuseUnrecordedState(t *testing.T) {
	for prog, want := range map[string]string{"lockfuture": "mlockall(MCL_FUTURE)", "membarrier": "membarrier registrations"} {
		t.Run(prog, func(t *testing.T) { refusedStopped(t, prog, want) })
	}
}

func refusedStopped(t *testing.T, prog, want string) {
	testproc.RequireRoot(t)
	p := testproc.Launch(t, testproc.Build(t, "testdata/"+prog+".c"), testproc.Options{Ready: "ready"})
	err := Dump(context.Background(), Options{Pid: p.Pid, LeaveRunning: true}, newDirSink(t))
	var one *RefusedError
	if !errors.As(err, &one) || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v, want a refusal of %s", err, want)
	}
	if st, _ := procfs.ReadStatus(procfs.Path(p.Pid, "status")); st["TracerPid"] != "0" || st["State"][0] == 'T' {
		t.Errorf("target left traced or stopped: %v %v", st["TracerPid"], st["State"])
	}
	before := strings.Count(testproc.LogAfter(t, p.Log, 0), "tick")
	testproc.WaitFor(t, 5*time.Second, "ticks after the refusal", func() bool {
		return strings.Count(testproc.LogAfter(t, p.Log, 0), "tick") > before+1
	})
}

// TestDumpRefusesLiveAMXTiles: a thread whose AMX tile registers hold data has XSAVE state
// a CRIU core image cannot hold; a restore would bring it back with its tiles reset. The
// dump refuses it, naming the thread, once the thread is stopped (only ptrace shows the
// XSAVE state) and before anything is injected: the program goes on as it was.
func TestDumpRefusesLiveAMXTiles(t *testing.T) {
	testproc.RequireRoot(t)
	if !cpu.X86.HasAMXTile {
		t.Skip("this CPU has no AMX")
	}
	var supported uint64
	const archGetXcompSupp = 0x1021
	if _, _, e := unix.Syscall(unix.SYS_ARCH_PRCTL, archGetXcompSupp, uintptr(unsafe.Pointer(&supported)), 0); e != 0 || supported&(1<<18) == 0 {
		t.Skipf("this kernel offers no AMX tile data (%v, features %#x)", e, supported)
	}
	tg := launch(t, "amx")
	err := Dump(context.Background(), Options{Pid: tg.Pid}, newDirSink(t))
	var one *RefusedError
	if !errors.As(err, &one) || !strings.Contains(err.Error(), "CRIU images cannot hold") {
		t.Fatalf("dump: %v, want a refusal of the live AMX state", err)
	}
	if !strings.Contains(err.Error(), fmt.Sprintf("thread %d", tg.Pid)) {
		t.Errorf("%q does not name thread %d", err, tg.Pid)
	}
	st, err := procfs.ReadStatus(procfs.Path(tg.Pid, "status"))
	if err != nil {
		t.Fatal(err)
	}
	// Running or sleeping (just woken by the detach, it may not be back in pause yet),
	// never stopped or traced.
	if s := st["State"]; strings.HasPrefix(s, "t") || strings.HasPrefix(s, "T") || st["TracerPid"] != "0" {
		t.Errorf("after the refusal the program is %q, traced by %s: want it going on, untraced", s, st["TracerPid"])
	}
}
