package restore

import (
	"fmt"
	"os"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/eventfd"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fown"
	"golang.org/x/sys/unix"
)

// efdSemaphore is EFD_SEMAPHORE, which imgtool's dump keeps in bit 0 of
// eventfd_file_entry.flags (see dump/eventfd.go); CRIU's own dumps never set it.
const efdSemaphore = 1

// eventfdKind is an eventfd: created with its counter and mode, then its status flags.
type eventfdKind struct{}

func (eventfdKind) check(pl *plan, p *procPlan, fd *fdinfo.FdinfoEntry, fe *fdinfo.FileEntry, what string, files map[uint32]string) error {
	if fe.Efd == nil {
		return noEntry(what, fe)
	}
	if fe.Efd.GetCounter() == ^uint64(0) {
		return fmt.Errorf("%s: eventfd counter %#x is beyond the largest an eventfd holds", what, fe.Efd.GetCounter())
	}
	return nil
}

func (eventfdKind) open(d *descriptions, pl *plan, fe *fdinfo.FileEntry) (*os.File, error) {
	e := fe.Efd
	flags := unix.EFD_CLOEXEC | unix.EFD_NONBLOCK
	if e.GetFlags()&efdSemaphore != 0 {
		flags |= unix.EFD_SEMAPHORE
	}
	// eventfd2 takes an unsigned int: a larger counter is written instead.
	fd, err := unix.Eventfd(0, flags)
	if err != nil {
		return nil, fmt.Errorf("creating eventfd (file id %d): %w", fe.GetId(), err)
	}
	f := os.NewFile(uintptr(fd), fmt.Sprintf("eventfd (file id %d)", fe.GetId()))
	if c := e.GetCounter(); c != 0 {
		if _, err := unix.Write(fd, le.AppendUint64(nil, c)); err != nil {
			f.Close()
			return nil, fmt.Errorf("%s: setting the counter to %d: %w", f.Name(), c, err)
		}
	}
	if err := setStatusFlags(f, e.GetFlags()); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func (eventfdKind) fown(pl *plan, fe *fdinfo.FileEntry) *fown.FownEntry { return fe.Efd.GetFown() }
func (eventfdKind) flags(pl *plan, fe *fdinfo.FileEntry) uint32         { return fe.Efd.GetFlags() }

// loadLegacy reads eventfd.img, which CRIU versions before files.img wrote.
func (eventfdKind) loadLegacy(pl *plan) error {
	return loadLegacy(pl, "eventfd.img", fdinfo.FdTypes_EVENTFD,
		func(e *eventfd.EventfdFileEntry) uint32 { return e.GetId() },
		func(fe *fdinfo.FileEntry, e *eventfd.EventfdFileEntry) { fe.Efd = e })
}
