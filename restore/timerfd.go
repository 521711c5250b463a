package restore

import (
	"fmt"
	"os"
	"unsafe"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fown"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/timerfd"
	"golang.org/x/sys/unix"
)

// tfdIocSetTicks is TFD_IOC_SET_TICKS: _IOW('T', 0, u64).
const tfdIocSetTicks = 0x40085400

// timerfdKind is a timerfd. It is created disarmed with the description; it is armed (armer)
// from imgtool once the whole tree exists, just before it runs, with the time that was left
// (timerfd_entry's it_value is relative even for an absolute timer), its interval and its
// unread expiries (TFD_IOC_SET_TICKS, which also wakes an epoll watching it). An absolute
// timer (TFD_TIMER_ABSTIME) is armed at the clock's current time plus what was left,
// nanoseconds carried (CRIU 4.2 adds the seconds only and can fire up to a second early),
// and keeps TFD_TIMER_CANCEL_ON_SET. A timer that was disarmed stays so. A periodic timer
// saved with no time left but unread expiries (an expired one CRIU's dump did not move on)
// is armed one interval from now.
type timerfdKind struct{}

// Settime flags timerfd_settime accepts.
const timerfdSettimeFlags = unix.TFD_TIMER_ABSTIME | unix.TFD_TIMER_CANCEL_ON_SET

func (timerfdKind) check(pl *plan, p *procPlan, fd *fdinfo.FdinfoEntry, fe *fdinfo.FileEntry, what string, files map[uint32]string) error {
	t := fe.Tfd
	if t == nil {
		return noEntry(what, fe)
	}
	if t.GetSettimeFlags()&^timerfdSettimeFlags != 0 {
		return fmt.Errorf("%s: timerfd settime flags %#x: unknown", what, t.GetSettimeFlags())
	}
	if t.GetVnsec() >= 1e9 || t.GetInsec() >= 1e9 || int64(t.GetVsec()) < 0 || int64(t.GetIsec()) < 0 {
		return fmt.Errorf("%s: timerfd times out of range", what)
	}
	switch t.GetClockid() {
	case unix.CLOCK_REALTIME, unix.CLOCK_MONOTONIC, unix.CLOCK_BOOTTIME, unix.CLOCK_REALTIME_ALARM, unix.CLOCK_BOOTTIME_ALARM:
	default:
		return fmt.Errorf("%s: timerfd clock %d: not a clock timerfd_create takes", what, t.GetClockid())
	}
	return nil
}

func (timerfdKind) open(d *descriptions, pl *plan, fe *fdinfo.FileEntry) (*os.File, error) {
	fd, err := unix.TimerfdCreate(int(fe.Tfd.GetClockid()), unix.TFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("creating timerfd (file id %d, clock %d): %w", fe.GetId(), fe.Tfd.GetClockid(), err)
	}
	f := os.NewFile(uintptr(fd), fmt.Sprintf("timerfd (file id %d)", fe.GetId()))
	if err := setStatusFlags(f, fe.Tfd.GetFlags()); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func (timerfdKind) fown(pl *plan, fe *fdinfo.FileEntry) *fown.FownEntry { return fe.Tfd.GetFown() }
func (timerfdKind) flags(pl *plan, fe *fdinfo.FileEntry) uint32         { return fe.Tfd.GetFlags() }

// arm sets the timer and its unread expiries.
func (timerfdKind) arm(f *os.File, fe *fdinfo.FileEntry) error {
	t := fe.Tfd
	var its unix.ItimerSpec
	its.Interval = unix.Timespec{Sec: int64(t.GetIsec()), Nsec: int64(t.GetInsec())}
	its.Value = unix.Timespec{Sec: int64(t.GetVsec()), Nsec: int64(t.GetVnsec())}
	flags := int(t.GetSettimeFlags())
	stopped := its.Value.Sec == 0 && its.Value.Nsec == 0
	if stopped && t.GetTicks() > 0 && (its.Interval.Sec != 0 || its.Interval.Nsec != 0) {
		// A periodic timer that had expired and was not read since: CRIU's dump saves it
		// so (imgtool's moves it on first). Its phase is lost; it goes on one interval
		// from now rather than stop.
		its.Value, flags = its.Interval, 0
	} else if stopped {
		flags = 0 // disarmed: a zero value disarms whatever the flags
	} else if flags&unix.TFD_TIMER_ABSTIME != 0 {
		var now unix.Timespec
		if err := unix.ClockGettime(int32(t.GetClockid()), &now); err != nil {
			return fmt.Errorf("%s: reading clock %d: %w", f.Name(), t.GetClockid(), err)
		}
		its.Value.Sec += now.Sec
		its.Value.Nsec += now.Nsec
		if its.Value.Nsec >= 1e9 {
			its.Value.Sec++
			its.Value.Nsec -= 1e9
		}
	}
	if err := unix.TimerfdSettime(int(f.Fd()), flags, &its, nil); err != nil {
		return fmt.Errorf("%s: arming: %w", f.Name(), err)
	}
	if ticks := t.GetTicks(); ticks != 0 {
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), tfdIocSetTicks, uintptr(unsafe.Pointer(&ticks))); e != 0 {
			return fmt.Errorf("%s: setting %d unread expiries (TFD_IOC_SET_TICKS): %w", f.Name(), ticks, e)
		}
	}
	return nil
}

// loadLegacy reads timerfd.img, which CRIU versions before files.img wrote.
func (timerfdKind) loadLegacy(pl *plan) error {
	return loadLegacy(pl, "timerfd.img", fdinfo.FdTypes_TIMERFD,
		func(e *timerfd.TimerfdEntry) uint32 { return e.GetId() },
		func(fe *fdinfo.FileEntry, e *timerfd.TimerfdEntry) { fe.Tfd = e })
}
