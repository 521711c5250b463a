package restore

import (
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fown"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/regfile"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/imgtool/imgtool/image"
	"github.com/imgtool/imgtool/internal/procfs"
)

// Open file descriptions are created here, in imgtool, and handed to the target with
// pidfd_getfd injected into it (it holds a pidfd of us): the target runs one syscall per
// description instead of the open, lseek, fcntl and write calls it takes to shape one.

// descriptions are the open file descriptions of the set, created once.
type descriptions struct {
	slot   map[uint32]int      // file id -> fd number every process inherits it at
	memfds map[uint64]*os.File // memfd inodes, by inode id
	shm    map[uint64]*os.File // shared anonymous memory, by shmid
	pipes  map[uint32]*pipePair
	fifos  map[uint32]*os.File // a reading and writing end of each FIFO, by pipe_id
	owned  map[uint32]*os.File // descriptions with a saved owner, kept for setOwners
	async  map[uint32]bool     // descriptions O_ASYNC was turned on for (setAsync)
	armed  map[uint32]*os.File // descriptions of armer kinds, kept for arm
	// registered are the epolls whose targets are registered (eventpoll.go).
	registered map[uint32]bool
	unix       unixSockets // sk_unix.go
	// ghosts are the deleted files made again (ghost.go): by ghost id, a handle of each
	// of its names.
	ghosts map[uint32]map[string]*os.File
	// links are the handles of the files saved through a link (remap.go): by the link's
	// file id, a handle for each old name.
	links map[uint32]map[string]*os.File
	tty   ttyDescs     // tty.go
	warn  func(string) // Options.Warn, once per message
	// pidfds are the pidfd descriptions, by file id, made once every process exists
	// (pidfd.go).
	pidfds map[uint32]*os.File
}

// pipePair is one pipe, by pipe_id, and which of its ends a description already took.
type pipePair struct {
	ends [2]*os.File // read, write
	used [2]bool
}

func (d *descriptions) close() {
	for _, f := range d.memfds {
		f.Close()
	}
	for _, f := range d.shm {
		f.Close()
	}
	for _, p := range d.pipes {
		p.ends[0].Close()
		p.ends[1].Close()
	}
	for _, f := range d.fifos {
		f.Close()
	}
	for _, f := range d.owned {
		f.Close()
	}
	for _, f := range d.armed {
		f.Close()
	}
	d.unix.close()
	d.tty.close()
	for _, f := range d.pidfds {
		f.Close()
	}
	for _, hs := range d.ghosts {
		for _, h := range hs {
			h.Close()
		}
	}
	for _, hs := range d.links {
		for _, h := range hs {
			h.Close()
		}
	}
}

// transfer gives p a copy of our fd f (pidfd_getfd) and returns its number there.
func (r *restorer) transfer(p *process, f *os.File) (uint64, error) {
	fd, err := p.leader().syscall(unix.SYS_PIDFD_GETFD, uint64(r.pidfdFd), uint64(f.Fd()), 0)
	if err != nil {
		return 0, fmt.Errorf("handing over %s: %w", f.Name(), err)
	}
	return fd, nil
}

// handover hands files of imgtool to a process inside a batch of its calls (callBatch):
// pidfd_getfd gives each the lowest fd number the process has free, known beforehand
// from its fd table (stopped, as is every process sharing it), and each is closed again
// by a later call of the batch before the next is handed over, so that every one lands
// at that number, which the calls using it name. run checks each landed there: if one
// did not, the calls after it used a number that was not its own, and the restore fails.
type handover struct {
	b     *callBatch
	pidfd uint64     // imgtool's pidfd in the process
	at    uint64     // the lowest free fd of the process
	files []*os.File // imgtool's (openShared: they stay open for the other processes)
	gets  []int      // the index of each pidfd_getfd in the batch
}

// openShared opens the file name with flag for handing over, once per restore: every
// process of a tree hands over the same executable, root and working directory (an open
// and a close of each a process were a tenth of setting its mm and fs). The process gets
// its own fd, closed in its batch; imgtool's are closed at the end (closeShared).
func (r *restorer) openShared(name string, flag int) (*os.File, error) {
	type key struct {
		name string
		flag int
	}
	k := key{name, flag}
	if f, ok := r.shared[k]; ok {
		return f, nil
	}
	f, err := os.OpenFile(name, flag|os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	if r.shared == nil {
		r.shared = map[any]*os.File{}
	}
	r.shared[k] = f
	return f, nil
}

// closeShared closes what openShared opened.
func (r *restorer) closeShared() {
	for k, f := range r.shared {
		f.Close()
		delete(r.shared, k)
	}
}

// newHandover starts a batch of p's leader's calls with files to hand over.
func (r *restorer) newHandover(p *process) (*handover, error) {
	fds, err := procfs.ListNumeric(procfs.Path(p.pid, "fd"))
	if err != nil {
		return nil, fmt.Errorf("listing the fds of %d: %w", p.pid, err)
	}
	at := 0
	for _, fd := range fds { // ascending
		if fd == at {
			at++
		} else if fd > at {
			break
		}
	}
	return &handover{b: r.newBatch(p, p.leader()), pidfd: uint64(r.pidfdFd), at: uint64(at)}, nil
}

// add queues the handing over of f and returns the fd number it gets in the process;
// the caller queues the call that closes it before the next add.
func (h *handover) add(f *os.File) uint64 {
	h.files = append(h.files, f)
	h.gets = append(h.gets, len(h.b.calls))
	h.b.add("handing over "+f.Name(), unix.SYS_PIDFD_GETFD, h.pidfd, uint64(f.Fd()), 0)
	return h.at
}

// finish waits for the batch sb (h's, started) and checks where each file landed.
func (h *handover) finish(sb *startedBatch) error {
	got, err := sb.finish()
	for i, at := range h.gets {
		if at < len(got) && got[at] != h.at {
			return fmt.Errorf("process %d: %s landed at fd %d, not %d", h.b.p.pid, h.files[i].Name(), got[at], h.at)
		}
	}
	return err
}

// usedFiles returns the ids of every file an fd of the tree refers to, sorted.
func usedFiles(pl *plan) []uint32 {
	seen := map[uint32]bool{}
	var ids []uint32
	for _, p := range pl.procs {
		for _, fd := range p.fds {
			if !seen[fd.GetId()] {
				seen[fd.GetId()] = true
				ids = append(ids, fd.GetId())
			}
		}
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}

// createDescriptions creates every open file description the fds of the tree use and
// parks each in root at its slot, above every fd number of the set, for the forks to
// inherit.
func (r *restorer) createDescriptions(root *process) (*descriptions, error) {
	d := &descriptions{
		slot:   map[uint32]int{},
		memfds: map[uint64]*os.File{},
		shm:    map[uint64]*os.File{},
		pipes:  map[uint32]*pipePair{},
		fifos:  map[uint32]*os.File{},
		owned:  map[uint32]*os.File{},
		async:  map[uint32]bool{},
		armed:  map[uint32]*os.File{},

		registered: map[uint32]bool{},
		ghosts:     map[uint32]map[string]*os.File{},
		links:      map[uint32]map[string]*os.File{},
		warn:       r.warn,
	}
	t := root.leader()
	for i, id := range usedFiles(r.pl) {
		if d.late(r.pl, id) { // tty.go: /dev/tty, opened by a session leader once it has its terminal
			d.slot[id] = r.fdBase + 1 + i
			continue
		}
		f, err := d.open(r.pl, id)
		if err != nil {
			d.close()
			return nil, err
		}
		own := ownerOf(r.pl, r.pl.files[id])
		err = setSignal(f, own)
		var fd uint64
		if err == nil {
			fd, err = r.transfer(root, f)
		}
		_, arms := fdKinds[r.pl.files[id].GetType()].(armer)
		switch {
		case own.GetPid() != 0:
			d.owned[id] = f
		case arms:
			d.armed[id] = f
		default:
			f.Close()
		}
		if err != nil {
			d.close()
			return nil, err
		}
		slot := r.fdBase + 1 + i
		if _, err := t.syscall(unix.SYS_DUP3, fd, uint64(slot), 0); err != nil {
			d.close()
			return nil, err
		}
		if _, err := t.syscall(unix.SYS_CLOSE, fd); err != nil {
			d.close()
			return nil, err
		}
		d.slot[id] = slot
	}
	return d, nil
}

// openFlags are the flags a description is opened with: the saved ones minus those that
// would change the file, plus O_CLOEXEC for our own copy (the target's fd flags are set
// when the fd is put in place). O_ASYNC is turned on later by the process itself
// (setAsync): open(2) would set the flag without registering for signals.
// A file opened O_TMPFILE (made without a name) is reopened without it: made again from
// its ghost, or by the name it was given since.
func openFlags(saved uint32) int {
	if saved&oTmpfileOnly != 0 {
		saved &^= unix.O_TMPFILE
	}
	return int(saved)&^(unix.O_CREAT|unix.O_EXCL|unix.O_TRUNC|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_ASYNC) | unix.O_CLOEXEC
}

// oTmpfileOnly is __O_TMPFILE, the bit of O_TMPFILE that is not O_DIRECTORY.
const oTmpfileOnly = unix.O_TMPFILE &^ unix.O_DIRECTORY

// settableFlags are the file status flags F_SETFL changes.
const settableFlags = unix.O_APPEND | unix.O_NONBLOCK | unix.O_ASYNC | unix.O_DIRECT | unix.O_NOATIME

// open creates the description of file id: a file of ours the target then gets a copy of.
// The returned file is the caller's to close.
func (d *descriptions) open(pl *plan, id uint32) (*os.File, error) {
	fe := pl.files[id]
	if fe == nil {
		return nil, fmt.Errorf("file id %d is not in files.img", id)
	}
	k := fdKinds[fe.GetType()]
	if k == nil {
		return nil, fmt.Errorf("file id %d: %v files are not supported", id, fe.GetType())
	}
	return k.open(d, pl, fe)
}

// One kind of open file, one handler: every kind restore supports is a value of fileKind,
// in the file named after it (eventfd.go, timerfd.go, signalfd.go, eventpoll.go; regular
// files, pipes, FIFOs and memfds below), and fdKinds is the one table from fd type to
// handler. The pre-check (checkFd) and the creation of descriptions (open) both go through
// it, so a kind cannot be accepted by one and refused by the other.

// fileKind is how restore handles one kind of open file.
type fileKind interface {
	// check verifies, before any process exists, that fe (used by fd of p, named what in
	// errors) can be restored; it notes the reg files it needs in files.
	check(pl *plan, p *procPlan, fd *fdinfo.FdinfoEntry, fe *fdinfo.FileEntry, what string, files map[uint32]string) error
	// open creates the description, in imgtool.
	open(d *descriptions, pl *plan, fe *fdinfo.FileEntry) (*os.File, error)
	// fown returns the saved owner (nil for none), flags the saved open flags.
	fown(pl *plan, fe *fdinfo.FileEntry) *fown.FownEntry
	flags(pl *plan, fe *fdinfo.FileEntry) uint32
}

// placer is a kind with work to do in a process once its fds are in place (an epoll
// registers its targets under their fd numbers).
type placer interface {
	placed(r *restorer, p *process, fd *fdinfo.FdinfoEntry, fe *fdinfo.FileEntry) error
}

// armer is a kind whose description gets its last state just before the tree runs (a
// timerfd is armed then, so that the restore itself does not count as time elapsed). Its
// description is kept open in imgtool until then.
type armer interface {
	arm(f *os.File, fe *fdinfo.FileEntry) error
}

// legacyLoader is a kind older CRIU versions saved in an image of its own instead of
// files.img (CRIU 4.2 still reads them): loadLegacy adds its entries to pl.files.
type legacyLoader interface {
	loadLegacy(pl *plan) error
}

// loadLegacy reads the per-kind image name (of image kind kind), when the set has one, and
// adds each entry to pl.files as a file_entry of type typ.
func loadLegacy[T any](pl *plan, name string, typ fdinfo.FdTypes, id func(*T) uint32, set func(*fdinfo.FileEntry, *T)) error {
	if !pl.src.has(name) {
		return nil
	}
	es, _, err := readEntries[T](pl.src, name)
	if err != nil {
		return err
	}
	for _, e := range es {
		fe := &fdinfo.FileEntry{Type: typ.Enum(), Id: proto.Uint32(id(e))}
		if pl.files[fe.GetId()] != nil {
			return fmt.Errorf("%s: file id %d is in files.img too", name, fe.GetId())
		}
		set(fe, e)
		pl.files[fe.GetId()] = fe
	}
	return nil
}

// fdKinds is the registry: every kind of fd restore supports.
var fdKinds = map[fdinfo.FdTypes]fileKind{
	fdinfo.FdTypes_REG:       regKind{},
	fdinfo.FdTypes_PIPE:      pipeKind{},
	fdinfo.FdTypes_FIFO:      fifoKind{},
	fdinfo.FdTypes_MEMFD:     memfdKind{},
	fdinfo.FdTypes_EVENTFD:   eventfdKind{},
	fdinfo.FdTypes_TIMERFD:   timerfdKind{},
	fdinfo.FdTypes_SIGNALFD:  signalfdKind{},
	fdinfo.FdTypes_EVENTPOLL: eventpollKind{},
	fdinfo.FdTypes_UNIXSK:    unixSkKind{},
	fdinfo.FdTypes_INETSK:    inetSkKind{},
	fdinfo.FdTypes_INOTIFY:   inotifyKind{},
	fdinfo.FdTypes_TTY:       ttyKind{},
	fdinfo.FdTypes_PIDFD:     pidfdKind{},
}

// noEntry is the error of a file entry without the part its type needs.
func noEntry(what string, fe *fdinfo.FileEntry) error {
	return fmt.Errorf("%s: file id %d has no %v entry", what, fe.GetId(), fe.GetType())
}

type regKind struct{}

func (regKind) check(pl *plan, p *procPlan, fd *fdinfo.FdinfoEntry, fe *fdinfo.FileEntry, what string, files map[uint32]string) error {
	if fe.Reg == nil {
		return noEntry(what, fe)
	}
	files[fe.GetId()] = what
	return nil
}
func (regKind) open(d *descriptions, pl *plan, fe *fdinfo.FileEntry) (*os.File, error) {
	path, err := d.regPath(pl, fe) // a deleted file's is made again: ghost.go
	if err != nil {
		return nil, err
	}
	f, err := openReg(path, fe.Reg.GetFlags(), fe.Reg.GetPos())
	if err != nil && path != fe.Reg.GetName() {
		return nil, fmt.Errorf("deleted file %s: %w", fe.Reg.GetName(), err)
	}
	return f, err
}
func (regKind) fown(pl *plan, fe *fdinfo.FileEntry) *fown.FownEntry { return fe.Reg.GetFown() }
func (regKind) flags(pl *plan, fe *fdinfo.FileEntry) uint32         { return fe.Reg.GetFlags() }

type pipeKind struct{}

func (pipeKind) check(pl *plan, p *procPlan, fd *fdinfo.FdinfoEntry, fe *fdinfo.FileEntry, what string, files map[uint32]string) error {
	if fe.Pipe == nil {
		return noEntry(what, fe)
	}
	return nil
}
func (pipeKind) open(d *descriptions, pl *plan, fe *fdinfo.FileEntry) (*os.File, error) {
	return d.openPipe(pl, fe.Pipe.GetPipeId(), fe.Pipe.GetFlags())
}
func (pipeKind) fown(pl *plan, fe *fdinfo.FileEntry) *fown.FownEntry { return fe.Pipe.GetFown() }
func (pipeKind) flags(pl *plan, fe *fdinfo.FileEntry) uint32         { return fe.Pipe.GetFlags() }

type fifoKind struct{}

// reg is the reg entry of a FIFO: its path, flags and owner.
func (fifoKind) reg(pl *plan, fe *fdinfo.FileEntry) *regfile.RegFileEntry {
	if r := pl.files[fe.Fifo.GetRegfId()]; r != nil {
		return r.Reg
	}
	return nil
}
func (k fifoKind) check(pl *plan, p *procPlan, fd *fdinfo.FdinfoEntry, fe *fdinfo.FileEntry, what string, files map[uint32]string) error {
	if fe.Fifo == nil {
		return noEntry(what, fe)
	}
	if k.reg(pl, fe) == nil {
		return fmt.Errorf("%s: FIFO file id %d: its path (file id %d) is not in files.img", what, fe.GetId(), fe.Fifo.GetRegfId())
	}
	files[fe.Fifo.GetRegfId()] = what + " (FIFO)"
	return nil
}
func (k fifoKind) open(d *descriptions, pl *plan, fe *fdinfo.FileEntry) (*os.File, error) {
	reg := k.reg(pl, fe)
	if reg == nil {
		return nil, fmt.Errorf("FIFO file id %d: its path (file id %d) is not in files.img", fe.GetId(), fe.Fifo.GetRegfId())
	}
	path, err := d.regPath(pl, pl.files[fe.Fifo.GetRegfId()]) // a deleted FIFO's is made again: ghost.go
	if err != nil {
		return nil, err
	}
	return d.openFifo(pl, fe.Fifo.GetPipeId(), path, reg.GetFlags())
}
func (k fifoKind) fown(pl *plan, fe *fdinfo.FileEntry) *fown.FownEntry {
	return k.reg(pl, fe).GetFown()
}
func (k fifoKind) flags(pl *plan, fe *fdinfo.FileEntry) uint32 { return k.reg(pl, fe).GetFlags() }

type memfdKind struct{}

func (memfdKind) check(pl *plan, p *procPlan, fd *fdinfo.FdinfoEntry, fe *fdinfo.FileEntry, what string, files map[uint32]string) error {
	if fe.Memfd == nil || pl.memfds[uint64(fe.Memfd.GetInodeId())] == nil {
		return fmt.Errorf("%s: memfd inode of file id %d is not in memfd.img", what, fe.GetId())
	}
	return nil
}
func (memfdKind) open(d *descriptions, pl *plan, fe *fdinfo.FileEntry) (*os.File, error) {
	f, err := d.memfdReopen(pl, uint64(fe.Memfd.GetInodeId()), int(fe.Memfd.GetFlags()))
	if err != nil {
		return nil, err
	}
	if _, err := f.Seek(int64(fe.Memfd.GetPos()), 0); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
func (memfdKind) fown(pl *plan, fe *fdinfo.FileEntry) *fown.FownEntry { return fe.Memfd.GetFown() }
func (memfdKind) flags(pl *plan, fe *fdinfo.FileEntry) uint32         { return fe.Memfd.GetFlags() }

// armDescriptions gives the descriptions of armer kinds their last state, from imgtool,
// just before the tree runs.
func (r *restorer) armDescriptions() error {
	for _, id := range usedFiles(r.pl) {
		fe := r.pl.files[id]
		a, ok := fdKinds[fe.GetType()].(armer)
		if !ok {
			continue
		}
		f := r.descs.armed[id]
		if f == nil {
			f = r.descs.owned[id]
		}
		if f == nil {
			return fmt.Errorf("file id %d: its description was not kept", id)
		}
		if err := a.arm(f, fe); err != nil {
			return err
		}
	}
	return nil
}

// openReg opens a regular file, directory or device at its saved offset.
func openReg(name string, flags uint32, pos uint64) (*os.File, error) {
	f, err := openNamed(name, openFlags(flags))
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", name, err)
	}
	if pos != 0 {
		if _, err := unix.Seek(int(f.Fd()), int64(pos), 0); err != nil {
			f.Close()
			return nil, fmt.Errorf("%s: seeking to %d: %w", name, pos, err)
		}
	}
	return f, nil
}

// ownHandle is how regPath names a file restore holds a handle of (a deleted file made
// again, a file reached through its link): the handle's /proc/self/fd link.
const ownHandle = "/proc/self/fd/"

// openNamed opens name with flags. A file named by the /proc/self/fd link of a handle
// of ours (ownHandle) that is to be opened O_NOFOLLOW, as Python's tempfile.mkstemp
// opens the file of a multiprocessing.Value before deleting it, is opened by its file
// handle instead: the kernel will not follow that link with O_NOFOLLOW (ELOOP), and the
// flag must stay in the description, where F_GETFL shows it. A file of several names
// then shows the one the kernel picks.
func openNamed(name string, flags int) (*os.File, error) {
	if flags&unix.O_NOFOLLOW == 0 || !strings.HasPrefix(name, ownHandle) {
		return os.OpenFile(name, flags, 0)
	}
	// Any description of the file tells open_by_handle_at the mount (O_PATH does not).
	anchor, err := os.OpenFile(name, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer anchor.Close()
	h, _, err := unix.NameToHandleAt(int(anchor.Fd()), "", unix.AT_EMPTY_PATH)
	if err != nil {
		return nil, fmt.Errorf("%s with O_NOFOLLOW: its file handle: %w", name, err)
	}
	fd, err := unix.OpenByHandleAt(int(anchor.Fd()), h, flags)
	if err != nil {
		return nil, fmt.Errorf("%s with O_NOFOLLOW: open_by_handle_at: %w", name, err)
	}
	return os.NewFile(uintptr(fd), name), nil
}

// openPipe returns the end of pipe pipeID the flags ask for, creating the pipe, with its
// queued data, on first use.
func (d *descriptions) openPipe(pl *plan, pipeID uint32, flags uint32) (*os.File, error) {
	pp := d.pipes[pipeID]
	if pp == nil {
		var fds [2]int
		if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
			return nil, fmt.Errorf("creating pipe %d: %w", pipeID, err)
		}
		pp = &pipePair{ends: [2]*os.File{
			os.NewFile(uintptr(fds[0]), fmt.Sprintf("pipe:[%d] read end", pipeID)),
			os.NewFile(uintptr(fds[1]), fmt.Sprintf("pipe:[%d] write end", pipeID)),
		}}
		d.pipes[pipeID] = pp
		if err := fillPipe(pp.ends[1], pl.pipeData[pipeID], pl.pipeSize[pipeID], pipeID); err != nil {
			return nil, err
		}
	}
	end := 0
	if flags&unix.O_ACCMODE == unix.O_WRONLY {
		end = 1
	}
	return takeEnd(pp.ends[end], &pp.used[end], flags)
}

// takeEnd returns a new file for a pipe end: the end itself the first time, a reopening of
// it (a new description of the same pipe) afterwards; with the description's flags.
func takeEnd(f *os.File, used *bool, flags uint32) (*os.File, error) {
	var out *os.File
	if !*used {
		*used = true
		fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return nil, err
		}
		out = os.NewFile(uintptr(fd), f.Name())
	} else {
		var err error
		out, err = os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", f.Fd()), openFlags(flags)|unix.O_NONBLOCK, 0)
		if err != nil {
			return nil, fmt.Errorf("reopening %s: %w", f.Name(), err)
		}
	}
	if err := setStatusFlags(out, flags); err != nil {
		out.Close()
		return nil, err
	}
	return out, nil
}

// setStatusFlags sets the file status flags (O_NONBLOCK, O_APPEND, ...) of a description,
// but O_ASYNC (see setAsync).
func setStatusFlags(f *os.File, flags uint32) error {
	if _, err := unix.FcntlInt(f.Fd(), unix.F_SETFL, int(flags)&(settableFlags&^unix.O_ASYNC)); err != nil {
		return fmt.Errorf("%s: setting flags %#x: %w", f.Name(), flags, err)
	}
	return nil
}

// fillPipe queues data in a pipe through its write end, growing the pipe if needed.
func fillPipe(w *os.File, data []byte, size uint32, pipeID uint32) error {
	// The buffer size is the program's (F_SETPIPE_SZ), saved with the data even when no
	// data is queued; at least room for what is.
	want := max(int(size), len(data))
	if cur, err := unix.FcntlInt(w.Fd(), unix.F_GETPIPE_SZ, 0); err == nil && want > 0 && cur != want {
		if _, err := unix.FcntlInt(w.Fd(), unix.F_SETPIPE_SZ, want); err != nil {
			return fmt.Errorf("pipe %d: buffer of %d bytes (%d queued): %w", pipeID, want, len(data), err)
		}
	}
	if len(data) == 0 {
		return nil
	}
	if _, err := unix.FcntlInt(w.Fd(), unix.F_SETFL, unix.O_NONBLOCK); err != nil {
		return err
	}
	if n, err := unix.Write(int(w.Fd()), data); err != nil || n != len(data) {
		return fmt.Errorf("pipe %d: queueing %d bytes: wrote %d: %v", pipeID, len(data), n, err)
	}
	return nil
}

// openFifo opens the named FIFO with the description's flags. The first open of each FIFO
// also opens a reading and writing end of ours (so that no open blocks and the queued data
// has a pipe to wait in) and queues the saved data through it.
func (d *descriptions) openFifo(pl *plan, pipeID uint32, name string, flags uint32) (*os.File, error) {
	if d.fifos[pipeID] == nil {
		keep, err := os.OpenFile(name, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("opening FIFO %s: %w", name, err)
		}
		d.fifos[pipeID] = keep
		if err := fillPipe(keep, pl.fifoData[pipeID], pl.pipeSize[pipeID], pipeID); err != nil {
			return nil, fmt.Errorf("FIFO %s: %w", name, err)
		}
	}
	f, err := openNamed(name, openFlags(flags)|unix.O_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("opening FIFO %s: %w", name, err)
	}
	if err := setStatusFlags(f, flags); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// memfdInode returns the memfd of a saved memfd inode, created and filled on first use.
func (d *descriptions) memfdInode(pl *plan, ino uint64) (*os.File, error) {
	if f := d.memfds[ino]; f != nil {
		return f, nil
	}
	m := pl.memfds[ino]
	if m == nil {
		return nil, fmt.Errorf("memfd inode %d is not in memfd.img", ino)
	}
	f, err := newMemfd(pl, m.GetName(), uint64(m.GetShmid()), m.GetSize())
	if err != nil {
		return nil, err
	}
	fd := int(f.Fd())
	if err := unix.Fchmod(fd, m.GetMode()&07777); err != nil {
		f.Close()
		return nil, fmt.Errorf("memfd %s: %w", m.GetName(), err)
	}
	if err := unix.Fchown(fd, int(m.GetUid()), int(m.GetGid())); err != nil {
		f.Close()
		return nil, fmt.Errorf("memfd %s: %w", m.GetName(), err)
	}
	if s := m.GetSeals(); s != 0 {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, int(s)); err != nil {
			f.Close()
			return nil, fmt.Errorf("memfd %s: sealing: %w", m.GetName(), err)
		}
	}
	d.memfds[ino] = f
	return f, nil
}

// newMemfd creates a memfd of size bytes holding the pages saved for shmid.
func newMemfd(pl *plan, name string, shmid, size uint64) (*os.File, error) {
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("creating memfd %q: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), "memfd:"+name)
	if err := f.Truncate(int64(size)); err != nil {
		f.Close()
		return nil, fmt.Errorf("memfd %q: %w", name, err)
	}
	pm, err := pl.shmemPageMap(shmid)
	if err != nil || pm == nil {
		if err != nil {
			f.Close()
		}
		return f, err
	}
	pname := fmt.Sprintf("pages-%d.img", pm.Head.GetPagesId())
	err = streamRuns(pl.src, pname, pageRuns(pm), func(segs []segment) error {
		for _, s := range segs {
			if err := fillShmem(f, size, s.addr, s.b); err != nil {
				return fmt.Errorf("memfd %q: %w", name, err)
			}
		}
		return nil
	}, nil, false)
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// fillShmem writes saved bytes at off of a shmem object of size bytes. The last page is
// saved whole (CRIU reads it through a mapping): its bytes past the end of the object are
// written through a mapping too, where a mapping of the process will find them.
func fillShmem(f *os.File, size, off uint64, b []byte) error {
	end := off + uint64(len(b))
	if end > (size+image.PageSize-1)&^(image.PageSize-1) {
		return fmt.Errorf("saved page at %#x beyond its size %d", off, size)
	}
	if off < size {
		n := min(end, size) - off
		if _, err := f.WriteAt(b[:n], int64(off)); err != nil {
			return err
		}
		b, off = b[n:], size
	}
	if len(b) == 0 {
		return nil
	}
	page := off &^ (image.PageSize - 1)
	m, err := unix.Mmap(int(f.Fd()), int64(page), image.PageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("mapping its last page: %w", err)
	}
	copy(m[off-page:], b)
	return unix.Munmap(m)
}

// memfdReopen returns a new description of a memfd inode opened with flags.
func (d *descriptions) memfdReopen(pl *plan, ino uint64, flags int) (*os.File, error) {
	f, err := d.memfdInode(pl, ino)
	if err != nil {
		return nil, err
	}
	return os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", f.Fd()), openFlags(uint32(flags)), 0)
}

// anonShared returns a description of the shared anonymous memory shmid (older images:
// VMA_ANON_SHARED), created as a memfd as large as its largest mapping.
func (d *descriptions) anonShared(pl *plan, shmid uint64, procs []*procPlan) (*os.File, error) {
	f := d.shm[shmid]
	if f == nil {
		var size uint64
		for _, p := range procs {
			for _, v := range p.mm.Vmas {
				if v.GetStatus()&image.VMAAnonShared != 0 && v.GetShmid() == shmid {
					size = max(size, v.GetPgoff()+v.GetEnd()-v.GetStart())
				}
			}
		}
		var err error
		if f, err = newMemfd(pl, "imgtool-shmem", shmid, size); err != nil {
			return nil, err
		}
		d.shm[shmid] = f
	}
	return os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", f.Fd()), unix.O_RDWR|unix.O_CLOEXEC, 0)
}
