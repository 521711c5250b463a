package dump

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/timer"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/imgtool/imgtool/internal/procfs"
)

// POSIX timers (timer_create) are listed by /proc/PID/timers: id, signal and sigev_value,
// notification (signal, none, or to one thread) and clock. Their times are not there: the
// process reads them itself, timer_gettime and timer_getoverrun injected like the other
// calls (injectAll). They are saved in task_core_entry.timers.posix as CRIU's
// posix_timer_entry, in the order /proc lists them.

const (
	sigevSignal   = 0
	sigevNone     = 1
	sigevThread   = 2
	sigevThreadID = 4
	itimerspecLen = 32 // struct itimerspec: interval {sec, nsec}, value {sec, nsec}
)

// posixTimer is one POSIX timer of a process.
type posixTimer struct {
	id, clock, signo, notify uint32
	sival                    uint64
	tid                      int32 // SIGEV_THREAD_ID: the thread signalled
	spec                     [4]uint64
	overrun                  uint32
}

// readPosixTimers parses /proc/PID/timers.
func readPosixTimers(pid int) ([]posixTimer, error) {
	b, err := os.ReadFile(procfs.Path(pid, "timers"))
	if err != nil {
		if os.IsNotExist(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("read POSIX timers of %d: %w", pid, err)
	}
	var out []posixTimer
	var cur *posixTimer
	bad := func(l string) error { return fmt.Errorf("POSIX timers of %d: line %q", pid, l) }
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		l := sc.Text()
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch k {
		case "ID":
			n, err := strconv.ParseUint(v, 10, 32)
			if err != nil {
				return nil, bad(l)
			}
			out = append(out, posixTimer{id: uint32(n)})
			cur = &out[len(out)-1]
		case "signal": // signo/sival_ptr (hex, or "(null)")
			if cur == nil {
				return nil, bad(l)
			}
			s, p, _ := strings.Cut(v, "/")
			n, err := strconv.ParseUint(s, 10, 32)
			if err != nil {
				return nil, bad(l)
			}
			cur.signo = uint32(n)
			if p != "(null)" && p != "" {
				if cur.sival, err = strconv.ParseUint(strings.TrimPrefix(p, "0x"), 16, 64); err != nil {
					return nil, bad(l)
				}
			}
		case "notify": // signal|none|thread / pid|tid . N
			if cur == nil {
				return nil, bad(l)
			}
			how, who, _ := strings.Cut(v, "/")
			kind, n, _ := strings.Cut(who, ".")
			switch {
			case kind == "tid":
				cur.notify = sigevThreadID
				t, err := strconv.ParseInt(n, 10, 32)
				if err != nil {
					return nil, bad(l)
				}
				cur.tid = int32(t)
			case how == "signal":
				cur.notify = sigevSignal
			case how == "none":
				cur.notify = sigevNone
			case how == "thread":
				cur.notify = sigevThread
			default:
				return nil, bad(l)
			}
		case "ClockID":
			if cur == nil {
				return nil, bad(l)
			}
			n, err := strconv.ParseInt(v, 10, 32)
			if err != nil {
				return nil, bad(l)
			}
			cur.clock = uint32(n)
		}
	}
	return out, nil
}

// readTimerValues injects timer_gettime (into the scratch at off) and timer_getoverrun
// for each timer of ps.
func (in *injector) readTimerValues(t *thread, ps *procState, off uint64) error {
	for i := range ps.posixTimers {
		pt := &ps.posixTimers[i]
		if _, err := in.call(t, unix.SYS_TIMER_GETTIME, uint64(pt.id), in.scratch+off+uint64(i)*itimerspecLen); err != nil {
			return fmt.Errorf("timer_gettime of timer %d: %w", pt.id, err)
		}
		n, err := in.call(t, unix.SYS_TIMER_GETOVERRUN, uint64(pt.id))
		if err != nil {
			return fmt.Errorf("timer_getoverrun of timer %d: %w", pt.id, err)
		}
		pt.overrun = uint32(n)
	}
	return nil
}

// posixTimerEntries converts the timers for task_core_entry.timers.posix.
func posixTimerEntries(ts []posixTimer) []*timer.PosixTimerEntry {
	var out []*timer.PosixTimerEntry
	for _, pt := range ts {
		e := &timer.PosixTimerEntry{
			ItId: proto.Uint32(pt.id), ClockId: proto.Uint32(pt.clock), SiSigno: proto.Uint32(pt.signo),
			ItSigevNotify: proto.Uint32(pt.notify), SivalPtr: proto.Uint64(pt.sival), Overrun: proto.Uint32(pt.overrun),
			Isec: proto.Uint64(pt.spec[0]), Insec: proto.Uint64(pt.spec[1]), Vsec: proto.Uint64(pt.spec[2]), Vnsec: proto.Uint64(pt.spec[3]),
		}
		if pt.notify == sigevThreadID {
			e.NotifyThreadId = proto.Int32(pt.tid)
		}
		out = append(out, e)
	}
	return out
}
