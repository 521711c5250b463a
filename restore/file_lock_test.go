package restore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	file_lock "github.com/checkpoint-restore/go-criu/v8/crit/images/file-lock"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/imgtool/imgtool/dump"
	"github.com/imgtool/imgtool/image"
	"github.com/imgtool/imgtool/imgset"
	"github.com/imgtool/imgtool/internal/procfs"
	"github.com/imgtool/imgtool/internal/testproc"
)

// dumpLocked dumps the tree of pid with its file locks (dump.Options.FileLocks) and kills it.
func dumpLocked(t *testing.T, pid int) string {
	t.Helper()
	tree := testproc.Descendants(pid)
	dir := filepath.Join(t.TempDir(), "set")
	w, err := imgset.Create(dir, imgset.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := dump.Dump(ctx, dump.Options{Pid: pid, COWCopies: true, FileLocks: true}, w); err != nil {
		w.Abort()
		t.Fatalf("imgtool dump --file-locks of %d: %v", pid, err)
	}
	testproc.KillAndReap(tree)
	testproc.WaitGone(t, tree)
	return dir
}

// savedLocks returns the entries of a set's filelocks.img.
func savedLocks(t *testing.T, dir string) []*file_lock.FileLockEntry {
	t.Helper()
	var out []*file_lock.FileLockEntry
	for _, e := range readImageFile(t, filepath.Join(dir, "filelocks.img")).Entries {
		out = append(out, e.Msg.(*file_lock.FileLockEntry))
	}
	return out
}

// heldBy returns the locks of /proc/locks on file, as "CLASS TYPE PID RANGE" strings.
func heldBy(t *testing.T, file string) []string {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(file, &st); err != nil {
		t.Fatal(err)
	}
	all, err := procfs.ReadLocks()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range all {
		if l.Ino == st.Ino && !l.Blocked {
			out = append(out, fmt.Sprintf("%s %s %d %s", l.Class, l.Type, l.Pid, l.Range()))
		}
	}
	return out
}

// wantHeld checks that /proc/locks shows exactly want on file.
func wantHeld(t *testing.T, file string, want ...string) {
	t.Helper()
	got := heldBy(t, file)
	if strings.Join(sorted(got), "; ") != strings.Join(sorted(want), "; ") {
		t.Errorf("%s: /proc/locks has %q, want %q", filepath.Base(file), got, want)
	}
}

func sorted(s []string) []string {
	s = append([]string(nil), s...)
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s
}

// conflict asks, as an outside process would (F_GETLK, or F_OFD_GETLK when ofd), who
// holds a lock conflicting with a write lock on start..start+n-1 of file; it returns the
// type and pid of that lock, or F_UNLCK.
func conflict(t *testing.T, file string, ofd bool, start, n int64) (int16, int32) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := unix.F_GETLK
	if ofd {
		cmd = unix.F_OFD_GETLK
	}
	l := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: start, Len: n}
	if err := unix.FcntlFlock(f.Fd(), cmd, &l); err != nil {
		t.Fatal(err)
	}
	return l.Type, l.Pid
}

// flockFree tells whether an outside flock of kind how (LOCK_SH, LOCK_EX) on file would be
// granted now (it is released at once).
func flockFree(t *testing.T, file string, how int) bool {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	err = unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
	if err != nil && !errors.Is(err, unix.EWOULDBLOCK) {
		t.Fatal(err)
	}
	return err == nil
}

// checkMixedLocks checks, from outside, the locks testdata/locks.c mixed holds as pid.
func checkMixedLocks(t *testing.T, dir string, pid int) {
	t.Helper()
	p := strconv.Itoa(pid)
	wantHeld(t, filepath.Join(dir, "posix.db"), "POSIX READ "+p+" 0-9", "POSIX WRITE "+p+" 20-29", "POSIX WRITE "+p+" 100-EOF")
	wantHeld(t, filepath.Join(dir, "ofd.db"), "OFDLCK WRITE -1 5-14")
	wantHeld(t, filepath.Join(dir, "flock.db"), "FLOCK WRITE "+p+" 0-EOF")
	wantHeld(t, filepath.Join(dir, "flocksh.db"), "FLOCK READ "+p+" 0-EOF")
	for _, c := range []struct {
		start, n int64
		typ      int16
	}{{0, 10, unix.F_RDLCK}, {25, 1, unix.F_WRLCK}, {150, 1, unix.F_WRLCK}, {10, 10, unix.F_UNLCK}} {
		typ, who := conflict(t, filepath.Join(dir, "posix.db"), false, c.start, c.n)
		if typ != c.typ || (typ != unix.F_UNLCK && int(who) != pid) {
			t.Errorf("posix.db %d+%d: F_GETLK finds type %d of pid %d, want type %d of %d", c.start, c.n, typ, who, c.typ, pid)
		}
	}
	if typ, who := conflict(t, filepath.Join(dir, "ofd.db"), true, 0, 0); typ != unix.F_WRLCK || who != -1 {
		t.Errorf("ofd.db: F_OFD_GETLK finds type %d of pid %d, want the OFD write lock", typ, who)
	}
	if flockFree(t, filepath.Join(dir, "flock.db"), unix.LOCK_SH) {
		t.Error("flock.db: an outside LOCK_SH is granted: the LOCK_EX is gone")
	}
	if !flockFree(t, filepath.Join(dir, "flocksh.db"), unix.LOCK_SH) || flockFree(t, filepath.Join(dir, "flocksh.db"), unix.LOCK_EX) {
		t.Error("flocksh.db: an outside LOCK_SH should be granted and a LOCK_EX not")
	}
}

// TestRoundTripFileLocks: POSIX read and write ranges, an OFD lock and two flocks, dumped
// with --file-locks and restored with it, are held again by the restored process: /proc/locks
// shows them for its pid, an outside F_GETLK meets them, and the program finds them in
// its own fdinfo. Restored without --file-locks, the set is refused.
func TestRoundTripFileLocks(t *testing.T) {
	requireRoot(t)
	bin := testproc.Build(t, "testdata/locks.c")
	p := testproc.Launch(t, bin, testproc.Options{Ready: "ready pid="}, "mixed")
	checkMixedLocks(t, p.Dir, p.Pid)
	dir := dumpLocked(t, p.Pid)
	if n := len(savedLocks(t, dir)); n != 6 {
		t.Fatalf("filelocks.img has %d locks, want 6: %v", n, savedLocks(t, dir))
	}
	wantHeld(t, filepath.Join(p.Dir, "posix.db"))
	off := savedPos(t, dir, p.Log)
	err := Restore(context.Background(), Options{Detach: true}, openSet(t, dir))
	if err == nil || !strings.Contains(err.Error(), "restore them with --file-locks") {
		t.Fatalf("restore without FileLocks: %v, want a refusal", err)
	}
	if testproc.Exists(p.Pid) {
		t.Fatal("the refused restore created the process")
	}
	pids := restoreSet(t, dir, Options{FileLocks: true})
	checkMixedLocks(t, p.Dir, pids[0])
	checkSelf(t, pids[0], p.Log, off)
}

// TestRoundTripFileLocksTree: an flock its locker closed, held only through the fd its
// child inherited, comes back held by the child alone (the parent's fd of the same number
// does not exist); an OFD lock shared by parent and child is one lock of their shared
// description again; the child's POSIX lock is the child's.
func TestRoundTripFileLocksTree(t *testing.T) {
	requireRoot(t)
	bin := testproc.Build(t, "testdata/locks.c")
	p := testproc.Launch(t, bin, testproc.Options{Ready: "ready pid="}, "tree")
	testproc.WaitFor(t, 5*time.Second, "the child", func() bool {
		return len(testproc.Descendants(p.Pid)) == 2 && strings.Count(p.ReadLog(t), "ready pid=") == 2
	})
	child := testproc.Descendants(p.Pid)[1]
	dir := dumpLocked(t, p.Pid)
	saved := savedLocks(t, dir)
	if len(saved) != 3 {
		t.Fatalf("filelocks.img: %v, want 3 locks", saved)
	}
	off := savedPos(t, dir, p.Log)
	pids := restoreSet(t, dir, Options{FileLocks: true})
	c := strconv.Itoa(child)
	wantHeld(t, filepath.Join(p.Dir, "shared.db"), "FLOCK WRITE "+c+" 0-EOF")
	wantHeld(t, filepath.Join(p.Dir, "ofdshared.db"), "OFDLCK WRITE -1 0-EOF")
	wantHeld(t, filepath.Join(p.Dir, "child.db"), "POSIX WRITE "+c+" 0-EOF")
	if flockFree(t, filepath.Join(p.Dir, "shared.db"), unix.LOCK_SH) {
		t.Error("shared.db: the flock is not held")
	}
	for _, pid := range pids {
		if err := unix.Kill(pid, unix.SIGUSR1); err != nil {
			t.Fatal(err)
		}
	}
	testproc.WaitFor(t, 5*time.Second, "both checks", func() bool {
		out := testproc.LogAfter(t, p.Log, off)
		return strings.Count(out, "ok\n")+strings.Count(out, "FAIL") >= 2
	})
	if out := testproc.LogAfter(t, p.Log, off); strings.Contains(out, "FAIL") {
		t.Fatalf("after the restore: %s", out)
	}
}

// TestRoundTripPendingLock: a process waiting for a lock another process holds (F_SETLKW,
// flock) holds nothing: the freeze interrupts the wait, the dump saves no lock, and the
// restored process asks again, waits, and gets the lock once its holder lets go.
func TestRoundTripPendingLock(t *testing.T) {
	requireRoot(t)
	bin := testproc.Build(t, "testdata/locks.c")
	for _, mode := range []string{"pending", "flockwait"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			holder, err := os.OpenFile(filepath.Join(dir, "pending.db"), os.O_RDWR|os.O_CREATE, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			defer holder.Close()
			if mode == "pending" {
				l := unix.Flock_t{Type: unix.F_WRLCK}
				err = unix.FcntlFlock(holder.Fd(), unix.F_OFD_SETLK, &l)
			} else {
				err = unix.Flock(int(holder.Fd()), unix.LOCK_EX)
			}
			if err != nil {
				t.Fatal(err)
			}
			p := testproc.Launch(t, bin, testproc.Options{Dir: dir, Ready: "waiting pid="}, mode)
			waiting := func(pid int) bool {
				all, _ := procfs.ReadLocks()
				for _, l := range all {
					if l.Blocked && l.Pid == pid {
						return true
					}
				}
				return false
			}
			testproc.WaitFor(t, 5*time.Second, "the request to wait", func() bool { return waiting(p.Pid) })
			setDir := dumpLocked(t, p.Pid)
			if _, err := os.Stat(filepath.Join(setDir, "filelocks.img")); err == nil {
				t.Fatalf("a waiting request was saved as a lock: %v", savedLocks(t, setDir))
			}
			pids := restoreSet(t, setDir, Options{FileLocks: true})
			testproc.WaitFor(t, 5*time.Second, "the restored request to wait", func() bool { return waiting(pids[0]) })
			if strings.Contains(p.ReadLog(t), "got") {
				t.Fatal("the restored process got a lock that is held")
			}
			holder.Close()
			p.WaitLog(t, "ready pid=", 5*time.Second)
		})
	}
}

// TestRoundTripLeases: a read lease and a write lease (zdtm's file_lease00) survive a dump
// that leaves the tree running (the dump never opens the write-leased file: an open would
// break the lease) and come back with the restored process: /proc/locks shows them for its
// pid, and F_GETLEASE in the program finds both.
func TestRoundTripLeases(t *testing.T) {
	requireRoot(t)
	bin := testproc.Build(t, "testdata/locks.c")
	p := testproc.Launch(t, bin, testproc.Options{Ready: "ready pid="}, "lease")
	w, err := imgset.Create(filepath.Join(t.TempDir(), "running"), imgset.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := dump.Dump(context.Background(), dump.Options{Pid: p.Pid, LeaveRunning: true, FileLocks: true}, w); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the dump took %v: it waited for a lease break", d)
	}
	checkSelf(t, p.Pid, p.Log, int64(len(p.ReadLog(t))))
	dir := dumpLocked(t, p.Pid)
	if n := len(savedLocks(t, dir)); n != 2 {
		t.Fatalf("filelocks.img has %d locks, want 2", n)
	}
	off := savedPos(t, dir, p.Log)
	pids := restoreSet(t, dir, Options{FileLocks: true})
	pid := strconv.Itoa(pids[0])
	wantHeld(t, filepath.Join(p.Dir, "lease.rd"), "LEASE READ "+pid+" 0-EOF")
	wantHeld(t, filepath.Join(p.Dir, "lease.wr"), "LEASE WRITE "+pid+" 0-EOF")
	checkSelf(t, pids[0], p.Log, off)
}

// TestCRIUInteropFileLocks: testdata/locks.c's locks (POSIX ranges, OFD, flocks; the
// parent and child of the tree mode; leases: only the read lease for CRIU's dump, which
// breaks a write lease), dumped with --file-locks by one tool and restored with
// --file-locks by the other, both ways, are held again by the same processes, and each
// program finds its own in its fdinfo.
func TestCRIUInteropFileLocks(t *testing.T) {
	criu := criuBin(t)
	bin := testproc.Build(t, "testdata/locks.c")
	for _, mode := range []string{"mixed", "tree", "lease"} {
		for _, way := range []string{"imgtool dump, CRIU restore", "CRIU dump, imgtool restore"} {
			t.Run(mode+"/"+way, func(t *testing.T) {
				args := []string{mode}
				if mode == "lease" && strings.HasPrefix(way, "CRIU") {
					// CRIU 4.2's dump opens a write-leased file (looking for a build id),
					// which breaks the lease: it waits lease-break-time (45 s) first.
					args = append(args, "read-only")
				}
				p := testproc.Launch(t, bin, testproc.Options{Ready: "ready pid="}, args...)
				if mode == "tree" {
					testproc.WaitFor(t, 5*time.Second, "the child", func() bool {
						return len(testproc.Descendants(p.Pid)) == 2 && strings.Count(p.ReadLog(t), "ready pid=") == 2
					})
				}
				tree := testproc.Descendants(p.Pid)
				var dir string
				if strings.HasPrefix(way, "imgtool") {
					dir = dumpLocked(t, p.Pid)
				} else {
					dir = t.TempDir()
					runCRIU(t, criu, dir, "dump.log", "dump", "-t", strconv.Itoa(p.Pid), "--file-locks")
					testproc.WaitGone(t, tree)
				}
				if len(savedLocks(t, dir)) == 0 {
					t.Fatal("no lock in filelocks.img")
				}
				off := savedPos(t, dir, p.Log)
				if strings.HasPrefix(way, "imgtool") {
					criuRestore(t, criu, dir, tree, "--file-locks")
				} else {
					restoreSet(t, dir, Options{FileLocks: true})
				}
				switch mode {
				case "mixed":
					checkMixedLocks(t, p.Dir, p.Pid)
				case "tree":
					c := strconv.Itoa(tree[1])
					wantHeld(t, filepath.Join(p.Dir, "ofdshared.db"), "OFDLCK WRITE -1 0-EOF")
					wantHeld(t, filepath.Join(p.Dir, "child.db"), "POSIX WRITE "+c+" 0-EOF")
					if flockFree(t, filepath.Join(p.Dir, "shared.db"), unix.LOCK_SH) {
						t.Error("shared.db: the flock is not held")
					}
				case "lease":
					pid := strconv.Itoa(p.Pid)
					wantHeld(t, filepath.Join(p.Dir, "lease.rd"), "LEASE READ "+pid+" 0-EOF")
					if len(args) == 1 {
						wantHeld(t, filepath.Join(p.Dir, "lease.wr"), "LEASE WRITE "+pid+" 0-EOF")
					}
				}
				for _, pid := range tree {
					if err := unix.Kill(pid, unix.SIGUSR1); err != nil {
						t.Fatal(err)
					}
				}
				testproc.WaitFor(t, 5*time.Second, "the programs' checks", func() bool {
					out := testproc.LogAfter(t, p.Log, off)
					return strings.Count(out, "ok\n")+strings.Count(out, "FAIL") >= len(tree)
				})
				if out := testproc.LogAfter(t, p.Log, off); strings.Contains(out, "FAIL") {
					t.Fatalf("after the restore: %s", out)
				}
			})
		}
	}
}

// withLocks rewrites the filelocks.img of the set in dir with locks.
func withLocks(t *testing.T, dir string, locks ...*file_lock.FileLockEntry) {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, "filelocks.img"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, err := image.NewWriter(f, image.KindByName("FILE_LOCKS"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range locks {
		if err := w.WriteEntry(l); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestRestoreRefusesLocks: a saved lock restore cannot take back is refused before any
// process exists, naming it: one of a process or fd the set does not have, of an unknown
// kind, a mandatory flock, a lease being broken, a write lock through a read-only fd, and
// one another process holds now.
func TestRestoreRefusesLocks(t *testing.T) {
	requireRoot(t)
	bin := testproc.Build(t, "testdata/locks.c")
	p := testproc.Launch(t, bin, testproc.Options{Ready: "ready pid="}, "mixed")
	dir := dumpLocked(t, p.Pid)
	saved := savedLocks(t, dir)
	pid := int32(p.Pid)
	lock := func(flag, typ uint32, pid, fd int32, start, n int64) *file_lock.FileLockEntry {
		return &file_lock.FileLockEntry{Flag: proto.Uint32(flag), Type: proto.Uint32(typ), Pid: proto.Int32(pid),
			Fd: proto.Int32(fd), Start: proto.Int64(start), Len: proto.Int64(n)}
	}
	posixDB := filepath.Join(p.Dir, "posix.db")
	for _, c := range []struct {
		name string
		lock *file_lock.FileLockEntry
		want string
	}{
		{"no such process", lock(image.FileLockPosix, unix.F_WRLCK, pid+100000, 3, 0, 0), "no such live process in the set"},
		{"no such fd", lock(image.FileLockPosix, unix.F_WRLCK, pid, 99, 0, 0), "the process has no such fd"},
		{"unknown kind", lock(16, unix.F_WRLCK, pid, 3, 0, 0), "unknown kind 16"},
		{"mandatory flock", lock(image.FileLockFlock, image.FileLockMand|64, pid, 5, 0, 0), "mandatory flocks"},
		{"breaking lease", lock(image.FileLockLease, unix.F_RDLCK|image.FileLockLeaseBreaking, pid, 3, 0, 0), "a lease being broken"},
		{"bad range", lock(image.FileLockOFD, unix.F_WRLCK, pid, 4, -1, 0), "bad range"},
		{"stdin is read-only", lock(image.FileLockPosix, unix.F_WRLCK, pid, 0, 0, 0), "access mode"},
	} {
		t.Run(c.name, func(t *testing.T) {
			withLocks(t, dir, c.lock)
			err := Restore(context.Background(), Options{Detach: true, FileLocks: true}, openSet(t, dir))
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "filelocks.img: ") {
				t.Fatalf("restore: %v, want a refusal saying %q", err, c.want)
			}
			if testproc.Exists(p.Pid) {
				t.Fatal("the refused restore created the process")
			}
		})
	}
	t.Run("held now", func(t *testing.T) {
		withLocks(t, dir, saved...)
		f, err := os.OpenFile(posixDB, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		l := unix.Flock_t{Type: unix.F_RDLCK, Start: 25, Len: 1}
		if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &l); err != nil {
			t.Fatal(err)
		}
		err = Restore(context.Background(), Options{Detach: true, FileLocks: true}, openSet(t, dir))
		if err == nil || !strings.Contains(err.Error(), "POSIX WRITE lock 20-29 of pid") ||
			!strings.Contains(err.Error(), "an OFD lock holds a conflicting lock on "+posixDB+" now (OFDLCK READ 25-25)") {
			t.Fatalf("restore: %v, want a refusal naming the lock held now", err)
		}
		if testproc.Exists(p.Pid) {
			t.Fatal("the refused restore created the process")
		}
	})
}
