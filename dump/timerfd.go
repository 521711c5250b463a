package dump

import (
	"fmt"
	"strconv"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fown"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/timerfd"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// timerfdKind is a timerfd, from its fdinfo as CRIU reads it:
//
//	clockid: 1
//	ticks: 0
//	settime flags: 01
//	it_value: (0, 49406829)
//	it_interval: (1, 0)
//
// it_value is the time left until the next expiry, relative even for an absolute timer
// (TFD_TIMER_ABSTIME in settime flags): the restore adds the clock's time then. ticks are
// the expiries not yet read. The tree is stopped, so nothing reads them meanwhile.
type timerfdKind struct{}

func (timerfdKind) typ() fdinfo.FdTypes      { return fdinfo.FdTypes_TIMERFD }
func (timerfdKind) check(int, *fdDesc) error { return nil }

func (timerfdKind) entry(s *setState, r fdRef, fe *fdinfo.FileEntry, flags uint32, own *fown.FownEntry) error {
	// An expired periodic timer is only moved on to its next expiry (its missed expiries
	// counted) when it is read or timerfd_gettime is called; until then its fdinfo shows
	// no time left and one tick, and a restore from that would leave it stopped (CRIU's
	// does). timerfd_gettime on the description does what the process's next read would
	// do first, and changes nothing else.
	local, err := unix.PidfdGetfd(r.pidfd, r.f.fd, 0)
	if err != nil {
		return r.errorf("pidfd_getfd: %v", err)
	}
	var cur unix.ItimerSpec
	err = unix.TimerfdGettime(local, &cur)
	unix.Close(local)
	if err != nil {
		return r.errorf("timerfd_gettime: %v", err)
	}
	lines, err := fdinfoLines(r.pid, r.f.fd)
	if err != nil {
		return err
	}
	field := func(key string, base int) (uint64, error) {
		v, ok := fdinfoField(lines, key)
		if !ok {
			return 0, r.errorf("no %q in its fdinfo", key)
		}
		n, err := strconv.ParseUint(v, base, 64)
		if err != nil {
			return 0, r.errorf("%s %q: %v", key, v, err)
		}
		return n, nil
	}
	pair := func(key string) (uint64, uint64, error) {
		v, ok := fdinfoField(lines, key)
		var a, b uint64
		if !ok {
			return 0, 0, r.errorf("no %q in its fdinfo", key)
		}
		if _, err := fmt.Sscanf(v, "(%d, %d)", &a, &b); err != nil {
			return 0, 0, r.errorf("%s %q: %v", key, v, err)
		}
		return a, b, nil
	}
	clock, err := field("clockid", 10)
	if err != nil {
		return err
	}
	ticks, err := field("ticks", 10)
	if err != nil {
		return err
	}
	stFlags, err := field("settime flags", 8)
	if err != nil {
		return err
	}
	vsec, vnsec, err := pair("it_value")
	if err != nil {
		return err
	}
	isec, insec, err := pair("it_interval")
	if err != nil {
		return err
	}
	fe.Tfd = &timerfd.TimerfdEntry{Id: proto.Uint32(fe.GetId()), Flags: proto.Uint32(flags), Fown: own,
		Clockid: proto.Uint32(uint32(clock)), Ticks: proto.Uint64(ticks), SettimeFlags: proto.Uint32(uint32(stFlags)),
		Vsec: proto.Uint64(vsec), Vnsec: proto.Uint64(vnsec), Isec: proto.Uint64(isec), Insec: proto.Uint64(insec)}
	return nil
}
