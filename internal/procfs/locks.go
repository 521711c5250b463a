package procfs

import (
	"fmt"
	"strconv"
	"strings"
)

// Lock is one file lock as the kernel lists it (lock_get_status): a line of /proc/locks,
// or the text after "lock:" in /proc/PID/fdinfo/FD, which lists the locks held through
// that fd (the POSIX locks of the process, the OFD locks, flocks and leases of the open
// file description):
//
//	1: POSIX  ADVISORY  WRITE 1234 08:01:5678 0 EOF
//	2: -> FLOCK  ADVISORY  WRITE 1235 08:01:5679 0 EOF
type Lock struct {
	ID      int64
	Blocked bool   // a request waiting for the lock ("->"), not a lock
	Class   string // POSIX, OFDLCK, FLOCK, LEASE, DELEG, ACCESS, ...
	Mode    string // ADVISORY, MSNFS; for leases ACTIVE, BREAKING or BREAKER
	Type    string // READ, WRITE or UNLCK (a lease's target type)
	Pid     int    // who took it (-1 for OFD locks, 0 when not visible here)
	Dev     string // the file system's device, "MAJ:MIN" in hex as the kernel prints it
	Ino     uint64
	Start   int64
	End     int64 // the last byte, or -1 for EOF (to the end of any file)
}

// File names the locked file as /proc/locks does: "08:01:5678".
func (l Lock) File() string { return l.Dev + ":" + strconv.FormatUint(l.Ino, 10) }

// Range is the byte range: "0-EOF", "10-29".
func (l Lock) Range() string {
	if l.End < 0 {
		return fmt.Sprintf("%d-EOF", l.Start)
	}
	return fmt.Sprintf("%d-%d", l.Start, l.End)
}

// ParseLock parses one lock line.
func ParseLock(s string) (Lock, error) {
	f := strings.Fields(s)
	var l Lock
	if len(f) > 1 && f[1] == "->" {
		l.Blocked = true
		f = append(f[:1], f[2:]...)
	}
	if len(f) != 8 || !strings.HasSuffix(f[0], ":") {
		return l, fmt.Errorf("lock line %q: %d fields, want 8", s, len(f))
	}
	var err error
	if l.ID, err = strconv.ParseInt(strings.TrimSuffix(f[0], ":"), 10, 64); err != nil {
		return l, fmt.Errorf("lock line %q: id: %w", s, err)
	}
	l.Class, l.Mode, l.Type = f[1], f[2], f[3]
	if l.Pid, err = strconv.Atoi(f[4]); err != nil {
		return l, fmt.Errorf("lock line %q: pid: %w", s, err)
	}
	i := strings.LastIndexByte(f[5], ':')
	if i < 0 {
		return l, fmt.Errorf("lock line %q: no inode in %q", s, f[5])
	}
	l.Dev = f[5][:i]
	if l.Ino, err = strconv.ParseUint(f[5][i+1:], 10, 64); err != nil {
		return l, fmt.Errorf("lock line %q: inode: %w", s, err)
	}
	if l.Start, err = strconv.ParseInt(f[6], 10, 64); err != nil {
		return l, fmt.Errorf("lock line %q: start: %w", s, err)
	}
	l.End = -1
	if f[7] != "EOF" {
		if l.End, err = strconv.ParseInt(f[7], 10, 64); err != nil || l.End < l.Start {
			return l, fmt.Errorf("lock line %q: bad end %q", s, f[7])
		}
	}
	return l, nil
}

// ReadLocks reads /proc/locks: every lock of the system and every request waiting for one.
func ReadLocks() ([]Lock, error) {
	b, err := ReadFile("/proc/locks")
	if err != nil {
		return nil, err
	}
	var out []Lock
	for _, line := range strings.Split(string(b), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		l, err := ParseLock(line)
		if err != nil {
			return nil, fmt.Errorf("/proc/locks: %w", err)
		}
		out = append(out, l)
	}
	return out, nil
}
