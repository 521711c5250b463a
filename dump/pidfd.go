package dump

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fown"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pidfd"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// A pidfd (pidfd_open, clone's CLONE_PIDFD; Go's os/exec keeps one for each child it
// starts) is saved as CRIU 4.2's pidfd_entry: the PID of the process it refers to, from
// its fdinfo ("Pid:"), or -1 for a process already reaped, its inode (two fds of one
// description, or of one process, share it) and flags (O_NONBLOCK: PIDFD_NONBLOCK). A
// restore opens it again on the restored process, so that process must be part of the
// tree, alive: a pidfd of a process outside the tree, or of a zombie, is refused in
// precheck (checkPidfds), as is a thread's (PIDFD_THREAD), which CRIU 4.2 refuses too.

// fdPidfd is the kind of a pidfd.
const fdPidfd = fdInotify + 1

// pidfdThread is PIDFD_THREAD (O_EXCL): a pidfd of one thread, not of its process.
const pidfdThread = unix.O_EXCL

type pidfdKind struct{}

func (pidfdKind) typ() fdinfo.FdTypes { return fdinfo.FdTypes_PIDFD }

// pidfdFlags are the status flags a restore's pidfd_open gives back (PIDFD_NONBLOCK).
const pidfdFlags = unix.O_RDWR | unix.O_NONBLOCK | unix.O_CLOEXEC

func (pidfdKind) check(pid int, f *fdDesc) error {
	switch {
	case f.info == nil:
	case f.info.Flags&pidfdThread != 0:
		return refuse(pid, f.fd, f.link, "a pidfd of a thread (PIDFD_THREAD): not supported")
	case f.info.Flags&^pidfdFlags != 0:
		return refuse(pid, f.fd, f.link, fmt.Sprintf("a pidfd with flags %#o (F_SETFL): a restore's pidfd_open gives back O_NONBLOCK only", f.info.Flags))
	}
	return nil
}

func (pidfdKind) entry(s *setState, r fdRef, fe *fdinfo.FileEntry, flags uint32, own *fown.FownEntry) error {
	if own.GetPid() != 0 { // seen only once the tree is stopped: the dump fails, the tree put back
		return r.errorf("a pidfd with an owner (F_SETOWN): not supported")
	}
	target, err := pidfdTarget(r.pid, r.f.fd)
	if err != nil {
		return r.errorf("%v", err)
	}
	if target != -1 && !s.live[target] { // changed since precheck: the dump fails, the tree put back
		return r.errorf("a pidfd of process %d, which is not a live process of the stopped tree", target)
	}
	fe.Pidfd = &pidfd.PidfdEntry{Id: proto.Uint32(fe.GetId()), Ino: proto.Uint32(uint32(r.f.st.Ino)),
		Flags: proto.Uint32(flags &^ unix.O_RDWR), Nspid: proto.Int32(int32(target)), Fown: own}
	return nil
}

// pidfdTarget returns the PID the pidfd fd of process pid refers to, -1 for a process
// that was reaped.
func pidfdTarget(pid, fd int) (int, error) {
	lines, err := fdinfoLines(pid, fd)
	if err != nil {
		return 0, err
	}
	v, ok := fdinfoField(lines, "Pid")
	if !ok {
		return 0, errors.New("no Pid in the fdinfo of a pidfd")
	}
	return strconv.Atoi(v)
}

// checkPidfds refuses a pidfd of a process the restore will not bring back alive: one
// outside the tree, or a zombie of it (a restore makes a zombie only at its end, dead).
func checkPidfds(procs []*liveProc, members []*liveProc, refused *Refusals) error {
	alive := map[int]bool{}
	for _, p := range procs {
		alive[p.pid] = true
	}
	for _, p := range procs {
		for _, f := range p.fds {
			if f.kind != fdPidfd || f.refused {
				continue
			}
			target, err := pidfdTarget(p.pid, f.fd)
			if err != nil {
				if vanished(err) {
					continue
				}
				return err
			}
			if target == -1 || alive[target] {
				continue
			}
			why := "a pidfd of process " + strconv.Itoa(target) + ", which is not part of the tree: a restore could not open it again"
			for _, m := range members {
				if m.pid == target {
					why = "a pidfd of process " + strconv.Itoa(target) + ", a zombie of the tree: a restore could not open it on the dead process"
				}
			}
			refused.add(refuse(p.pid, f.fd, f.link, why))
		}
	}
	return nil
}
