package restore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	criu_core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/timer"
	"golang.org/x/sys/unix"
)

// POSIX timers (task_core_entry.timers.posix, CRIU's posix_timer_entry) are created in the
// leader once its threads exist (a SIGEV_THREAD_ID timer names one), each with its id:
// PR_TIMER_CREATE_RESTORE_IDS makes timer_create take the id it is given (Linux 6.14 and
// later); without it, timers are created in id order and the ones in between deleted, as
// CRIU does, which only works while the kernel hands ids out in order. They are armed
// last, just before the scratch area goes: a periodic timer keeps its interval, and its
// signals stay pending until the tree runs.

const (
	prTimerCreateRestoreIDs = 77
	sigeventLen             = 64 // struct sigevent: sigval, signo, notify, tid, padding
)

// createPosixTimers creates p's POSIX timers, disarmed, with their saved ids.
func (r *restorer) createPosixTimers(p *process, tc *criu_core.TaskCoreEntry) error {
	ts := slices.Clone(tc.GetTimers().GetPosix())
	if len(ts) == 0 {
		return nil
	}
	slices.SortFunc(ts, func(a, b *timer.PosixTimerEntry) int { return int(a.GetItId()) - int(b.GetItId()) })
	t := p.leader()
	_, err := t.syscall(unix.SYS_PRCTL, prTimerCreateRestoreIDs, 1)
	byID := err == nil
	if err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("PR_TIMER_CREATE_RESTORE_IDS: %w", err)
	}
	create := func(pt *timer.PosixTimerEntry, id uint32) (uint32, error) {
		sev := make([]byte, sigeventLen+4)
		binary.LittleEndian.PutUint64(sev[0:], pt.GetSivalPtr())
		binary.LittleEndian.PutUint32(sev[8:], pt.GetSiSigno())
		binary.LittleEndian.PutUint32(sev[12:], pt.GetItSigevNotify())
		binary.LittleEndian.PutUint32(sev[16:], uint32(pt.GetNotifyThreadId()))
		binary.LittleEndian.PutUint32(sev[sigeventLen:], id)
		if err := p.poke(p.scratch+scratchArgs, sev); err != nil {
			return 0, err
		}
		if _, err := t.syscall(unix.SYS_TIMER_CREATE, uint64(pt.GetClockId()), p.scratch+scratchArgs,
			p.scratch+scratchArgs+sigeventLen); err != nil {
			return 0, fmt.Errorf("timer_create of timer %d: %w", pt.GetItId(), err)
		}
		var got [4]byte
		if _, err := p.mem.ReadAt(got[:], int64(p.scratch+scratchArgs+sigeventLen)); err != nil {
			return 0, err
		}
		return binary.LittleEndian.Uint32(got[:]), nil
	}
	for _, pt := range ts {
		for {
			got, err := create(pt, pt.GetItId())
			if err != nil {
				return err
			}
			if got == pt.GetItId() {
				break
			}
			if byID || got > pt.GetItId() {
				return fmt.Errorf("POSIX timer %d: the kernel gave id %d", pt.GetItId(), got)
			}
			if _, err := t.syscall(unix.SYS_TIMER_DELETE, uint64(got)); err != nil {
				return err
			}
		}
	}
	if byID {
		if _, err := t.syscall(unix.SYS_PRCTL, prTimerCreateRestoreIDs, 0); err != nil {
			return fmt.Errorf("PR_TIMER_CREATE_RESTORE_IDS off: %w", err)
		}
	}
	return nil
}

// armPosixTimers sets the time left and the interval of every armed POSIX timer of p.
func (r *restorer) armPosixTimers(p *process, tc *criu_core.TaskCoreEntry) error {
	t := p.leader()
	for _, pt := range tc.GetTimers().GetPosix() {
		if pt.GetVsec() == 0 && pt.GetVnsec() == 0 {
			continue
		}
		if err := p.poke(p.scratch+scratchArgs, pack(pt.GetIsec(), pt.GetInsec(), pt.GetVsec(), pt.GetVnsec())); err != nil {
			return err
		}
		if _, err := t.syscall(unix.SYS_TIMER_SETTIME, uint64(pt.GetItId()), 0, p.scratch+scratchArgs, 0); err != nil {
			return fmt.Errorf("timer_settime of timer %d: %w", pt.GetItId(), err)
		}
	}
	return nil
}
