package restore

import (
	"fmt"
	"os"
	"unsafe"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fown"
	"golang.org/x/sys/unix"
)

// File owners (F_SETOWN), their signal (F_SETSIG) and O_ASYNC, as CRIU 4.2 records them:
// fown_entry {uid, euid, signum, pid_type, pid} in the reg, pipe and memfd file entries
// (a FIFO's in the reg entry its regf_id names), O_ASYNC among the entry's flags. The
// three are restored at different moments, each for its own reason:
//
//   - F_SETSIG in imgtool, as the description is created: it belongs to the description.
//   - O_ASYNC in the process, on its own fd number, once the fd is in place (setAsync):
//     the kernel remembers the fd number that turned it on and reports it as si_fd.
//   - The owner last, in imgtool, once every process and thread of the tree exists (an
//     owner may be any of them), with the saved uid and euid (setOwners): the kernel
//     records the caller's uid and euid with the owner and checks them before each signal.

// ownerOf returns the fown_entry of a file entry, or nil.
func ownerOf(pl *plan, fe *fdinfo.FileEntry) *fown.FownEntry {
	if k := fdKinds[fe.GetType()]; k != nil {
		return k.fown(pl, fe)
	}
	return nil
}

// statusFlags returns the saved open flags of a file entry's description.
func statusFlags(pl *plan, fe *fdinfo.FileEntry) uint32 {
	if k := fdKinds[fe.GetType()]; k != nil {
		return k.flags(pl, fe)
	}
	return 0
}

// setSignal sets the description's F_SETSIG signal.
func setSignal(f *os.File, own *fown.FownEntry) error {
	if own.GetSignum() == 0 {
		return nil
	}
	if _, err := unix.FcntlInt(f.Fd(), unix.F_SETSIG, int(own.GetSignum())); err != nil {
		return fmt.Errorf("%s: F_SETSIG %d: %w", f.Name(), own.GetSignum(), err)
	}
	return nil
}

// setAsync turns O_ASYNC on for the description of file id through fd, p's own number of
// it, once per description (the first fd restored that has it).
func (r *restorer) setAsync(p *process, id uint32, fd uint64) error {
	fe := r.pl.files[id]
	flags := statusFlags(r.pl, fe)
	if flags&unix.O_ASYNC == 0 || r.descs.async[id] {
		return nil
	}
	r.descs.async[id] = true
	if _, err := p.leader().syscall(unix.SYS_FCNTL, fd, unix.F_SETFL, uint64(flags&settableFlags)); err != nil {
		return fmt.Errorf("fd %d: O_ASYNC: %w", fd, err)
	}
	return nil
}

// setOwners gives every description with a saved owner that owner. It runs on the tracer
// thread once the whole tree exists.
func (r *restorer) setOwners() error {
	for _, id := range usedFiles(r.pl) {
		own := ownerOf(r.pl, r.pl.files[id])
		f := r.descs.owned[id]
		if own.GetPid() == 0 || f == nil {
			continue
		}
		if err := setOwner(f, own); err != nil {
			return fmt.Errorf("file id %d: %w", id, err)
		}
	}
	return nil
}

// setOwner sets F_SETOWN_EX as the saved uid and euid. Only this OS thread (the tracer's,
// locked and never handed back to the Go scheduler) changes its ids, and only around the
// one call; if it could not get its own back, the error ends the restore and the thread
// ends with its goroutine. Without CAP_SETUID only imgtool's own ids can be restored.
func setOwner(f *os.File, own *fown.FownEntry) error {
	ex := struct{ Type, Pid int32 }{int32(own.GetPidType()), int32(own.GetPid())} // struct f_owner_ex
	ruid, euid := uint32(os.Getuid()), uint32(os.Geteuid())
	switched := own.GetUid() != ruid || own.GetEuid() != euid
	if switched {
		if err := setresuid(own.GetUid(), own.GetEuid()); err != nil {
			return fmt.Errorf("owner of %s set by uid %d euid %d: %w", f.Name(), own.GetUid(), own.GetEuid(), err)
		}
	}
	_, _, e := unix.Syscall(unix.SYS_FCNTL, f.Fd(), unix.F_SETOWN_EX, uintptr(unsafe.Pointer(&ex)))
	if switched {
		if err := setresuid(ruid, euid); err != nil {
			return fmt.Errorf("taking back imgtool's ids: %w", err)
		}
	}
	if e != 0 {
		return fmt.Errorf("%s: owner %d (type %d): %w", f.Name(), ex.Pid, ex.Type, e)
	}
	return nil
}

// setresuid changes the real and effective uid of the calling thread only (the saved one
// stays, so that the thread can take its ids back).
func setresuid(ruid, euid uint32) error {
	keep := ^uintptr(0)
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(ruid), uintptr(euid), keep); e != 0 {
		return e
	}
	return nil
}
