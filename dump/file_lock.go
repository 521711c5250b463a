package dump

import (
	"fmt"
	"strings"

	file_lock "github.com/checkpoint-restore/go-criu/v8/crit/images/file-lock"
	"google.golang.org/protobuf/proto"

	"github.com/imgtool/imgtool/image"
	"github.com/imgtool/imgtool/internal/procfs"
)

// File locks, as CRIU's file-lock.c with --file-locks: every lock held by the tree is
// dumped into filelocks.img (file_lock_entry: kind, type, pid, fd, start, len), found as
// CRIU finds them on kernels with fdinfo locks, through the "lock:" lines of
// /proc/PID/fdinfo/FD. Those list the POSIX locks of the process and the OFD locks, flocks
// and leases of the open file description, so a description shared by several fds or
// processes lists its locks on each: each lock is saved once, POSIX locks for their process
// (their owner), the others for their description (through the fd of the process that took
// the lock when it still has one, else the first fd of the tree to have it, as CRIU does).
// Restore takes each lock back in that process, on that fd, before the tree runs.
//
// Without Options.FileLocks (--file-locks) a held lock refuses the dump, naming the
// process, the fd and the lock: dumped without it, the restored program would write while
// another writer holds the file (SQLite then loses rows). With it, these are refused all
// the same: a lease being broken (CRIU restores the break; imgtool does not), a mandatory
// flock or a lock of a class imgtool does not know, a write lease on a file the tree maps
// or on a memfd (reading it for the dump would open it, which breaks the lease), and a
// lock the tree holds through no fd at all: /proc/locks shows it, for a process of the
// tree or as an OFD lock (whose owner it does not name), on a file the tree maps, so it
// may be held through the mapping, which a restore could not take again. A request waiting
// for a lock is not a lock: the freeze interrupts the wait, and the restored process makes
// its (restarted) call again, as with CRIU.

// The lock types of file_lock_entry.type (image has the kinds and the other bits).
const (
	lockRead  = 0 // F_RDLCK
	lockWrite = 1 // F_WRLCK
)

// lockKinds are the lock classes of /proc that can be dumped, by CRIU kind.
var lockKinds = map[string]uint32{"POSIX": image.FileLockPosix, "FLOCK": image.FileLockFlock, "OFDLCK": image.FileLockOFD, "LEASE": image.FileLockLease}

// heldLocks are the locks an fd of the tree lists in its fdinfo.
type heldLocks struct {
	pid, fd int
	link    string
	locks   []procfs.Lock
}

// lockKey identifies one lock across the fds that list it.
type lockKey struct {
	class, typ, dev string
	ino             uint64
	start, end      int64
	pid             int
}

func keyOf(l procfs.Lock) lockKey {
	return lockKey{l.Class, l.Type, l.Dev, l.Ino, l.Start, l.End, l.Pid}
}

// describeLock names a lock: "POSIX WRITE 0-3", "FLOCK READ", "LEASE READ", "LEASE
// BREAKING READ" (a lease being broken, with the type it is broken to).
func describeLock(l procfs.Lock) string {
	s := l.Class + " " + l.Type
	if l.Class == "LEASE" && l.Mode != "ACTIVE" {
		s = l.Class + " " + l.Mode + " " + l.Type
	}
	if l.Class == "POSIX" || l.Class == "OFDLCK" {
		s += " " + l.Range()
	}
	return s
}

// describeLocks names the locks of an fd: "a lock (POSIX WRITE 0-3)", "2 locks (FLOCK
// WRITE, OFDLCK READ 2-3)".
func describeLocks(ls []procfs.Lock) string {
	kinds := make([]string, len(ls))
	for i, l := range ls {
		kinds[i] = describeLock(l)
	}
	if len(kinds) == 1 {
		return "a lock (" + kinds[0] + ")"
	}
	return fmt.Sprintf("%d locks (%s)", len(kinds), strings.Join(kinds, ", "))
}

// checkFileLocks refuses, in precheck, what the dump cannot save of the tree's locks
// (see above), from the fdinfo of the fds precheck read (procs) and all, /proc/locks read
// before them (see judgeLocks); it touches nothing.
func checkFileLocks(procs []*liveProc, all []procfs.Lock, fileLocks bool, refused *Refusals) error {
	pids := make([]int, len(procs))
	each := make([][]heldLocks, len(procs))
	for i, p := range procs {
		pids[i] = p.pid
		var err error
		if each[i], err = locksThrough(p.pid, p.fds); err != nil {
			return err
		}
	}
	_, err := judgeLocks(pids, all, each, fileLocks, refused)
	return err
}

// locksThrough lists the locks held through each of fds of pid, as their fdinfo says.
func locksThrough(pid int, fds []*fdDesc) ([]heldLocks, error) {
	var held []heldLocks
	for _, f := range fds {
		h, err := heldThrough(pid, f.fd, f.link, f.info)
		if err != nil {
			return nil, err
		}
		if h != nil {
			held = append(held, *h)
		}
	}
	return held, nil
}

// holdLocks takes the locks of the stopped tree from the fdinfo and /proc/locks readTree
// read, refusing what cannot be saved, and keeps them for filelocks.img. It runs before
// anything of the tree is read through a new open (which would break a write lease).
func (d *dumper) holdLocks() error {
	pids := make([]int, len(d.procs))
	each := make([][]heldLocks, len(d.procs))
	for i, p := range d.procs {
		pids[i] = p.pid
		var err error
		if each[i], err = locksThrough(p.pid, p.state.fds); err != nil {
			return err
		}
	}
	var refused Refusals
	held, err := judgeLocks(pids, d.lockList, each, d.opts.FileLocks, &refused)
	if err != nil {
		return err
	}
	if err := refused.err(); err != nil {
		return err
	}
	d.held = held
	return nil
}

// judgeLocks adds to refused what cannot be saved of the locks each process of pids holds
// through its fds (each, in the order of pids) and of those all (/proc/locks, read before
// the fds' fdinfo) lists for the tree, and returns the locks held through fds.
func judgeLocks(pids []int, all []procfs.Lock, each [][]heldLocks, fileLocks bool, refused *Refusals) ([]heldLocks, error) {
	var held []heldLocks
	for i := range pids {
		held = append(held, each[i]...)
	}
	mapped := &treeMappings{pids: pids}
	seen := map[lockKey]bool{}
	for _, h := range held {
		var savable, bad []procfs.Lock
		var why string
		for _, l := range h.locks {
			seen[keyOf(l)] = true
			w, err := unsavable(h, l, mapped)
			if err != nil {
				return nil, err
			}
			if w == "" {
				savable = append(savable, l)
			} else if why == "" {
				bad, why = append(bad, l), w
			} else {
				bad = append(bad, l)
			}
		}
		if len(bad) > 0 {
			refused.add(refuse(h.pid, h.fd, h.link, fmt.Sprintf("holds %s: %s", describeLocks(bad), why)))
		}
		if len(savable) > 0 && !fileLocks {
			refused.add(refuse(h.pid, h.fd, h.link, fmt.Sprintf("holds %s: file locks are only dumped with --file-locks "+
				"(CRIU's flag), and a restore without them would let other writers in", describeLocks(savable))))
		}
	}
	inTree := map[int]bool{}
	for _, pid := range pids {
		inTree[pid] = true
	}
	for _, l := range all {
		if l.Blocked || seen[keyOf(l)] || !(inTree[l.Pid] || l.Class == "OFDLCK") {
			continue
		}
		m, err := mapped.of(l.File())
		if err != nil {
			return nil, err
		}
		if m == nil {
			continue // held through a description outside the tree
		}
		who := " (/proc names no holder for OFD locks)"
		if l.Class != "OFDLCK" {
			who = fmt.Sprintf(", taken by process %d,", l.Pid)
		}
		refused.add(refuse(m.pid, -1, fmt.Sprintf("mapping of %s (%s)", m.path, l.File()), fmt.Sprintf(
			"a lock (%s) on the file%s is held through no fd of the tree, maybe through this mapping: a restore could not take it back",
			describeLock(l), who)))
	}
	return held, nil
}

// heldThrough is the locks the fdinfo info of fd (link) of pid lists, or nil if none.
func heldThrough(pid, fd int, link string, info *procfs.Fdinfo) (*heldLocks, error) {
	if info == nil || len(info.Locks) == 0 {
		return nil, nil
	}
	h := &heldLocks{pid: pid, fd: fd, link: link}
	for _, s := range info.Locks {
		l, err := procfs.ParseLock(s)
		if err != nil {
			return nil, fmt.Errorf("process %d fd %d: %w", pid, fd, err)
		}
		h.locks = append(h.locks, l)
	}
	return h, nil
}

// unsavable says why a lock listed by an fd cannot be dumped, or "".
func unsavable(h heldLocks, l procfs.Lock, mapped *treeMappings) (string, error) {
	kind, ok := lockKinds[l.Class]
	switch {
	case !ok:
		return "locks of class " + l.Class + " cannot be taken back by a restore", nil
	case l.Mode == "MSNFS":
		return "mandatory flocks (LOCK_MAND) are no longer granted by Linux", nil
	case kind == image.FileLockLease && l.Mode != "ACTIVE":
		return "a lease being broken (another process opens the file) is not restored by imgtool", nil
	case l.Type != "READ" && l.Type != "WRITE":
		return "a lock of type " + l.Type + " cannot be taken back", nil
	case kind == image.FileLockLease && l.Type == "WRITE" && strings.HasPrefix(h.link, "/memfd:"):
		return "a write lease on a memfd: the dump reads a memfd through a new open, which breaks the lease", nil
	case kind == image.FileLockLease && l.Type == "WRITE":
		m, err := mapped.of(l.File())
		if err != nil || m == nil {
			return "", err
		}
		return fmt.Sprintf("a write lease on a file process %d maps: the dump reads mapped files through a new open, which breaks the lease", m.pid), nil
	}
	return "", nil
}

// treeMappings are the files the tree maps, by /proc/locks file name, read once when
// first needed.
type treeMappings struct {
	pids  []int
	files map[string]*mappedFile
}

type mappedFile struct {
	pid  int
	path string
}

// of returns a process of the tree that maps file ("MAJ:MIN:INO"), or nil.
func (t *treeMappings) of(file string) (*mappedFile, error) {
	if t.files == nil {
		t.files = map[string]*mappedFile{}
		for _, pid := range t.pids {
			maps, err := procfs.ReadMaps(pid)
			if err != nil {
				if vanished(err) {
					continue
				}
				return nil, err
			}
			for _, m := range maps {
				k := fmt.Sprintf("%02x:%02x:%d", m.DevMajor, m.DevMinor, m.Ino)
				if m.Ino != 0 && t.files[k] == nil {
					t.files[k] = &mappedFile{pid: pid, path: m.Path}
				}
			}
		}
	}
	return t.files[file], nil
}

// buildIDPath is where the dump may read the build id of the file of r: its /proc link,
// or nothing for a file under a write lease, which any open breaks (the holder is sent
// its lease-break signal and loses the lease).
func (r fdRef) buildIDPath() string {
	for _, s := range r.f.info.Locks {
		if l, err := procfs.ParseLock(s); err == nil && l.Class == "LEASE" && l.Type == "WRITE" {
			return ""
		}
	}
	return r.open()
}

// lockEntries are the file_lock_entry records of the locks held by the stopped tree:
// each lock once (see above), in tree order.
func (d *dumper) lockEntries() ([]proto.Message, error) {
	ids := map[[2]int]uint32{} // pid, fd -> file id
	for _, p := range d.procs {
		for _, fe := range p.files.fds {
			ids[[2]int{p.pid, int(fe.GetFd())}] = fe.GetId()
		}
	}
	var out []*file_lock.FileLockEntry
	type owned struct {
		lockKey
		owner [2]int // {pid, 0} for a POSIX lock, {0, file id} for the description's
	}
	index := map[owned]int{}
	for _, h := range d.held {
		for _, l := range h.locks {
			k := owned{keyOf(l), [2]int{h.pid, 0}} // a POSIX lock: the process owns it
			if l.Class != "POSIX" {
				id, ok := ids[[2]int{h.pid, h.fd}]
				if !ok {
					return nil, fmt.Errorf("process %d fd %d holds %s but has no file id", h.pid, h.fd, describeLock(l))
				}
				k.owner = [2]int{0, int(id)} // the open file description owns it
			}
			if i, ok := index[k]; ok {
				// Taken back through the process that took it, when it still has it.
				if l.Class != "POSIX" && l.Pid == h.pid && int(out[i].GetPid()) != h.pid {
					out[i].Pid, out[i].Fd = proto.Int32(int32(h.pid)), proto.Int32(int32(h.fd))
				}
				continue
			}
			index[k] = len(out)
			out = append(out, lockEntry(h.pid, h.fd, l))
		}
	}
	msgs := make([]proto.Message, len(out))
	for i, e := range out {
		msgs[i] = e
	}
	return msgs, nil
}

// lockEntry is a lock as CRIU's dump_file_locks writes it: the length is 0 for a lock to
// the end of the file (and for flocks and leases).
func lockEntry(pid, fd int, l procfs.Lock) *file_lock.FileLockEntry {
	typ := uint32(lockRead)
	if l.Type == "WRITE" {
		typ = lockWrite
	}
	n := int64(0)
	if l.End >= 0 {
		n = l.End - l.Start + 1
	}
	return &file_lock.FileLockEntry{Flag: proto.Uint32(lockKinds[l.Class]), Type: proto.Uint32(typ),
		Pid: proto.Int32(int32(pid)), Fd: proto.Int32(int32(fd)), Start: proto.Int64(l.Start), Len: proto.Int64(n)}
}

// writeFileLocks writes filelocks.img when the tree holds locks (CRIU writes none
// otherwise).
func (d *dumper) writeFileLocks() error {
	es, err := d.lockEntries()
	if err != nil || len(es) == 0 {
		return err
	}
	return d.writeImage("filelocks.img", es...)
}
