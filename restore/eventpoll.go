package restore

import (
	"fmt"
	"os"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/eventpoll"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fown"
	"golang.org/x/sys/unix"
)

// eventpollKind is an epoll instance. It is created empty in imgtool; its targets are
// registered (EPOLL_CTL_ADD, with their saved events and data) by the first process of the
// tree that has it, once that process's fds are in place, under the fd numbers they were
// registered with: epoll keys a registration by file and number, so the process's
// EPOLL_CTL_MOD and DEL find it, and a signalfd target is polled for the signals of the
// process that registers it. The tfd numbers are those of the process that dumped the epoll,
// the first of the tree with it, for CRIU and imgtool alike; each must name an fd of that
// process of a kind restore supports (an epoll among them), or the set is refused. The
// kernel polls each target as it is added: what is ready is reported again, also to an
// edge-triggered registration that had already seen it.
type eventpollKind struct{}

// epollOwner is the first process of the tree with an fd of file id: the one that
// registers the epoll's targets.
func epollOwner(pl *plan, id uint32) *procPlan {
	for _, p := range pl.procs {
		for _, fd := range p.fds {
			if fd.GetId() == id {
				return p
			}
		}
	}
	return nil
}

// fdOf returns p's fd number n, or nil.
func fdOf(p *procPlan, n uint32) *fdinfo.FdinfoEntry {
	for _, fd := range p.fds {
		if fd.GetFd() == n {
			return fd
		}
	}
	return nil
}

func (eventpollKind) check(pl *plan, p *procPlan, fd *fdinfo.FdinfoEntry, fe *fdinfo.FileEntry, what string, files map[uint32]string) error {
	if fe.Epfd == nil {
		return noEntry(what, fe)
	}
	if epollOwner(pl, fe.GetId()) != p {
		return nil // registered by another process, checked there
	}
	for _, t := range fe.Epfd.GetTfd() {
		tfd := fdOf(p, t.GetTfd())
		if tfd == nil {
			return fmt.Errorf("%s: the epoll watches fd %d, which pid %d does not have: not supported", what, t.GetTfd(), p.pid)
		}
		if tfd.GetId() == fe.GetId() {
			return fmt.Errorf("%s: the epoll watches itself (fd %d)", what, t.GetTfd())
		}
		if fdKinds[tfd.GetType()] == nil {
			return fmt.Errorf("%s: the epoll watches fd %d, a %v: not supported", what, t.GetTfd(), tfd.GetType())
		}
	}
	return nil
}

func (eventpollKind) open(d *descriptions, pl *plan, fe *fdinfo.FileEntry) (*os.File, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("creating epoll (file id %d): %w", fe.GetId(), err)
	}
	f := os.NewFile(uintptr(fd), fmt.Sprintf("epoll (file id %d)", fe.GetId()))
	if err := setStatusFlags(f, fe.Epfd.GetFlags()); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func (eventpollKind) fown(pl *plan, fe *fdinfo.FileEntry) *fown.FownEntry { return fe.Epfd.GetFown() }
func (eventpollKind) flags(pl *plan, fe *fdinfo.FileEntry) uint32         { return fe.Epfd.GetFlags() }

// placed registers the epoll's targets, from the process that owns it, once.
func (eventpollKind) placed(r *restorer, p *process, fd *fdinfo.FdinfoEntry, fe *fdinfo.FileEntry) error {
	if epollOwner(r.pl, fe.GetId()) != p.pl || r.descs.registered[fe.GetId()] {
		return nil
	}
	r.descs.registered[fe.GetId()] = true
	for _, t := range fe.Epfd.GetTfd() {
		// struct epoll_event is packed on x86_64: events (u32), data (u64).
		if err := p.poke(p.scratch+scratchArgs, pack(t.GetEvents(), t.GetData())); err != nil {
			return err
		}
		if _, err := p.leader().syscall(unix.SYS_EPOLL_CTL, uint64(fd.GetFd()), unix.EPOLL_CTL_ADD,
			uint64(t.GetTfd()), p.scratch+scratchArgs); err != nil {
			return fmt.Errorf("fd %d: registering fd %d in the epoll (events %#x): %w", fd.GetFd(), t.GetTfd(), t.GetEvents(), err)
		}
	}
	return nil
}

// loadLegacy reads eventpoll.img and eventpoll-tfd.img (each target with the id of its
// epoll), which CRIU versions before files.img wrote; CRIU 4.2 writes the targets into
// eventpoll_file_entry.tfd.
func (eventpollKind) loadLegacy(pl *plan) error {
	err := loadLegacy(pl, "eventpoll.img", fdinfo.FdTypes_EVENTPOLL,
		func(e *eventpoll.EventpollFileEntry) uint32 { return e.GetId() },
		func(fe *fdinfo.FileEntry, e *eventpoll.EventpollFileEntry) { fe.Epfd = e })
	if err != nil || !pl.src.has("eventpoll-tfd.img") {
		return err
	}
	tfds, _, err := readEntries[eventpoll.EventpollTfdEntry](pl.src, "eventpoll-tfd.img")
	if err != nil {
		return err
	}
	for _, t := range tfds {
		fe := pl.files[t.GetId()]
		if fe == nil || fe.Epfd == nil {
			return fmt.Errorf("eventpoll-tfd.img: target fd %d of epoll file id %d, which is not in the set", t.GetTfd(), t.GetId())
		}
		fe.Epfd.Tfd = append(fe.Epfd.Tfd, t)
	}
	return nil
}
