package dump

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unsafe"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/eventpoll"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fown"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// kcmpEpollTfd is KCMP_EPOLL_TFD: is the file at an fd the one an epoll registered?
const kcmpEpollTfd = 7

// eventpollKind is an epoll instance and every target registered in it, from its fdinfo,
// one line per target:
//
//	tfd:        6 events:       19 data:             1111  pos:0 ino:414 sdev:10
//
// tfd is the fd number the target was registered with (epoll keys a registration by file
// and number; the restore registers it again under that number, in the first process of
// the tree that has the epoll, as CRIU does). As in CRIU's eventpoll.c, each target must
// still be open at that number in the process dumping the epoll (kcmp KCMP_EPOLL_TFD
// tells): a target whose fd was closed or reused since (it stays registered while its file
// is open elsewhere) is refused, and so is a target of a kind the dump does not support.
// Targets are saved in eventpoll_file_entry.tfd (CRIU 4.2 no longer writes
// eventpoll-tfd.img), with the target's pos, inode and device as CRIU writes them.
type eventpollKind struct{}

func (eventpollKind) typ() fdinfo.FdTypes { return fdinfo.FdTypes_EVENTPOLL }

// epollTarget is one "tfd:" line of an epoll's fdinfo.
type epollTarget struct {
	tfd, toff     int // fd number; its index among the targets of the same number (kcmp's toff)
	events        uint32
	data          uint64
	pos, ino, dev uint64
	hasIno        bool
}

// epollTargets reads the targets of epoll fd of pid.
func epollTargets(pid, fd int) ([]epollTarget, error) {
	lines, err := fdinfoLines(pid, fd)
	if err != nil {
		return nil, err
	}
	var out []epollTarget
	seen := map[int]int{}
	for _, l := range lines {
		if l[0] != "tfd" {
			continue
		}
		t, err := parseEpollTarget(l[1])
		if err != nil {
			return nil, fmt.Errorf("process %d fd %d: fdinfo line %q: %w", pid, fd, "tfd: "+l[1], err)
		}
		t.toff = seen[t.tfd]
		seen[t.tfd]++
		out = append(out, t)
	}
	return out, nil
}

// parseEpollTarget parses what follows "tfd:".
func parseEpollTarget(s string) (epollTarget, error) {
	var t epollTarget
	f := strings.Fields(s)
	if len(f) == 0 {
		return t, errors.New("empty")
	}
	n, err := strconv.Atoi(f[0])
	if err != nil {
		return t, err
	}
	t.tfd = n
	vals := map[string]string{}
	for i := 1; i < len(f); i++ {
		k, v, _ := strings.Cut(f[i], ":")
		if v == "" && i+1 < len(f) {
			i++
			v = f[i]
		}
		vals[k] = v
	}
	num := func(key string, base int) (uint64, error) {
		v, ok := vals[key]
		if !ok {
			return 0, fmt.Errorf("no %s", key)
		}
		if base == 10 {
			n, err := strconv.ParseInt(v, 10, 64)
			return uint64(n), err
		}
		return strconv.ParseUint(v, base, 64)
	}
	ev, err := num("events", 16)
	if err != nil {
		return t, err
	}
	t.events = uint32(ev)
	if t.data, err = num("data", 16); err != nil {
		return t, err
	}
	if _, ok := vals["ino"]; ok {
		t.hasIno = true
		if t.pos, err = num("pos", 10); err != nil {
			return t, err
		}
		if t.ino, err = num("ino", 16); err != nil {
			return t, err
		}
		if t.dev, err = num("sdev", 16); err != nil {
			return t, err
		}
	}
	return t, nil
}

// check refuses an epoll whose targets cannot all be registered again exactly.
func (eventpollKind) check(pid int, f *fdDesc) error {
	targets, err := epollTargets(pid, f.fd)
	if err != nil {
		return err
	}
	for _, t := range targets {
		slot := struct{ efd, tfd, toff uint32 }{uint32(f.fd), uint32(t.tfd), uint32(t.toff)} // kcmp_epoll_slot
		r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(pid), uintptr(pid), kcmpEpollTfd, uintptr(t.tfd),
			uintptr(unsafe.Pointer(&slot)), 0)
		if (e == unix.EBADF || e == unix.ENOENT || (e == 0 && r != 0)) && !stillRegistered(pid, f.fd, t) {
			continue // changed meanwhile (the tree runs during precheck); checked again once stopped
		}
		switch {
		case e == unix.EBADF:
			return refuse(pid, f.fd, f.link, fmt.Sprintf("watches a file registered as fd %d, which is no longer open in this process (the file lives on elsewhere): not supported", t.tfd))
		case e == unix.ESRCH:
			return fmt.Errorf("process %d: %w", pid, e) // gone: precheck skips it
		case e != 0:
			return fmt.Errorf("process %d fd %d: kcmp of its target fd %d: %w", pid, f.fd, t.tfd, e)
		case r != 0:
			return refuse(pid, f.fd, f.link, fmt.Sprintf("watches a file registered as fd %d, but fd %d is now another file: not supported", t.tfd, t.tfd))
		}
		if _, err := inspectFd(pid, t.tfd); err != nil {
			var re *RefusedError
			if errors.As(err, &re) {
				return refuse(pid, f.fd, f.link, fmt.Sprintf("watches fd %d (%s), which cannot be dumped: %s", t.tfd, re.Resource, re.Reason))
			}
			return err
		}
	}
	return nil
}

// stillRegistered tells whether epoll efd of pid still lists target t as it was.
func stillRegistered(pid, efd int, t epollTarget) bool {
	now, err := epollTargets(pid, efd)
	if err != nil {
		return false
	}
	for _, n := range now {
		if n.tfd == t.tfd && n.toff == t.toff && n.data == t.data && n.ino == t.ino && n.dev == t.dev {
			return true
		}
	}
	return false
}

func (eventpollKind) entry(s *setState, r fdRef, fe *fdinfo.FileEntry, flags uint32, own *fown.FownEntry) error {
	targets, err := epollTargets(r.pid, r.f.fd)
	if err != nil {
		return err
	}
	e := &eventpoll.EventpollFileEntry{Id: proto.Uint32(fe.GetId()), Flags: proto.Uint32(flags), Fown: own}
	for _, t := range targets {
		te := &eventpoll.EventpollTfdEntry{Id: proto.Uint32(0), Tfd: proto.Uint32(uint32(t.tfd)),
			Events: proto.Uint32(t.events), Data: proto.Uint64(t.data)}
		if t.hasIno {
			te.Dev, te.Inode, te.Pos = proto.Uint32(uint32(t.dev)), proto.Uint64(t.ino), proto.Uint64(t.pos)
		}
		e.Tfd = append(e.Tfd, te)
	}
	fe.Epfd = e
	return nil
}
