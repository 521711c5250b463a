package dump

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	file_lock "github.com/checkpoint-restore/go-criu/v8/crit/images/file-lock"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/imgtool/imgtool/image"
)

// TestDumpFileLocks: with FileLocks the locks of testdata/refusals.c's locks mode are
// dumped into filelocks.img as CRIU writes them: kind, type, the holder's pid and fd, start
// and length (0 to the end of the file, and for flocks).
func TestDumpFileLocks(t *testing.T) {
	tg := launch(t, "refusals", "locks")
	s := newDirSink(t)
	if err := Dump(context.Background(), Options{Pid: tg.Pid, LeaveRunning: true, FileLocks: true}, s); err != nil {
		t.Fatal(err)
	}
	img := readImg(t, s.dir, "filelocks.img")
	if img.Kind.Name != "FILE_LOCKS" {
		t.Fatalf("filelocks.img is a %s image", img.Kind.Name)
	}
	pid := int32(tg.Pid)
	want := []*file_lock.FileLockEntry{ // fds 3, 4 and 5: posix.db, ofd.db, flock.db
		{Flag: proto.Uint32(image.FileLockPosix), Type: proto.Uint32(lockWrite), Pid: proto.Int32(pid), Fd: proto.Int32(3), Start: proto.Int64(0), Len: proto.Int64(4)},
		{Flag: proto.Uint32(image.FileLockOFD), Type: proto.Uint32(lockRead), Pid: proto.Int32(pid), Fd: proto.Int32(4), Start: proto.Int64(2), Len: proto.Int64(2)},
		{Flag: proto.Uint32(image.FileLockFlock), Type: proto.Uint32(lockWrite), Pid: proto.Int32(pid), Fd: proto.Int32(5), Start: proto.Int64(0), Len: proto.Int64(0)},
	}
	if len(img.Entries) != len(want) {
		t.Fatalf("%d entries, want %d", len(img.Entries), len(want))
	}
	for i, e := range img.Entries {
		if !proto.Equal(e.Msg, want[i]) {
			t.Errorf("entry %d: %v, want %v", i, e.Msg, want[i])
		}
	}
	// Left running, the process still holds them.
	var l unix.Flock_t
	l.Type, l.Len = unix.F_WRLCK, 1
	f, err := os.Open(filepath.Join(tg.Dir, "posix.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.FcntlFlock(f.Fd(), unix.F_GETLK, &l); err != nil || l.Pid != pid {
		t.Errorf("after the dump, F_GETLK: %v, pid %d holds it, want %d", err, l.Pid, pid)
	}
}

// TestDumpNoLocksNoImage: a tree without locks gets no filelocks.img (CRIU writes none).
func TestDumpNoLocksNoImage(t *testing.T) {
	tg := launch(t, "refusals", "opath")
	s := newDirSink(t)
	if err := Dump(context.Background(), Options{Pid: tg.Pid, LeaveRunning: true, FileLocks: true}, s); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(s.dir, "filelocks.img")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("filelocks.img: %v, want none", err)
	}
}

// TestRefuseLocksDumpCannotSave: even with FileLocks, locks held through mappings only
// (an flock and an OFD lock whose fds were closed), a lease being broken and a write lease
// on a file the process maps are refused, each named, before the tree is touched.
func TestRefuseLocksDumpCannotSave(t *testing.T) {
	for _, c := range []struct {
		mode string
		want []string
	}{
		{"maplock", []string{"flock.map", "a lock (FLOCK WRITE) on the file, taken by process",
			"is held through no fd of the tree, maybe through this mapping", "ofd.map",
			"a lock (OFDLCK READ 0-EOF) on the file (/proc names no holder for OFD locks) is held through no fd"}},
		{"breaking", []string{"lease.wr: holds a lock (LEASE BREAKING READ): a lease being broken"}},
		{"maplease", []string{"lease.map: holds a lock (LEASE WRITE): a write lease on a file process"}},
	} {
		t.Run(c.mode, func(t *testing.T) {
			if c.mode == "breaking" {
				// Start the break as soon as the lease is there: another process's open.
				testproc := launch(t, "locks", c.mode)
				f, err := os.OpenFile(filepath.Join(testproc.Dir, "lease.wr"), os.O_RDONLY|unix.O_NONBLOCK, 0)
				if err == nil {
					f.Close()
					t.Fatal("the open did not meet the lease")
				}
				all := refusedPid(t, testproc.Pid)
				checkSays(t, all, c.want)
				return
			}
			checkSays(t, refusedWith(t, Options{FileLocks: true}, "locks", c.mode), c.want)
		})
	}
}

// refusedPid dumps pid with FileLocks and returns the refusals.
func refusedPid(t *testing.T, pid int) Refusals {
	t.Helper()
	err := Dump(context.Background(), Options{Pid: pid, FileLocks: true}, newDirSink(t))
	var all Refusals
	var one *RefusedError
	switch {
	case errors.As(err, &all):
	case errors.As(err, &one):
		all = Refusals{one}
	default:
		t.Fatalf("err = %v, want a refusal", err)
	}
	return all
}

// checkSays checks that the refusals say each of want.
func checkSays(t *testing.T, all Refusals, want []string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(all.Error(), w) {
			t.Errorf("%q does not say %q", all.Error(), w)
		}
	}
}
