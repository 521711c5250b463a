package restore

import (
	"errors"
	"fmt"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	file_lock "github.com/checkpoint-restore/go-criu/v8/crit/images/file-lock"
	"golang.org/x/sys/unix"

	"github.com/imgtool/imgtool/image"
	"github.com/imgtool/imgtool/internal/procfs"
)

// File locks (filelocks.img, CRIU's file-lock.c): each file_lock_entry is a lock that
// process pid held through its fd: a POSIX lock (F_SETLK; the process owns it), an OFD lock
// (F_OFD_SETLK) or a flock (both owned by the open file description), or a lease
// (F_SETLEASE, the description's too). Each is taken back by that process, injected on that
// fd with the saved range and type, once its fds are in place and the slots it inherited
// are closed (closing any fd of a file drops the POSIX locks the process holds on it), so
// before the tree runs. The calls do not wait: a lock another process holds meanwhile fails
// the restore, naming it, where CRIU's F_SETLKW and flock would wait for it.
//
// As with criu restore, locks are only taken with Options.FileLocks (--file-locks); a set
// that holds some is refused without it, where CRIU would drop them silently. Refused
// before any process exists: a lock of a process or fd the set does not have, of an
// unknown kind or type, a mandatory flock (LOCK_MAND), a lease being broken (CRIU's
// LEASE_BREAKING), a POSIX or OFD lock through an fd opened without the access its type
// needs, a write lease on a file the set maps (mapping it would break the lease), and a
// lock that a process outside the tree holds now and that conflicts (read from
// /proc/locks; a file system whose stat device differs from its superblock's, such as a
// btrfs subvolume, is not matched, and the lock then fails when it is taken).

// The fcntl commands that take locks back, and the image they come from (image has the
// kinds and type bits of file_lock_entry).
const (
	fOFDSetlk   = 37   // F_OFD_SETLK
	fSetlease   = 1024 // F_SETLEASE
	fileLockImg = "filelocks.img"
)

var lockKindNames = map[uint32]string{image.FileLockPosix: "POSIX", image.FileLockFlock: "FLOCK", image.FileLockOFD: "OFD", image.FileLockLease: "LEASE"}

// describeEntry names a saved lock: "POSIX WRITE lock 0-3 of pid 12 fd 3".
func describeEntry(e *file_lock.FileLockEntry) string {
	typ := "READ"
	if e.GetType()&^image.FileLockLeaseBreaking == unix.F_WRLCK {
		typ = "WRITE"
	}
	s := lockKindNames[e.GetFlag()] + " " + typ + " lock"
	if e.GetFlag() == image.FileLockPosix || e.GetFlag() == image.FileLockOFD {
		if e.GetLen() == 0 {
			s += fmt.Sprintf(" %d-EOF", e.GetStart())
		} else {
			s += fmt.Sprintf(" %d-%d", e.GetStart(), e.GetStart()+e.GetLen()-1)
		}
	}
	return s + fmt.Sprintf(" of pid %d fd %d", e.GetPid(), e.GetFd())
}

// checkLocks reads filelocks.img into pl.locks and checks, before any process exists,
// that every lock can be taken back (see above). take is Options.FileLocks.
func checkLocks(pl *plan, take bool) error {
	if !pl.src.has(fileLockImg) {
		return nil
	}
	locks, _, err := readEntries[file_lock.FileLockEntry](pl.src, fileLockImg)
	if err != nil || len(locks) == 0 {
		return err
	}
	if !take {
		return fmt.Errorf("the set holds %d file locks (%s, the first: %s): restore them with --file-locks, as criu restore needs; "+
			"restored without them, other writers would get in", len(locks), fileLockImg, describeEntry(locks[0]))
	}
	live := map[int]*procPlan{}
	for _, p := range pl.procs {
		live[p.pid] = p
	}
	all, err := procfs.ReadLocks()
	if err != nil {
		return err
	}
	for _, e := range locks {
		if err := checkLock(pl, live, all, e); err != nil {
			return fmt.Errorf("%s: %s: %w", fileLockImg, describeEntry(e), err)
		}
	}
	pl.locks = locks
	return nil
}

// checkLock checks one saved lock.
func checkLock(pl *plan, live map[int]*procPlan, all []procfs.Lock, e *file_lock.FileLockEntry) error {
	p := live[int(e.GetPid())]
	if p == nil {
		return errors.New("no such live process in the set")
	}
	var fd *fdinfo.FdinfoEntry
	for _, f := range p.fds {
		if f.GetFd() == uint32(e.GetFd()) && e.GetFd() >= 0 {
			fd = f
		}
	}
	if fd == nil {
		return errors.New("the process has no such fd")
	}
	fe := pl.files[fd.GetId()]
	if fe == nil || fdKinds[fe.GetType()] == nil {
		return fmt.Errorf("file id %d cannot be restored", fd.GetId())
	}
	flags := fdKinds[fe.GetType()].flags(pl, fe)
	typ := e.GetType()
	switch e.GetFlag() {
	case image.FileLockPosix, image.FileLockOFD:
		switch {
		case typ != unix.F_RDLCK && typ != unix.F_WRLCK:
			return fmt.Errorf("unknown type %d", typ)
		case e.GetStart() < 0 || e.GetLen() < 0:
			return errors.New("bad range")
		case flags&unix.O_PATH != 0 || (typ == unix.F_RDLCK && flags&unix.O_ACCMODE == unix.O_WRONLY) ||
			(typ == unix.F_WRLCK && flags&unix.O_ACCMODE == unix.O_RDONLY):
			return fmt.Errorf("the fd's access mode (flags %#o) does not allow it", flags)
		}
	case image.FileLockFlock:
		if typ&image.FileLockMand != 0 {
			return errors.New("mandatory flocks (LOCK_MAND) are no longer granted by Linux")
		}
		if typ != unix.F_RDLCK && typ != unix.F_WRLCK {
			return fmt.Errorf("unknown type %d", typ)
		}
	case image.FileLockLease:
		if typ&image.FileLockLeaseBreaking != 0 {
			return errors.New("a lease being broken is not restored by imgtool")
		}
		if typ != unix.F_RDLCK && typ != unix.F_WRLCK {
			return fmt.Errorf("unknown type %d", typ)
		}
		if fe.GetType() != fdinfo.FdTypes_REG || fe.Reg == nil {
			return fmt.Errorf("a lease on a %v file", fe.GetType())
		}
		if typ == unix.F_WRLCK {
			if who := mappedBy(pl, fe.Reg.GetName()); who != 0 {
				return fmt.Errorf("pid %d maps the file: mapping it would break the write lease", who)
			}
		}
		return nil
	default:
		return fmt.Errorf("unknown kind %d", e.GetFlag())
	}
	if fe.GetType() != fdinfo.FdTypes_REG || fe.Reg == nil {
		return nil
	}
	return checkHeldNow(all, e, fe.Reg.GetName())
}

// mappedBy returns a process of the set that maps the regular file name (or runs it), or 0.
func mappedBy(pl *plan, name string) int {
	for _, p := range pl.procs {
		if fe := pl.files[p.mm.GetExeFileId()]; fe != nil && fe.Reg.GetName() == name {
			return p.pid
		}
		for _, v := range p.mm.Vmas {
			if fe := pl.files[uint32(v.GetShmid())]; fe != nil && fe.GetType() == fdinfo.FdTypes_REG && fe.Reg.GetName() == name {
				return p.pid
			}
		}
	}
	return 0
}

// checkHeldNow refuses a saved lock on the file name that conflicts with one held now
// (/proc/locks): flocks with flocks, POSIX and OFD locks with each other over a common
// byte, when either is a write lock.
func checkHeldNow(all []procfs.Lock, e *file_lock.FileLockEntry, name string) error {
	var st unix.Stat_t
	if err := unix.Stat(name, &st); err != nil {
		return nil // checkRegFile reports it
	}
	file := fmt.Sprintf("%02x:%02x:%d", unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)
	start, end := e.GetStart(), int64(-1)
	if e.GetLen() > 0 {
		end = e.GetStart() + e.GetLen() - 1
	}
	for _, l := range all {
		if l.Blocked || l.File() != file || (e.GetType() == unix.F_RDLCK && l.Type == "READ") {
			continue
		}
		switch {
		case e.GetFlag() == image.FileLockFlock && l.Class == "FLOCK":
		case e.GetFlag() != image.FileLockFlock && (l.Class == "POSIX" || l.Class == "OFDLCK") &&
			(end < 0 || l.Start <= end) && (l.End < 0 || start <= l.End):
		default:
			continue
		}
		who := fmt.Sprintf("process %d", l.Pid)
		if l.Class == "OFDLCK" {
			who = "an OFD lock"
		}
		return fmt.Errorf("%s holds a conflicting lock on %s now (%s %s %s)", who, name, l.Class, l.Type, l.Range())
	}
	return nil
}

// takeLocks takes back the locks p held, on its fds (see above).
func (r *restorer) takeLocks(p *process) error {
	t := p.leader()
	for _, e := range r.pl.locks {
		if int(e.GetPid()) != p.pid {
			continue
		}
		fd := uint64(e.GetFd())
		var err error
		switch e.GetFlag() {
		case image.FileLockPosix, image.FileLockOFD:
			cmd := uint64(unix.F_SETLK)
			if e.GetFlag() == image.FileLockOFD {
				cmd = fOFDSetlk
			}
			// struct flock: l_type, l_whence (SEEK_SET), l_start, l_len, l_pid (0)
			if err := p.poke(p.scratch+scratchArgs, pack(int16(e.GetType()), int16(0), int32(0), e.GetStart(), e.GetLen(), int64(0))); err != nil {
				return err
			}
			_, err = t.syscall(unix.SYS_FCNTL, fd, cmd, p.scratch+scratchArgs)
		case image.FileLockFlock:
			how := uint64(unix.LOCK_SH | unix.LOCK_NB)
			if e.GetType() == unix.F_WRLCK {
				how = unix.LOCK_EX | unix.LOCK_NB
			}
			_, err = t.syscall(unix.SYS_FLOCK, fd, how)
		case image.FileLockLease:
			_, err = t.syscall(unix.SYS_FCNTL, fd, fSetlease, uint64(e.GetType()))
		}
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) {
			return fmt.Errorf("taking back the %s: another process holds a conflicting lock now", describeEntry(e))
		}
		if err != nil {
			return fmt.Errorf("taking back the %s: %w", describeEntry(e), err)
		}
	}
	return nil
}
