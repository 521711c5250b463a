package restore

import (
	"errors"
	"fmt"
	"os"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fown"
	"golang.org/x/sys/unix"
)

// A pidfd (pidfd_entry, dump/pidfd.go) refers to a process of the tree, by PID, or to one
// already reaped (nspid -1). Its description is made once every process exists: each
// process that holds it gets it, in its first batch, at the description's slot, from
// which its fds are put in place as every other's (queueFds). Live: pidfd_open of the
// restored process. Reaped: pidfd_open of a process of imgtool's that is then killed and
// reaped, one for each saved inode, as CRIU's open_one_pidfd does, so that the pidfd
// reports the process gone (waitid and pidfd_send_signal fail with ESRCH, poll says
// POLLIN|POLLHUP).

type pidfdKind struct{}

func (pidfdKind) check(pl *plan, p *procPlan, fd *fdinfo.FdinfoEntry, fe *fdinfo.FileEntry, what string, files map[uint32]string) error {
	e := fe.Pidfd
	if e == nil {
		return noEntry(what, fe)
	}
	if e.GetFlags()&^unix.O_NONBLOCK != 0 {
		return fmt.Errorf("%s: a pidfd with flags %#o: only O_NONBLOCK is supported", what, e.GetFlags())
	}
	if e.GetFown().GetPid() != 0 {
		return fmt.Errorf("%s: a pidfd with an owner (F_SETOWN): not supported", what)
	}
	if n := e.GetNspid(); n != -1 && !pl.isLive(int(n)) {
		return fmt.Errorf("%s: a pidfd of process %d, which is not a live process of the set", what, n)
	}
	return nil
}

func (pidfdKind) open(*descriptions, *plan, *fdinfo.FileEntry) (*os.File, error) {
	return nil, errors.New("a pidfd is made once its process exists (pidfdFile)")
}
func (pidfdKind) fown(pl *plan, fe *fdinfo.FileEntry) *fown.FownEntry { return fe.Pidfd.GetFown() }
func (pidfdKind) flags(pl *plan, fe *fdinfo.FileEntry) uint32         { return fe.Pidfd.GetFlags() }

// pidfdFile returns the description of pidfd fe, made on first use (every process
// exists by then).
func (d *descriptions) pidfdFile(pl *plan, fe *fdinfo.FileEntry) (*os.File, error) {
	if f := d.pidfds[fe.GetId()]; f != nil {
		return f, nil
	}
	if d.pidfds == nil {
		d.pidfds = map[uint32]*os.File{}
	}
	e := fe.Pidfd
	if e.GetNspid() != -1 {
		f, err := openPidfd(int(e.GetNspid()), fe)
		if err != nil {
			return nil, err
		}
		d.pidfds[fe.GetId()] = f
		return f, nil
	}
	if err := d.openReaped(pl, e.GetIno()); err != nil {
		return nil, fmt.Errorf("pidfd of a reaped process: %w", err)
	}
	return d.pidfds[fe.GetId()], nil
}

// openPidfd opens a pidfd of process pid with the flags of fe.
func openPidfd(pid int, fe *fdinfo.FileEntry) (*os.File, error) {
	fd, err := unix.PidfdOpen(pid, int(fe.Pidfd.GetFlags())&unix.O_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	return os.NewFile(uintptr(fd), fmt.Sprintf("pidfd of %d", fe.Pidfd.GetNspid())), nil
}

// openReaped makes every pidfd of the set saved with inode ino and no process (nspid
// -1): all of one process of imgtool's, killed and reaped before any is handed over, so
// that none ever shows a live or unreaped process.
func (d *descriptions) openReaped(pl *plan, ino uint32) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	null, err := os.Open(os.DevNull)
	if err != nil {
		return err
	}
	defer null.Close()
	p, err := os.StartProcess(exe, []string{exe, "--version"}, &os.ProcAttr{Files: []*os.File{null, null, null}})
	if err != nil {
		return err
	}
	defer p.Wait() // reaped once its pidfds exist (pidfd_open takes a zombie)
	defer p.Kill()
	for id, fe := range pl.files {
		if e := fe.GetPidfd(); e != nil && e.GetNspid() == -1 && e.GetIno() == ino && d.pidfds[id] == nil {
			f, err := openPidfd(p.Pid, fe)
			if err != nil {
				return err
			}
			d.pidfds[id] = f
		}
	}
	return nil
}
