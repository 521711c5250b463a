package dump

import (
	"strconv"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/eventfd"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fown"
	"google.golang.org/protobuf/proto"
)

// efdSemaphore is EFD_SEMAPHORE. CRIU 4.2 does not record it (its own dumps lose it); the
// file's open flags never have this bit (an eventfd is always O_RDWR), so imgtool keeps it
// there, in eventfd_file_entry.flags. CRIU sets the flags with F_SETFL, which ignores the
// bit: CRIU restores such an eventfd as a plain counter.
const efdSemaphore = 1

// eventfdKind is an eventfd: its counter and its semaphore mode, from its fdinfo
// ("eventfd-count: <hex>", "eventfd-semaphore: 0|1"), as eventfd_file_entry.
type eventfdKind struct{}

func (eventfdKind) typ() fdinfo.FdTypes      { return fdinfo.FdTypes_EVENTFD }
func (eventfdKind) check(int, *fdDesc) error { return nil }

func (eventfdKind) entry(s *setState, r fdRef, fe *fdinfo.FileEntry, flags uint32, own *fown.FownEntry) error {
	lines, err := fdinfoLines(r.pid, r.f.fd)
	if err != nil {
		return err
	}
	v, ok := fdinfoField(lines, "eventfd-count")
	if !ok {
		return r.errorf("no eventfd-count in its fdinfo")
	}
	count, err := strconv.ParseUint(v, 16, 64)
	if err != nil {
		return r.errorf("eventfd-count %q: %v", v, err)
	}
	if v, _ := fdinfoField(lines, "eventfd-semaphore"); v == "1" {
		flags |= efdSemaphore
	}
	fe.Efd = &eventfd.EventfdFileEntry{Id: proto.Uint32(fe.GetId()), Flags: proto.Uint32(flags), Fown: own,
		Counter: proto.Uint64(count)}
	return nil
}
