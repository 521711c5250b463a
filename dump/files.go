package dump

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fifo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fown"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/memfd"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pipe"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/regfile"
	"github.com/imgtool/imgtool/internal/buildid"
	"github.com/imgtool/imgtool/internal/procfs"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

const (
	kcmpFile       = 0
	fGetownerUids  = 17 // F_GETOWNER_UIDS
	fOwnerTid      = 0  // f_owner_ex types: F_OWNER_TID, F_OWNER_PID, F_OWNER_PGRP
	fOwnerPgrp     = 2
	fGetSeals      = 1034
	maxPipeData    = 1 << 20 // F_GETPIPE_SZ cap for unprivileged pipes is 1 MiB; root may go higher
	maxPipeDataAbs = 256 << 20
	fdCloexec      = 1
)

// devIno identifies an inode.
type devIno struct{ dev, ino uint64 }

// seenFd is an fd already given a file id, for kcmp(KCMP_FILE) comparisons.
type seenFd struct {
	pid, fd int
	id      uint32
}

// pipeData is the queued content of one pipe or FIFO, copied without consuming it.
type pipeData struct {
	pipeID uint32
	size   uint32
	data   []byte
}

// memfdInode is one shmem object (memfd or MAP_SHARED anonymous memory) of the tree.
type memfdInode struct {
	entry   *memfd.MemfdInodeEntry
	mapFile string // a /proc/PID/map_files link or /proc/PID/fd link that opens it
	pagesID uint32
	runs    []pageRun // offsets of the data pages
	pages   uint64
}

// setState holds everything numbered across the whole tree.
type setState struct {
	seccomp     *seccompState // seccomp.img and each thread's place in it (seccomp.go)
	nextFileID  uint32
	files       []*fdinfo.FileEntry
	mapFiles    map[devIno]uint32
	memfdMaps   map[uint64]uint32 // shmem inode -> MEMFD file id used by mappings
	memfds      []*memfdInode
	memfdByIno  map[uint64]*memfdInode
	fdsByInode  map[devIno][]seenFd
	pipes       []pipeData
	fifos       []pipeData
	pipesDumped map[uint32]bool
	nextPagesID uint32
	unix        unixState    // sk_unix.go
	ghosts      ghostState   // ghost.go
	links       linkState    // remap.go
	tty         ttyState     // tty.go
	tcp         tcpConns     // sk_tcp.go
	runID       string       // dump_criu_run_id
	live        map[int]bool // the live processes of the stopped tree (pidfd.go)
}

func newSetState() *setState {
	return &setState{
		mapFiles:    map[devIno]uint32{},
		memfdMaps:   map[uint64]uint32{},
		memfdByIno:  map[uint64]*memfdInode{},
		fdsByInode:  map[devIno][]seenFd{},
		pipesDumped: map[uint32]bool{},
	}
}

func (s *setState) newID() uint32 {
	s.nextFileID++
	return s.nextFileID
}

// procFiles is what fdinfo-N.img and fs-PID.img hold for one process.
type procFiles struct {
	fds    []*fdinfo.FdinfoEntry
	cwdID  uint32
	rootID uint32
	exeID  uint32
}

func zeroFown() *fown.FownEntry {
	return &fown.FownEntry{Uid: proto.Uint32(0), Euid: proto.Uint32(0), Signum: proto.Uint32(0),
		PidType: proto.Uint32(0), Pid: proto.Uint32(0)}
}

// regEntry builds a reg_file_entry the way CRIU fills it: the size only for regular files not
// opened write-only-append (restore compares it with the file), the mode always, the ELF
// build id when there is one.
func regEntry(id uint32, flags uint32, pos uint64, name string, st *unix.Stat_t, open string) *regfile.RegFileEntry {
	r := &regfile.RegFileEntry{
		Id: proto.Uint32(id), Flags: proto.Uint32(flags), Pos: proto.Uint64(pos),
		Fown: zeroFown(), Name: proto.String(name), Mode: proto.Uint32(st.Mode),
	}
	if st.Mode&unix.S_IFMT == unix.S_IFREG {
		if !(flags&unix.O_ACCMODE == unix.O_WRONLY && flags&unix.O_APPEND != 0) {
			r.Size = proto.Uint64(uint64(st.Size))
			if bid := buildID(open, st.Size); bid != nil {
				r.BuildId = bid
			}
		}
	}
	return r
}

// buildID returns the GNU build id of an ELF file as CRIU stores it (little-endian words),
// or nil.
func buildID(path string, size int64) []uint32 {
	if size < 5 {
		return nil
	}
	id, err := buildid.Read(path)
	if err != nil {
		return nil
	}
	return buildid.Words(id)
}

// mapFileID returns the files.img id of the file behind a mapping (or the exe), creating the
// reg entry the first time the inode is seen anywhere in the tree; a file that was deleted
// is a ghost (ghost.go), one whose name was removed while it keeps another is saved through
// a link (remap.go); what names it in a refusal.
func (s *setState) mapFileID(pid int, what, path, open string, st *unix.Stat_t) (uint32, error) {
	k := devIno{st.Dev, st.Ino}
	if id, ok := s.mapFiles[k]; ok {
		return id, nil
	}
	id := s.newID()
	s.mapFiles[k] = id
	name := savedName(path, st)
	err := s.remapOf(id, path, open, st, func(reason string) error {
		return refuse(pid, -1, what+" "+name+deletedSuffix, reason)
	})
	if err != nil {
		return 0, err
	}
	s.files = append(s.files, &fdinfo.FileEntry{Type: fdinfo.FdTypes_REG.Enum(), Id: proto.Uint32(id),
		Reg: regEntry(id, 0, 0, name, st, open)})
	return id, nil
}

// memfdInodeFor returns the shmem object with inode st.Ino, creating it from an fd that opens
// it (for the seals).
func (s *setState) memfdInodeFor(path, open string, st *unix.Stat_t) (*memfdInode, error) {
	if m, ok := s.memfdByIno[st.Ino]; ok {
		return m, nil
	}
	f, err := os.Open(open)
	if err != nil {
		return nil, fmt.Errorf("open shared memory %s: %w", path, err)
	}
	seals, err := unix.FcntlInt(f.Fd(), fGetSeals, 0)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("read seals of %s: %w", path, err)
	}
	m := &memfdInode{mapFile: open, entry: &memfd.MemfdInodeEntry{
		Name: proto.String(memfdName(path)), Uid: proto.Uint32(st.Uid), Gid: proto.Uint32(st.Gid),
		Size: proto.Uint64(uint64(st.Size)), Shmid: proto.Uint32(uint32(st.Ino)),
		Seals: proto.Uint32(uint32(seals)), InodeId: proto.Uint64(uint64(len(s.memfds) + 1)),
		Mode: proto.Uint32(st.Mode),
	}}
	s.memfds = append(s.memfds, m)
	s.memfdByIno[st.Ino] = m
	return m, nil
}

// memfdMapID returns the MEMFD file id mappings of the shmem object use.
func (s *setState) memfdMapID(v *vmaDesc) (uint32, error) {
	if id, ok := s.memfdMaps[v.st.Ino]; ok {
		return id, nil
	}
	m, err := s.memfdInodeFor(v.path, v.mapFile, v.st)
	if err != nil {
		return 0, err
	}
	id := s.newID()
	s.memfdMaps[v.st.Ino] = id
	s.files = append(s.files, &fdinfo.FileEntry{Type: fdinfo.FdTypes_MEMFD.Enum(), Id: proto.Uint32(id),
		Memfd: &memfd.MemfdFileEntry{Id: proto.Uint32(id), Flags: proto.Uint32(0), Pos: proto.Uint64(0),
			Fown: zeroFown(), InodeId: proto.Uint32(uint32(m.entry.GetInodeId()))}})
	return id, nil
}

// numberMM gives file ids to the exe and to every file mapping of p, in CRIU's order.
func (s *setState) numberMM(p *process) error {
	ps := p.state
	p.files = &procFiles{}
	var err error
	if p.files.exeID, err = s.mapFileID(p.pid, "executable", ps.exePath, procfs.Path(p.pid, "exe"), &ps.exeStat); err != nil {
		return err
	}
	for _, v := range p.mem.vmas {
		what := fmt.Sprintf("mapping %#x-%#x", v.start, v.end)
		switch v.kind {
		case vmaShmem, vmaFilePrivMem:
			id, err := s.memfdMapID(v)
			if err != nil {
				return err
			}
			v.shmid = uint64(id)
		case vmaFilePriv:
			id, err := s.mapFileID(p.pid, what, v.path, v.mapFile, v.st)
			if err != nil {
				return err
			}
			v.shmid = uint64(id)
		case vmaNoPages:
			if v.mapFile != "" {
				id, err := s.mapFileID(p.pid, what, v.path, v.mapFile, v.st)
				if err != nil {
					return err
				}
				v.shmid = uint64(id)
			}
		}
	}
	return nil
}

// One kind of open file, one handler: every kind the dump supports is a value of fileKind,
// in the file named after it (eventfd.go, timerfd.go, signalfd.go, eventpoll.go; regular
// files, pipes, FIFOs and memfds below), and fdKinds is the one table from kind to
// handler. inspectFd classifies an fd and then runs its kind's check; numberFds asks the
// kind for the file_entry. restore/ has the same files and one table of its own.

// fileKind is how the dump handles one kind of open file.
type fileKind interface {
	// typ is the kind's fd_types value in fdinfo-N.img and files.img.
	typ() fdinfo.FdTypes
	// check refuses what the dump cannot save of fd f of pid, touching nothing (it runs in
	// precheck and again once the tree is stopped).
	check(pid int, f *fdDesc) error
	// entry fills the file_entry of a new open file description: flags are the open
	// flags without O_CLOEXEC, own the saved owner.
	entry(s *setState, r fdRef, fe *fdinfo.FileEntry, flags uint32, own *fown.FownEntry) error
}

// fdRef is the fd a description is dumped through, in a stopped process.
type fdRef struct {
	pid, pidfd int
	f          *fdDesc
}

// open is the /proc link that opens the fd's file.
func (r fdRef) open() string { return procfs.Path(r.pid, "fd", strconv.Itoa(r.f.fd)) }

// errorf names the process and fd.
func (r fdRef) errorf(format string, args ...any) error {
	return fmt.Errorf("process %d fd %d: %s", r.pid, r.f.fd, fmt.Sprintf(format, args...))
}

// The kinds whose files are anonymous inodes (the first four are in check.go).
const (
	fdEventfd  fdKind = fdMemfd + 1 + iota // eventfd
	fdTimerfd                              // timerfd
	fdSignalfd                             // signalfd
	fdEpoll                                // epoll instance
)

// fdKinds is the registry: every kind of fd the dump supports.
var fdKinds = map[fdKind]fileKind{
	fdReg:      regKind{},
	fdPipe:     pipeKind{},
	fdFifo:     fifoKind{},
	fdMemfd:    memfdKind{},
	fdEventfd:  eventfdKind{},
	fdTimerfd:  timerfdKind{},
	fdSignalfd: signalfdKind{},
	fdEpoll:    eventpollKind{},
	fdInotify:  inotifyKind{},
	fdPidfd:    pidfdKind{},
	fdUnixSk:   unixSkKind{},
	fdInetSk:   inetSkKind{},
	fdTTY:      ttyKind{},
}

// anonKinds are the kinds whose files are anonymous inodes, by their /proc/PID/fd link.
var anonKinds = map[string]fdKind{
	"anon_inode:[eventfd]":   fdEventfd,
	"anon_inode:inotify":     fdInotify,
	"anon_inode:[timerfd]":   fdTimerfd,
	"anon_inode:[signalfd]":  fdSignalfd,
	"anon_inode:[eventpoll]": fdEpoll,
	"anon_inode:[pidfd]":     fdPidfd,
}

// isAnonKind tells whether link names an anonymous inode of a supported kind.
func isAnonKind(link string) bool {
	_, ok := anonKinds[link]
	return ok
}

// fdinfoLines reads /proc/PID/fdinfo/FD as "key: value" lines, repeated keys kept in order
// (an epoll's "tfd:" lines).
func fdinfoLines(pid, fd int) ([][2]string, error) {
	b, err := procfs.ReadFile(procfs.Path(pid, "fdinfo", strconv.Itoa(fd)))
	if err != nil {
		return nil, err
	}
	var out [][2]string
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			out = append(out, [2]string{strings.TrimSpace(k), strings.TrimSpace(v)})
		}
	}
	return out, nil
}

// fdinfoField returns the value of the first line of key, and whether there is one.
func fdinfoField(lines [][2]string, key string) (string, bool) {
	for _, l := range lines {
		if l[0] == key {
			return l[1], true
		}
	}
	return "", false
}

type regKind struct{}

func (regKind) typ() fdinfo.FdTypes      { return fdinfo.FdTypes_REG }
func (regKind) check(int, *fdDesc) error { return nil }
func (regKind) entry(s *setState, r fdRef, fe *fdinfo.FileEntry, flags uint32, own *fown.FownEntry) error {
	fe.Reg = regEntry(fe.GetId(), flags, r.f.info.Pos, savedName(r.f.link, &r.f.st), &r.f.st, r.buildIDPath())
	fe.Reg.Fown = own
	return s.fdRemap(r, fe.GetId())
}

// fdRemap records how a restore reopens the file of fd r, reg entry regID, when its name
// was removed (ghost.go, remap.go).
func (s *setState) fdRemap(r fdRef, regID uint32) error {
	what := r.f.link
	if isGhost(r.f.link, &r.f.st) {
		what = "unlinked file " + what
	}
	return s.remapOf(regID, r.f.link, r.open(), &r.f.st, func(reason string) error {
		return refuse(r.pid, r.f.fd, what, reason)
	})
}

type memfdKind struct{}

func (memfdKind) typ() fdinfo.FdTypes      { return fdinfo.FdTypes_MEMFD }
func (memfdKind) check(int, *fdDesc) error { return nil }
func (memfdKind) entry(s *setState, r fdRef, fe *fdinfo.FileEntry, flags uint32, own *fown.FownEntry) error {
	m, err := s.memfdInodeFor(r.f.link, r.open(), &r.f.st)
	if err != nil {
		return err
	}
	fe.Memfd = &memfd.MemfdFileEntry{Id: proto.Uint32(fe.GetId()), Flags: proto.Uint32(flags),
		Pos: proto.Uint64(r.f.info.Pos), Fown: own, InodeId: proto.Uint32(uint32(m.entry.GetInodeId()))}
	return nil
}

type pipeKind struct{}

func (pipeKind) typ() fdinfo.FdTypes      { return fdinfo.FdTypes_PIPE }
func (pipeKind) check(int, *fdDesc) error { return nil }
func (pipeKind) entry(s *setState, r fdRef, fe *fdinfo.FileEntry, flags uint32, own *fown.FownEntry) error {
	fe.Pipe = &pipe.PipeEntry{Id: proto.Uint32(fe.GetId()), PipeId: proto.Uint32(uint32(r.f.st.Ino)),
		Flags: proto.Uint32(flags), Fown: own}
	if flags&unix.O_ACCMODE != unix.O_WRONLY {
		return s.stealPipeData(r.pidfd, r.pid, r.f)
	}
	return nil
}

// fdCopy returns a copy of fd of pid (pidfd_getfd): a socket for getsockopt and peeking,
// a pipe end to poll.
func fdCopy(pid, fd int) (int, error) {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return -1, fmt.Errorf("process %d: pidfd_open: %w", pid, err)
	}
	defer unix.Close(pidfd)
	local, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		if errors.Is(err, unix.EBADF) {
			err = errors.Join(err, os.ErrNotExist) // closed meanwhile: vanished() knows it
		}
		return -1, fmt.Errorf("process %d fd %d: pidfd_getfd: %w", pid, fd, err)
	}
	return local, nil
}

// checkPipeEnds refuses a pipe the tree holds one end of while a process outside it holds
// the other: the restore makes the pipe again with the tree's ends only, so a reader would
// read the end of the file and a writer die of SIGPIPE (a program whose output goes
// through `| tee` or to a container runtime's logger). The kernel tells it without a look
// outside the tree: a read end polls POLLHUP once no write end is open anywhere, a write
// end POLLERR once no read end is. (A FIFO is reopened by its name: an outside end stays
// connected.) A process born while the tree was being read (a shell setting up a
// pipeline) may hold the other end: when the tree has changed since, the refusals are
// transient, and the dump looks again in a moment.
func checkPipeEnds(procs, members []*liveProc, refused *Refusals) (transient bool, err error) {
	type held struct {
		read, write bool
		pid         int
		f           *fdDesc // one end the tree holds, to poll
	}
	pipes := map[uint64]*held{}
	var order []uint64
	for _, p := range procs {
		for _, f := range p.fds {
			if f.kind != fdPipe || f.info == nil {
				continue
			}
			h := pipes[f.st.Ino]
			if h == nil {
				h = &held{pid: p.pid, f: f}
				pipes[f.st.Ino] = h
				order = append(order, f.st.Ino)
			}
			acc := f.info.Flags & unix.O_ACCMODE
			h.read = h.read || acc != unix.O_WRONLY
			h.write = h.write || acc != unix.O_RDONLY
		}
	}
	for _, ino := range order {
		h := pipes[ino]
		if h.read && h.write {
			continue
		}
		local, err := fdCopy(h.pid, h.f.fd)
		if err != nil {
			if vanished(err) {
				continue // closed meanwhile: no longer the tree's
			}
			return false, err
		}
		fds := []unix.PollFd{{Fd: int32(local), Events: unix.POLLIN | unix.POLLOUT}}
		_, err = unix.Poll(fds, 0)
		unix.Close(local)
		if err != nil {
			return false, fmt.Errorf("process %d fd %d: poll: %w", h.pid, h.f.fd, err)
		}
		switch {
		case h.read && fds[0].Revents&unix.POLLHUP == 0:
			refused.add(refuse(h.pid, h.f.fd, h.f.link, "its write end is open outside the tree: a restore could not connect it again, and the reader would see the end of the file"))
		case h.write && fds[0].Revents&unix.POLLERR == 0:
			refused.add(refuse(h.pid, h.f.fd, h.f.link, "its read end is open outside the tree: a restore could not connect it again, and the writer would get SIGPIPE"))
		default:
			continue
		}
		transient = transient || treeChanged(members)
	}
	return transient, nil
}

type fifoKind struct{}

func (fifoKind) typ() fdinfo.FdTypes      { return fdinfo.FdTypes_FIFO }
func (fifoKind) check(int, *fdDesc) error { return nil }
func (fifoKind) entry(s *setState, r fdRef, fe *fdinfo.FileEntry, flags uint32, own *fown.FownEntry) error {
	regID := s.newID()
	reg := regEntry(regID, flags, r.f.info.Pos, savedName(r.f.link, &r.f.st), &r.f.st, r.buildIDPath())
	reg.Fown = own // a FIFO's owner is in its reg entry, as CRIU has it
	if err := s.fdRemap(r, regID); err != nil {
		return err
	}
	s.files = append(s.files, &fdinfo.FileEntry{Type: fdinfo.FdTypes_REG.Enum(), Id: proto.Uint32(regID), Reg: reg})
	fe.Fifo = &fifo.FifoEntry{Id: proto.Uint32(fe.GetId()), PipeId: proto.Uint32(uint32(r.f.st.Ino)),
		RegfId: proto.Uint32(regID)}
	if flags&unix.O_ACCMODE != unix.O_WRONLY {
		return s.stealPipeData(r.pidfd, r.pid, r.f)
	}
	return nil
}

// numberFds gives every fd of p a file id, sharing the id of any fd in the tree with the same
// open file description (kcmp), and collects pipe and FIFO data.
func (s *setState) numberFds(p *process, fds []*fdDesc) error {
	pidfd, err := unix.PidfdOpen(p.pid, 0)
	if err != nil {
		return fmt.Errorf("pidfd_open %d: %w", p.pid, err)
	}
	defer unix.Close(pidfd)
	for _, f := range fds {
		flags := f.info.Flags &^ unix.O_CLOEXEC
		fe := &fdinfo.FdinfoEntry{Fd: proto.Uint32(uint32(f.fd)), Flags: proto.Uint32(0)}
		if f.info.Flags&unix.O_CLOEXEC != 0 {
			fe.Flags = proto.Uint32(fdCloexec)
		}
		k := devIno{f.st.Dev, f.st.Ino}
		id, shared, err := s.sharedID(p.pid, f.fd, k)
		if err != nil {
			return err
		}
		kind := fdKinds[f.kind]
		typ := kind.typ()
		fe.Type = typ.Enum()
		if !shared {
			id = s.newID()
			own, err := fdOwner(pidfd, f.fd)
			if err != nil {
				return fmt.Errorf("process %d fd %d: %w", p.pid, f.fd, err)
			}
			entry := &fdinfo.FileEntry{Type: typ.Enum(), Id: proto.Uint32(id)}
			if err := kind.entry(s, fdRef{pid: p.pid, pidfd: pidfd, f: f}, entry, flags, own); err != nil {
				return err
			}
			s.files = append(s.files, entry)
			s.fdsByInode[k] = append(s.fdsByInode[k], seenFd{pid: p.pid, fd: f.fd, id: id})
		}
		fe.Id = proto.Uint32(id)
		p.files.fds = append(p.files.fds, fe)
	}
	return nil
}

// sharedID finds an fd seen earlier with the same open file description.
func (s *setState) sharedID(pid, fd int, k devIno) (uint32, bool, error) {
	for _, o := range s.fdsByInode[k] {
		r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(pid), uintptr(o.pid), kcmpFile, uintptr(fd), uintptr(o.fd), 0)
		if e != 0 {
			return 0, false, fmt.Errorf("kcmp fd %d of %d with fd %d of %d: %w", fd, pid, o.fd, o.pid, e)
		}
		if r == 0 {
			return o.id, true, nil
		}
	}
	return 0, false, nil
}

// checkFdOwners refuses every fd of the tree whose owner (F_SETOWN) is a thread, process
// or process group outside it: a restore sets the owner by its number (as CRIU does), and
// that number then names another process or none. A process group counts as in the tree
// when its leader is (only those are restored). procs is the whole tree, its threads and
// fds as precheck read them; it reads the owners through pidfd_getfd and touches
// nothing.
func checkFdOwners(procs []*liveProc, refused *Refusals) error {
	inTree, tids := map[int]bool{}, map[int]bool{}
	for _, p := range procs {
		inTree[p.pid] = true
		for _, t := range p.tids {
			tids[t] = true
		}
	}
	for _, p := range procs {
		if err := checkOwnersOf(p, inTree, tids, refused); err != nil {
			return err
		}
	}
	return nil
}

// checkOwnersOf checks the owners of the fds of one process (see checkFdOwners).
func checkOwnersOf(p *liveProc, procs, tids map[int]bool, refused *Refusals) error {
	pid := p.pid
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		if vanished(err) {
			return nil
		}
		return fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	defer unix.Close(pidfd)
	for _, f := range p.fds {
		fd := f.fd
		own, err := fdOwner(pidfd, fd)
		if err != nil {
			if errors.Is(err, unix.EBADF) || vanished(err) {
				continue // closed meanwhile; the frozen tree is inspected again
			}
			return fmt.Errorf("process %d fd %d: %w", pid, fd, err)
		}
		o := int(own.GetPid())
		var in bool
		switch own.GetPidType() {
		case fOwnerTid:
			in = tids[o]
		case fOwnerPgrp:
			in = procs[o]
		default: // F_OWNER_PID: a process, or a thread named by its id
			in = tids[o]
		}
		if o != 0 && !in {
			refused.add(refuse(pid, fd, "file owner", fmt.Sprintf("its owner (F_SETOWN) %d is outside the tree; not supported", o)))
		}
	}
	return nil
}

// fdOwner reads the F_SETOWN owner of an fd (CRIU's fown_entry).
func fdOwner(pidfd, fd int) (*fown.FownEntry, error) {
	own := zeroFown()
	local, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		return nil, fmt.Errorf("pidfd_getfd: %w", err)
	}
	defer unix.Close(local)
	// An O_PATH fd has no owner, and fcntl refuses to tell (EBADF).
	if fl, err := unix.FcntlInt(uintptr(local), unix.F_GETFL, 0); err == nil && fl&unix.O_PATH != 0 {
		return own, nil
	}
	var ex struct{ Type, Pid int32 } // struct f_owner_ex
	if _, _, e := unix.Syscall(unix.SYS_FCNTL, uintptr(local), unix.F_GETOWN_EX, uintptr(unsafe.Pointer(&ex))); e != 0 {
		return nil, fmt.Errorf("F_GETOWN_EX: %w", e)
	}
	sig, err := unix.FcntlInt(uintptr(local), unix.F_GETSIG, 0)
	if err != nil {
		return nil, fmt.Errorf("F_GETSIG: %w", err)
	}
	own.Signum = proto.Uint32(uint32(sig))
	if ex.Pid != 0 {
		var uids [2]uint32
		if _, _, e := unix.Syscall(unix.SYS_FCNTL, uintptr(local), fGetownerUids, uintptr(unsafe.Pointer(&uids[0]))); e == 0 {
			own.Uid, own.Euid = proto.Uint32(uids[0]), proto.Uint32(uids[1])
		}
		own.PidType, own.Pid = proto.Uint32(uint32(ex.Type)), proto.Uint32(uint32(ex.Pid))
	}
	return own, nil
}

// stealPipeData copies what is queued in a pipe or FIFO through tee(2), which duplicates the
// bytes into a pipe of ours without consuming them, once per pipe.
func (s *setState) stealPipeData(pidfd, pid int, f *fdDesc) error {
	id := uint32(f.st.Ino)
	if s.pipesDumped[id] {
		return nil
	}
	s.pipesDumped[id] = true
	local, err := unix.PidfdGetfd(pidfd, f.fd, 0)
	if err != nil {
		return fmt.Errorf("process %d fd %d: pidfd_getfd: %w", pid, f.fd, err)
	}
	defer unix.Close(local)
	size, err := unix.FcntlInt(uintptr(local), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		return fmt.Errorf("process %d fd %d: F_GETPIPE_SZ: %w", pid, f.fd, err)
	}
	if size <= 0 || size > maxPipeDataAbs {
		return fmt.Errorf("process %d fd %d: pipe size %d out of range", pid, f.fd, size)
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return fmt.Errorf("pipe: %w", err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	if _, err := unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, size); err != nil {
		return fmt.Errorf("size a pipe to %d bytes: %w", size, err)
	}
	n, err := unix.Tee(local, p[1], size, unix.SPLICE_F_NONBLOCK)
	if err != nil {
		if !errors.Is(err, unix.EAGAIN) {
			return fmt.Errorf("process %d fd %d: tee: %w", pid, f.fd, err)
		}
		n = 0
	}
	data := make([]byte, n)
	for got := 0; got < int(n); {
		m, err := unix.Read(p[0], data[got:])
		if err != nil || m == 0 {
			return fmt.Errorf("read copied pipe data: %v", err)
		}
		got += m
	}
	pd := pipeData{pipeID: id, size: uint32(size), data: data}
	if f.kind == fdFifo {
		s.fifos = append(s.fifos, pd)
	} else {
		s.pipes = append(s.pipes, pd)
	}
	return nil
}

// numberFs gives the cwd and root their reg entries (one each per process, as CRIU does);
// a working directory that was removed is a ghost (ghost.go).
func (s *setState) numberFs(p *process) error {
	ps := p.state
	p.files.cwdID = s.newID()
	err := s.remapOf(p.files.cwdID, ps.cwdPath, procfs.Path(p.pid, "cwd"), &ps.cwdStat, func(reason string) error {
		return refuse(p.pid, -1, "working directory "+ps.cwdPath, reason)
	})
	if err != nil {
		return err
	}
	s.files = append(s.files, &fdinfo.FileEntry{Type: fdinfo.FdTypes_REG.Enum(), Id: proto.Uint32(p.files.cwdID),
		Reg: regEntry(p.files.cwdID, 0, 0, savedName(ps.cwdPath, &ps.cwdStat), &ps.cwdStat, "")})
	p.files.rootID = s.newID()
	s.files = append(s.files, &fdinfo.FileEntry{Type: fdinfo.FdTypes_REG.Enum(), Id: proto.Uint32(p.files.rootID),
		Reg: regEntry(p.files.rootID, 0, 0, ps.rootPath, &ps.rootStat, "")})
	return nil
}

// collectFds classifies every fd of p, as readTree read them (procState.fds).
func collectFds(p *process) ([]*fdDesc, error) {
	for _, f := range p.state.fds {
		if err := classifyFd(p.pid, f); err != nil {
			return nil, err
		}
	}
	return p.state.fds, nil
}

// readFds reads every fd of pid (readFd), ascending.
func readFds(pid int) ([]*fdDesc, error) {
	fds, err := procfs.ListNumeric(procfs.Path(pid, "fd"))
	if err != nil {
		return nil, fmt.Errorf("list fds of %d: %w", pid, err)
	}
	out := make([]*fdDesc, 0, len(fds))
	for _, fd := range fds {
		f, err := readFd(pid, fd)
		if err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, nil
}
