package restore

import (
	"fmt"
	"os"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fown"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/signalfd"
	"golang.org/x/sys/unix"
)

// signalfdKind is a signalfd, created with its mask. It reads the signals of whichever
// process reads it, so it can be created in imgtool; only an epoll watching it must be
// registered by the restored process itself (see eventpoll.go).
type signalfdKind struct{}

func (signalfdKind) check(pl *plan, p *procPlan, fd *fdinfo.FdinfoEntry, fe *fdinfo.FileEntry, what string, files map[uint32]string) error {
	if fe.Sgfd == nil {
		return noEntry(what, fe)
	}
	return nil
}

func (signalfdKind) open(d *descriptions, pl *plan, fe *fdinfo.FileEntry) (*os.File, error) {
	var mask unix.Sigset_t
	mask.Val[0] = fe.Sgfd.GetSigmask()
	fd, err := unix.Signalfd(-1, &mask, unix.SFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("creating signalfd (file id %d, mask %#x): %w", fe.GetId(), fe.Sgfd.GetSigmask(), err)
	}
	f := os.NewFile(uintptr(fd), fmt.Sprintf("signalfd (file id %d)", fe.GetId()))
	if err := setStatusFlags(f, fe.Sgfd.GetFlags()); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func (signalfdKind) fown(pl *plan, fe *fdinfo.FileEntry) *fown.FownEntry { return fe.Sgfd.GetFown() }
func (signalfdKind) flags(pl *plan, fe *fdinfo.FileEntry) uint32         { return fe.Sgfd.GetFlags() }

// loadLegacy reads signalfd.img, which CRIU versions before files.img wrote.
func (signalfdKind) loadLegacy(pl *plan) error {
	return loadLegacy(pl, "signalfd.img", fdinfo.FdTypes_SIGNALFD,
		func(e *signalfd.SignalfdEntry) uint32 { return e.GetId() },
		func(fe *fdinfo.FileEntry, e *signalfd.SignalfdEntry) { fe.Sgfd = e })
}
