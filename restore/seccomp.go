package restore

import (
	"encoding/binary"
	"fmt"

	criu_core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/seccomp"
	"golang.org/x/sys/unix"
)

// Seccomp (seccomp.img, CRIU's seccomp.c): a thread saved in strict mode enters it again
// (prctl PR_SET_SECCOMP); a thread saved in filter mode gets its filters again, oldest
// first: its core names its newest filter in seccomp.img, each filter the one installed
// before it (prev), and each is installed with seccomp(SECCOMP_SET_MODE_FILTER) and its
// saved flags (SECCOMP_FILTER_FLAG_TSYNC on a leader whose threads all had its filters: they
// get them with it). The filters are installed once the process's threads exist and
// before its credentials are restored (the caller's CAP_SYS_ADMIN stands for no_new_privs),
// and every thread is then traced with PTRACE_O_SUSPEND_SECCOMP, so that the calls
// injected afterwards pass; the suspension ends as the thread is let go.

const (
	seccompModeStrict    = 1
	seccompModeFilter    = 2
	seccompSetModeFilter = 1 // SECCOMP_SET_MODE_FILTER
	bpfMaxInsns          = 4096
	sockFilterLen        = 8
	maxSeccompFilters    = 1 << 16 // filters of one seccomp.img
	// the filter flags a set may ask for: TSYNC, LOG, SPEC_ALLOW (not NEW_LISTENER)
	seccompFlagsKnown = 1 | 2 | 4
)

// loadSeccomp reads seccomp.img (an old set may have none).
func loadSeccomp(src source) ([]*seccomp.SeccompFilter, error) {
	if !src.has("seccomp.img") {
		return nil, nil
	}
	es, _, err := readEntries[seccomp.SeccompEntry](src, "seccomp.img")
	if err != nil {
		return nil, err
	}
	var out []*seccomp.SeccompFilter
	for _, e := range es {
		out = append(out, e.SeccompFilters...)
	}
	if len(out) > maxSeccompFilters {
		return nil, fmt.Errorf("seccomp.img: %d filters, more than %d", len(out), maxSeccompFilters)
	}
	for i, f := range out {
		if n := len(f.Filter); n == 0 || n%sockFilterLen != 0 || n/sockFilterLen > bpfMaxInsns {
			return nil, fmt.Errorf("seccomp.img: filter %d is %d bytes, not 1 to %d instructions", i, n, bpfMaxInsns)
		}
		if f.Prev != nil && f.GetPrev() >= uint32(i) {
			return nil, fmt.Errorf("seccomp.img: filter %d follows filter %d, not an earlier one", i, f.GetPrev())
		}
		if f.GetFlags()&^seccompFlagsKnown != 0 {
			return nil, fmt.Errorf("seccomp.img: filter %d has flags %#x", i, f.GetFlags())
		}
	}
	return out, nil
}

// threadSeccomp returns a thread's saved mode and newest filter: the thread core's fields,
// or for the leader of an older image, the task core's.
func threadSeccomp(c *criu_core.CoreEntry, leader *criu_core.CoreEntry) (mode, filter uint32, hasFilter bool) {
	if tc := c.GetThreadCore(); tc.SeccompMode != nil {
		return uint32(tc.GetSeccompMode()), tc.GetSeccompFilter(), tc.SeccompFilter != nil
	}
	if c == leader && c.GetTc().OldSeccompMode != nil {
		return uint32(c.GetTc().GetOldSeccompMode()), c.GetTc().GetOldSeccompFilter(), c.GetTc().OldSeccompFilter != nil
	}
	return 0, 0, false
}

// seccompChain returns the filters a thread installs, oldest first.
func seccompChain(filters []*seccomp.SeccompFilter, newest uint32) ([]*seccomp.SeccompFilter, error) {
	if newest >= uint32(len(filters)) {
		return nil, fmt.Errorf("seccomp filter %d is not in seccomp.img (%d filters)", newest, len(filters))
	}
	var chain []*seccomp.SeccompFilter
	for i := newest; ; {
		f := filters[i]
		chain = append([]*seccomp.SeccompFilter{f}, chain...)
		if f.Prev == nil {
			return chain, nil
		}
		i = f.GetPrev() // loadSeccomp checked it is earlier: the walk ends
	}
}

// checkSeccomp checks each thread's saved seccomp state against the set's filters.
func checkSeccomp(pl *plan, p *procPlan) error {
	for i, c := range p.cores {
		mode, newest, has := threadSeccomp(c, p.leaderCore())
		switch mode {
		case 0, seccompModeStrict:
		case seccompModeFilter:
			if !has {
				return fmt.Errorf("thread %d: seccomp filter mode without a filter", p.tids[i])
			}
			if _, err := seccompChain(pl.seccomp, newest); err != nil {
				return fmt.Errorf("thread %d: %w", p.tids[i], err)
			}
		default:
			return fmt.Errorf("thread %d: unknown seccomp mode %d", p.tids[i], mode)
		}
	}
	return nil
}

// restoreSeccomp puts every thread of p back in its seccomp mode, and lets imgtool's later
// calls through (see above).
func (r *restorer) restoreSeccomp(p *process) error {
	used := false
	for _, c := range p.pl.cores {
		mode, _, _ := threadSeccomp(c, p.pl.leaderCore())
		used = used || mode != 0
	}
	if !used {
		return nil
	}
	for _, t := range p.threads {
		if err := unix.PtraceSetOptions(t.tid, tracerOptions|unix.PTRACE_O_SUSPEND_SECCOMP); err != nil {
			return fmt.Errorf("thread %d: suspending seccomp for the restore: %w", t.tid, err)
		}
	}
	for i, t := range p.threads {
		mode, newest, _ := threadSeccomp(p.pl.cores[i], p.pl.leaderCore())
		switch mode {
		case seccompModeStrict:
			if _, err := t.syscall(unix.SYS_PRCTL, unix.PR_SET_SECCOMP, seccompModeStrict); err != nil {
				return fmt.Errorf("thread %d: seccomp strict mode: %w", t.tid, err)
			}
		case seccompModeFilter:
			chain, err := seccompChain(r.pl.seccomp, newest)
			if err != nil {
				return err
			}
			for j, f := range chain {
				if err := installFilter(p, t, f); err != nil {
					return fmt.Errorf("thread %d: seccomp filter %d of %d: %w", t.tid, j+1, len(chain), err)
				}
			}
		}
	}
	return nil
}

// installFilter installs one filter in thread t: the program and its struct sock_fprog
// in the scratch area, then seccomp(SECCOMP_SET_MODE_FILTER, flags, &fprog).
func installFilter(p *process, t *thread, f *seccomp.SeccompFilter) error {
	prog := p.scratch + scratchArgs + 16
	var fprog [16]byte
	binary.LittleEndian.PutUint16(fprog[:], uint16(len(f.Filter)/sockFilterLen))
	binary.LittleEndian.PutUint64(fprog[8:], prog)
	if err := p.poke(p.scratch+scratchArgs, fprog[:]); err != nil {
		return err
	}
	if err := p.poke(prog, f.Filter); err != nil {
		return err
	}
	_, err := t.syscall(unix.SYS_SECCOMP, seccompSetModeFilter, uint64(f.GetFlags()), p.scratch+scratchArgs)
	return err
}
