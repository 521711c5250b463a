package procfs

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseLock(t *testing.T) {
	for _, c := range []struct {
		line string
		want Lock
	}{
		{"1: POSIX  ADVISORY  WRITE 1234 08:01:5678 0 EOF",
			Lock{ID: 1, Class: "POSIX", Mode: "ADVISORY", Type: "WRITE", Pid: 1234, Dev: "08:01", Ino: 5678, End: -1}},
		{"12: -> OFDLCK ADVISORY  READ -1 00:2a:9 10 29",
			Lock{ID: 12, Blocked: true, Class: "OFDLCK", Mode: "ADVISORY", Type: "READ", Pid: -1, Dev: "00:2a", Ino: 9, Start: 10, End: 29}},
		{"3: LEASE  ACTIVE    READ 77 fd:01:123 0 EOF",
			Lock{ID: 3, Class: "LEASE", Mode: "ACTIVE", Type: "READ", Pid: 77, Dev: "fd:01", Ino: 123, End: -1}},
	} {
		got, err := ParseLock(c.line)
		if err != nil || got != c.want {
			t.Errorf("%q: %+v %v, want %+v", c.line, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "1: POSIX ADVISORY WRITE 1 08:01:5 0", "x: POSIX ADVISORY WRITE 1 08:01:5 0 EOF",
		"1: POSIX ADVISORY WRITE 1 0801 0 EOF", "1: POSIX ADVISORY WRITE 1 08:01:5 9 3"} {
		if l, err := ParseLock(bad); err == nil {
			t.Errorf("%q: parsed as %+v", bad, l)
		}
	}
}

// TestReadLocks takes a lock and finds it in /proc/locks and in its fd's fdinfo.
func TestReadLocks(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "locked"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	lk := unix.Flock_t{Type: unix.F_WRLCK, Start: 5, Len: 10}
	if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	want := func(l Lock) bool {
		return l.Class == "OFDLCK" && l.Type == "WRITE" && l.Ino == st.Ino && l.Start == 5 && l.End == 14 && !l.Blocked
	}
	all, err := ReadLocks()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, l := range all {
		found = found || want(l)
	}
	if !found {
		t.Errorf("/proc/locks has no OFD write lock on inode %d: %+v", st.Ino, all)
	}
	fi, err := ReadFdinfo(os.Getpid(), int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	if len(fi.Locks) != 1 {
		t.Fatalf("fdinfo lock lines %q", fi.Locks)
	}
	l, err := ParseLock(fi.Locks[0])
	if err != nil || !want(l) || l.File() != l.Dev+":"+strconv.FormatUint(st.Ino, 10) || l.Range() != "5-14" {
		t.Errorf("fdinfo lock %+v %v", l, err)
	}
}
