package dump

import (
	"strconv"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fown"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/signalfd"
	"google.golang.org/protobuf/proto"
)

// signalfdKind is a signalfd: the signals it accepts, from its fdinfo ("sigmask: <hex>"),
// as signalfd_entry. The signals themselves are the reading process's, saved with it.
type signalfdKind struct{}

func (signalfdKind) typ() fdinfo.FdTypes      { return fdinfo.FdTypes_SIGNALFD }
func (signalfdKind) check(int, *fdDesc) error { return nil }

func (signalfdKind) entry(s *setState, r fdRef, fe *fdinfo.FileEntry, flags uint32, own *fown.FownEntry) error {
	lines, err := fdinfoLines(r.pid, r.f.fd)
	if err != nil {
		return err
	}
	v, ok := fdinfoField(lines, "sigmask")
	if !ok {
		return r.errorf("no sigmask in its fdinfo")
	}
	mask, err := strconv.ParseUint(v, 16, 64)
	if err != nil {
		return r.errorf("sigmask %q: %v", v, err)
	}
	fe.Sgfd = &signalfd.SignalfdEntry{Id: proto.Uint32(fe.GetId()), Flags: proto.Uint32(flags), Fown: own,
		Sigmask: proto.Uint64(mask)}
	return nil
}
