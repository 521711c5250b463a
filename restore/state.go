package restore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	criu_core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/siginfo"
	"golang.org/x/sys/unix"

	"github.com/imgtool/imgtool/image"
	"github.com/imgtool/imgtool/internal/fpu"
	"github.com/imgtool/imgtool/internal/procfs"
	"github.com/imgtool/imgtool/internal/ptrace"
)

// Task states of CRIU's core images.
// ssDisable is sigaltstack's SS_DISABLE: no alternate stack.
const ssDisable = 2

// le is the byte order of every structure written into a target.
var le = binary.LittleEndian

// pack lays out fixed-size values the way the kernel's structures have them.
func pack(vals ...any) []byte {
	var b bytes.Buffer
	for _, v := range vals {
		binary.Write(&b, le, v)
	}
	return b.Bytes()
}

// closeSharedSlots closes the slots of every fd table shared by a parent and its
// children (CLONE_FILES) once all of them are restored: until then each of them hands
// files over through the pidfd slot of the one table. Then each takes its locks back.
func (r *restorer) closeSharedSlots() error {
	for _, p := range r.procs {
		if p.pl.tableShared() && !p.pl.sharesFiles() {
			if _, err := p.leader().syscall(unix.SYS_CLOSE_RANGE, uint64(r.fdBase), ^uint64(0)>>32, 0); err != nil {
				return err
			}
		}
	}
	for _, p := range r.procs {
		if p.pl.tableShared() {
			if err := r.takeLocks(p); err != nil {
				return err
			}
		}
	}
	return nil
}

// firstBatch is a process's first batch, started (startProcess): its mm fields and fs,
// its fds, its slots closed when nothing after needs them, and its leader's own calls.
type firstBatch struct {
	h           *handover
	sb          *startedBatch
	placing     bool // its fds are placed (else its parent placed them in their table)
	closing     bool // its slots are closed by it (else closeSharedSlots)
	closedEarly bool // in the batch
	leaderDone  bool // the leader's own calls are in the batch
}

// startProcess restores p's login uid and starts its first batch (firstBatch): the
// first batches of several processes run at once (restorer.run).
func (r *restorer) startProcess(p *process) (*firstBatch, error) {
	pp := p.pl
	t := p.leader()
	tc := pp.leaderCore().Tc
	// Before the process is chrooted: it opens /proc/self/loginuid itself.
	if err := r.restoreLoginuid(p, tc.Loginuid); err != nil {
		return nil, err
	}
	// One batch: the mm fields and fs, the fds, and, when nothing after needs them,
	// the slots closed (three ptrace stops a process were one).
	h, err := r.queueMMAndFS(p, tc)
	if err != nil {
		return nil, err
	}
	fb := &firstBatch{h: h}
	// Its fds: unless its parent, restored before it, placed them in their table.
	fb.placing = !pp.sharesFiles()
	if fb.placing {
		if err := r.queueFds(p, h); err != nil {
			return nil, err
		}
	}
	// The slots: else once every process of the table is restored (closeSharedSlots).
	fb.closing = !pp.tableShared()
	fb.closedEarly = fb.closing && !(fb.placing && r.fdsNeedSlots(p))
	if fb.closedEarly {
		h.b.add("closing the slots", unix.SYS_CLOSE_RANGE, uint64(r.fdBase), ^uint64(0)>>32, 0)
	}
	// The leader's own state too (threadCalls), where batches run: its batch would be a
	// stop of its own.
	fb.leaderDone = p.traps
	if fb.leaderDone {
		args, calls, what := threadCalls(pp.cores[0], p.scratch+scratchThread)
		if err := p.poke(p.scratch+scratchThread, args); err != nil {
			return nil, err
		}
		for i, c := range calls {
			h.b.add("thread "+strconv.Itoa(t.tid)+": "+what[i], c.Nr, c.Args[:]...)
		}
	}
	fb.sb = h.b.start()
	return fb, nil
}

// finishProcess waits for p's first batch, restores the rest of p and starts its last
// batch: with startProcess and endProcess, everything of p but its final registers and
// signal mask.
func (r *restorer) finishProcess(p *process, fb *firstBatch) (*lastBatch, error) {
	pp := p.pl
	t := p.leader()
	tc := pp.leaderCore().Tc
	if err := fb.h.finish(fb.sb); err != nil {
		return nil, err
	}
	if fb.placing {
		if err := r.finishFds(p); err != nil {
			return nil, err
		}
	}
	if fb.closing && !fb.closedEarly {
		if _, err := t.syscall(unix.SYS_CLOSE_RANGE, uint64(r.fdBase), ^uint64(0)>>32, 0); err != nil {
			return nil, err
		}
	}
	if fb.closing { // closing any fd of a file drops the process's POSIX locks on it
		if err := r.takeLocks(p); err != nil { // file_lock.go
			return nil, err
		}
	}
	if err := r.restoreThreads(p, fb.leaderDone); err != nil { // threads.go
		return nil, err
	}
	if err := r.restoreItimers(p, tc); err != nil {
		return nil, err
	}
	if err := r.createPosixTimers(p, tc); err != nil {
		return nil, err
	}
	if err := r.restoreRlimits(p, tc); err != nil {
		return nil, err
	}
	if err := r.restoreOOMScoreAdj(p, tc); err != nil {
		return nil, err
	}
	if err := r.restoreSeccomp(p); err != nil {
		return nil, err
	}
	if err := r.restoreCreds(p); err != nil {
		return nil, err
	}
	// After the credentials: changing them clears the parent death signal.
	for i, th := range p.threads {
		if sig := pp.cores[i].GetThreadCore().GetPdeathSig(); sig != 0 && pp.parent != nil {
			if _, err := th.syscall(unix.SYS_PRCTL, unix.PR_SET_PDEATHSIG, uint64(sig)); err != nil {
				return nil, fmt.Errorf("thread %d: parent death signal: %w", th.tid, err)
			}
		}
	}
	// Dumpable and child subreaper go in the batch of the signal actions, the last one
	// (batch.go): its trap resets a blocked or ignored SIGTRAP's action, and would take a
	// pending SIGTRAP for its own. Every call before runs as a batch (process.traps); from
	// here on, one step at a time.
	b := r.newBatch(p, t)
	b.add("dumpable", unix.SYS_PRCTL, unix.PR_SET_DUMPABLE, uint64(pp.mm.GetDumpable()))
	if tc.GetChildSubreaper() {
		b.add("child subreaper", unix.SYS_PRCTL, unix.PR_SET_CHILD_SUBREAPER, 1)
	}
	trap, err := r.queueSigactions(p, tc, b)
	if err != nil {
		return nil, err
	}
	return &lastBatch{sb: b.start(), trap: trap}, nil
}

// lastBatch is a process's last batch, started (finishProcess): its dumpable flag, child
// subreaper flag and signal actions, but SIGTRAP's (trap, when it has one of its own).
type lastBatch struct {
	sb   *startedBatch
	trap []byte
}

// endProcess waits for p's last batch and ends its restore: its SIGTRAP action, its
// pending signals, its POSIX timers armed, and the scratch area (and the vDSO and vvar it
// did not have) unmapped.
func (r *restorer) endProcess(p *process, lb *lastBatch) error {
	pp := p.pl
	t := p.leader()
	tc := pp.leaderCore().Tc
	if err := r.endSigactions(p, lb); err != nil {
		return err
	}
	if err := r.queueSignals(p); err != nil {
		return err
	}
	if err := r.armPosixTimers(p, tc); err != nil {
		return err
	}
	if _, err := t.syscall(unix.SYS_MUNMAP, p.scratch, scratchSize); err != nil {
		return err
	}
	vvar, vdso := savedSpecials(pp.mm.Vmas)
	if vdso.end == 0 || vvar.end == 0 {
		// The set had no vDSO or vvar: drop ours, after the last injected syscall but
		// one (the unmap of the vDSO itself returns fine: the instruction has run).
		for _, s := range []span{r.kern.vvar, r.kern.vclock, r.kern.vdso} {
			if s.end == 0 || (s == r.kern.vdso && vdso.end != 0) || (s != r.kern.vdso && vvar.end != 0) {
				continue
			}
			if _, err := t.syscall(unix.SYS_MUNMAP, s.start, s.end-s.start); err != nil {
				return err
			}
		}
	}
	return nil
}

// queueMMAndFS queues, in a batch of p's calls it returns, what sets the mm fields (code, data, brk, stack,
// arguments, environment, auxv, exe) with PR_SET_MM_MAP, so that /proc/PID/cmdline,
// environ, exe and [heap] read as before, THP disabled, the personality, the root, the
// working directory and the umask. The executable and the directories are handed over
// with pidfd_getfd inside the batch (handover), each closed before the next comes: where
// each was one call, the whole took a dozen ptrace stops a process.
func (r *restorer) queueMMAndFS(p *process, tc *criu_core.TaskCoreEntry) (*handover, error) {
	h, err := r.newHandover(p)
	if err != nil {
		return nil, err
	}
	m := p.pl.mm
	fe := r.pl.files[m.GetExeFileId()]
	if fe == nil || fe.Reg == nil {
		return nil, fmt.Errorf("exe file id %d is not a regular file of files.img", m.GetExeFileId())
	}
	name, err := r.descs.regPath(r.pl, fe) // a deleted executable is made again: ghost.go
	if err != nil {
		return nil, err
	}
	exe, err := r.openShared(name, 0)
	if err != nil {
		return nil, fmt.Errorf("opening the executable: %w", err)
	}
	exeFd := h.add(exe)
	auxvAddr := p.scratch + scratchExtra
	auxv := pack(m.MmSavedAuxv)
	mmap := pack(m.GetMmStartCode(), m.GetMmEndCode(), m.GetMmStartData(), m.GetMmEndData(),
		m.GetMmStartBrk(), m.GetMmBrk(), m.GetMmStartStack(), m.GetMmArgStart(), m.GetMmArgEnd(),
		m.GetMmEnvStart(), m.GetMmEnvEnd(), auxvAddr, uint32(len(auxv)), uint32(exeFd))
	if err := p.poke(p.scratch+scratchArgs, mmap); err != nil {
		return nil, err
	}
	if err := p.poke(auxvAddr, auxv); err != nil {
		return nil, err
	}
	b := h.b
	b.add("setting the mm fields", unix.SYS_PRCTL, unix.PR_SET_MM, unix.PR_SET_MM_MAP, p.scratch+scratchArgs, uint64(len(mmap)))
	b.add("closing the executable", unix.SYS_CLOSE, exeFd)
	if m.GetThpDisabled() {
		b.add("disabling THP", unix.SYS_PRCTL, unix.PR_SET_THP_DISABLE, 1, 0, 0, 0)
	}
	b.add("personality", unix.SYS_PERSONALITY, uint64(tc.GetPersonality()))
	if err := r.addFS(p, h); err != nil {
		return nil, err
	}
	return h, nil
}

// queueSigactions queues the saved signal actions (struct kernel_sigaction: handler,
// flags, restorer, mask) in the batch b of the leader's calls (which may hold others),
// which is then the process's last (endSigactions), and returns SIGTRAP's action when it
// has to be set after the batch.
func (r *restorer) queueSigactions(p *process, tc *criu_core.TaskCoreEntry, b *callBatch) ([]byte, error) {
	sigs := image.SigactionSignals()
	if len(tc.Sigactions) != 0 && len(tc.Sigactions) != len(sigs) {
		return nil, fmt.Errorf("core-%d.img: %d signal actions, want %d", p.pid, len(tc.Sigactions), len(sigs))
	}
	ignored := r.inherited.sigIgn
	// Every action in one batch but SIGTRAP's, which comes after it, one step at a time:
	// the batch's trap resets a blocked SIGTRAP's action (every signal is blocked).
	var args []byte
	var trap []byte
	for i, sa := range tc.Sigactions {
		sig := sigs[i]
		isDefault := sa.GetSigaction() == 0 && sa.GetFlags() == 0 && sa.GetMask() == 0 && sa.GetRestorer() == 0
		if isDefault && ignored&(1<<(sig-1)) == 0 {
			continue // already so: the helper starts with default actions
		}
		act := pack(sa.GetSigaction(), sa.GetFlags(), sa.GetRestorer(), sa.GetMask())
		if sig == int(unix.SIGTRAP) {
			trap = act
			continue
		}
		b.add(fmt.Sprintf("signal %d", sig), unix.SYS_RT_SIGACTION, uint64(sig), p.scratch+scratchStrBuf+uint64(len(args)), 0, 8)
		args = append(args, act...)
	}
	if len(args) > 0 {
		if err := p.poke(p.scratch+scratchStrBuf, args); err != nil {
			return nil, err
		}
	}
	return trap, nil
}

// endSigactions waits for the last batch lb and ends p's batches (process.traps), then
// sets its SIGTRAP action.
func (r *restorer) endSigactions(p *process, lb *lastBatch) error {
	if _, err := lb.sb.finish(); err != nil {
		return err
	}
	p.traps = false
	if lb.trap == nil {
		return nil
	}
	if err := p.poke(p.scratch+scratchArgs, lb.trap); err != nil {
		return err
	}
	if _, err := p.leader().syscall(unix.SYS_RT_SIGACTION, uint64(unix.SIGTRAP), p.scratch+scratchArgs, 0, 8); err != nil {
		return fmt.Errorf("signal %d: %w", unix.SIGTRAP, err)
	}
	return nil
}

// addFS adds to h's batch the calls that set the root, the working directory and the
// umask.
func (r *restorer) addFS(p *process, h *handover) error {
	fs := p.pl.fs
	chdir := func(id uint32, what string) error {
		fe := r.pl.files[id]
		if fe == nil || fe.Reg == nil {
			return fmt.Errorf("directory file id %d is not in files.img", id)
		}
		name, err := r.descs.regPath(r.pl, fe) // a removed directory is made again: ghost.go
		if err != nil {
			return err
		}
		f, err := r.openShared(name, unix.O_DIRECTORY)
		if err != nil {
			return fmt.Errorf("opening directory: %w", err)
		}
		fd := h.add(f)
		h.b.add("changing to the "+what, unix.SYS_FCHDIR, fd)
		h.b.add("closing the "+what, unix.SYS_CLOSE, fd)
		return nil
	}
	if root := r.pl.files[fs.GetRootId()]; root != nil && root.Reg != nil && root.Reg.GetName() != "/" {
		if err := chdir(fs.GetRootId(), "root"); err != nil {
			return err
		}
		if err := p.poke(p.scratch+scratchStrBuf, []byte(".\x00")); err != nil {
			return err
		}
		h.b.add("chroot", unix.SYS_CHROOT, p.scratch+scratchStrBuf)
	}
	if err := chdir(fs.GetCwdId(), "working directory"); err != nil {
		return err
	}
	h.b.add("umask", unix.SYS_UMASK, uint64(fs.GetUmask()))
	return nil
}

// queueFds queues in h's batch the calls that put each of p's fds in place from the
// inherited descriptions; a pidfd's, made now that every process exists, is handed over
// to its slot first.
func (r *restorer) queueFds(p *process, h *handover) error {
	b := h.b
	for _, fd := range p.pl.fds {
		fe := r.pl.files[fd.GetId()]
		if fe.GetType() != fdinfo.FdTypes_PIDFD {
			continue
		}
		f, err := r.descs.pidfdFile(r.pl, fe)
		if err != nil {
			return fmt.Errorf("fd %d: %w", fd.GetFd(), err)
		}
		at := h.add(f)
		b.add(fmt.Sprintf("fd %d: its pidfd to its slot", fd.GetFd()), unix.SYS_DUP3, at, uint64(r.descs.slot[fd.GetId()]), 0)
		b.add("closing "+f.Name(), unix.SYS_CLOSE, at)
	}
	for _, fd := range p.pl.fds {
		slot, ok := r.descs.slot[fd.GetId()]
		if !ok {
			return fmt.Errorf("fd %d: file id %d has no description", fd.GetFd(), fd.GetId())
		}
		var flags uint64
		if fd.GetFlags()&unix.FD_CLOEXEC != 0 {
			flags = unix.O_CLOEXEC
		}
		b.add(fmt.Sprintf("fd %d", fd.GetFd()), unix.SYS_DUP3, uint64(slot), uint64(fd.GetFd()), flags)
	}
	return nil
}

// fdsNeedSlots tells whether finishing p's fds in place (finishFds) may need the slots:
// a kind with work to do then, or O_ASYNC to turn on.
func (r *restorer) fdsNeedSlots(p *process) bool {
	for _, fd := range p.pl.fds {
		fe := r.pl.files[fd.GetId()]
		if fe == nil {
			return true
		}
		if _, ok := fdKinds[fe.GetType()].(placer); ok || statusFlags(r.pl, fe)&unix.O_ASYNC != 0 {
			return true
		}
	}
	return false
}

// finishFds lets the kinds that need p's fds in place finish (placer: an epoll registers
// its targets), and turns O_ASYNC on.
func (r *restorer) finishFds(p *process) error {
	for _, fd := range p.pl.fds {
		if err := r.setAsync(p, fd.GetId(), uint64(fd.GetFd())); err != nil {
			return err
		}
	}
	for _, fd := range p.pl.fds {
		fe := r.pl.files[fd.GetId()]
		if k, ok := fdKinds[fe.GetType()].(placer); ok {
			if err := k.placed(r, p, fd, fe); err != nil {
				return err
			}
		}
	}
	return nil
}

// restoreItimers re-arms the real, virtual and profiling interval timers. Signals they
// raise stay pending until the tree runs: every thread blocks all signals until then.
func (r *restorer) restoreItimers(p *process, tc *criu_core.TaskCoreEntry) error {
	tm := tc.GetTimers()
	if tm == nil {
		return nil
	}
	t := p.leader()
	for which, it := range [...]*struct{ isec, iusec, vsec, vusec uint64 }{
		toItimer(tm.GetReal()), toItimer(tm.GetVirt()), toItimer(tm.GetProf()),
	} {
		if it == nil || (it.vsec == 0 && it.vusec == 0) {
			continue
		}
		if err := p.poke(p.scratch+scratchArgs, pack(it.isec, it.iusec, it.vsec, it.vusec)); err != nil {
			return err
		}
		if _, err := t.syscall(unix.SYS_SETITIMER, uint64(which), p.scratch+scratchArgs, 0); err != nil {
			return err
		}
	}
	return nil
}

func toItimer(e interface {
	GetIsec() uint64
	GetIusec() uint64
	GetVsec() uint64
	GetVusec() uint64
}) *struct{ isec, iusec, vsec, vusec uint64 } {
	return &struct{ isec, iusec, vsec, vusec uint64 }{e.GetIsec(), e.GetIusec(), e.GetVsec(), e.GetVusec()}
}

// queueSignals queues the saved pending signals, process-wide and per thread. They stay
// pending (every thread blocks everything) until the tree is released.
func (r *restorer) queueSignals(p *process) error {
	queue := func(t *thread, q *siginfo.SignalQueueEntry, perThread bool) error {
		for _, s := range q.GetSignals() {
			info := s.GetSiginfo()
			if len(info) != 128 {
				return fmt.Errorf("pending signal: siginfo of %d bytes, want 128", len(info))
			}
			sig := uint64(le.Uint32(info))
			if err := p.poke(p.scratch+scratchArgs, info); err != nil {
				return err
			}
			var err error
			if perThread {
				_, err = t.syscall(unix.SYS_RT_TGSIGQUEUEINFO, uint64(p.pid), uint64(t.tid), sig, p.scratch+scratchArgs)
			} else {
				_, err = t.syscall(unix.SYS_RT_SIGQUEUEINFO, uint64(p.pid), sig, p.scratch+scratchArgs)
			}
			if err != nil {
				return fmt.Errorf("queueing signal %d: %w", sig, err)
			}
		}
		return nil
	}
	if err := queue(p.leader(), p.pl.leaderCore().GetTc().GetSignalsS(), false); err != nil {
		return err
	}
	for i, t := range p.threads {
		if err := queue(t, p.pl.cores[i].GetThreadCore().GetSignalsP(), true); err != nil {
			return err
		}
	}
	return nil
}

// restoreRlimits sets the saved resource limits that differ from those the process
// inherited from imgtool. imgtool sets them from outside with prlimit(2), while the
// process still has imgtool's credentials (prlimit on another process needs matching
// uids or CAP_SYS_RESOURCE; raising a hard limit needs CAP_SYS_RESOURCE in the caller,
// which is imgtool either way): no injected call, where one per limit was 40% of the
// injected calls of a tree's restore.
//
// A limit this machine does not allow (a hard limit above the current one, without
// CAP_SYS_RESOURCE) is clamped to what is allowed and reported once, as CRIU's restorer
// sets each limit best-effort: machines of the same kind differ in their limits, and a
// lower ceiling does not change what the program does until it reaches it.
func (r *restorer) restoreRlimits(p *process, tc *criu_core.TaskCoreEntry) error {
	for res, l := range tc.GetRlimits().GetRlimits() {
		if res >= len(r.inherited.rlimits) {
			return fmt.Errorf("core-%d.img: %d resource limits, this restore knows %d", p.pid, len(tc.GetRlimits().GetRlimits()), len(r.inherited.rlimits))
		}
		now := r.inherited.rlimits[res] // what it has (readInherited)
		want := unix.Rlimit{Cur: l.GetCur(), Max: l.GetMax()}
		if now == want {
			continue
		}
		err := unix.Prlimit(p.pid, res, &want, nil)
		if !errors.Is(err, unix.EPERM) {
			if err != nil {
				return fmt.Errorf("resource limit %s: %w", image.RlimitName(res), err)
			}
			continue
		}
		cur, max := clampRlimit(want.Cur, want.Max, now.Max)
		if err := unix.Prlimit(p.pid, res, &unix.Rlimit{Cur: cur, Max: max}, nil); err != nil {
			return fmt.Errorf("resource limit %s: %w", image.RlimitName(res), err)
		}
		r.warn(fmt.Sprintf("resource limit %s: wanted %s/%s, got %s/%s (raising a hard limit needs CAP_SYS_RESOURCE)",
			image.RlimitName(res), rlimitString(want.Cur), rlimitString(want.Max), rlimitString(cur), rlimitString(max)))
	}
	return nil
}

// restoreOOMScoreAdj gives the process its saved oom_score_adj (CRIU writes it the same
// way, through /proc). Lowering it below what it inherited from imgtool needs
// CAP_SYS_RESOURCE: without it the inherited value is kept and reported once, as a
// resource limit is.
func (r *restorer) restoreOOMScoreAdj(p *process, tc *criu_core.TaskCoreEntry) error {
	if tc.OomScoreAdj == nil {
		return nil
	}
	path := procfs.Path(p.pid, "oom_score_adj")
	want := strconv.Itoa(int(tc.GetOomScoreAdj()))
	if want == r.inherited.oomScoreAdj {
		return nil // as it is already (readInherited)
	}
	err := os.WriteFile(path, []byte(want), 0)
	if errors.Is(err, os.ErrPermission) || errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
		cur, _ := os.ReadFile(path)
		r.warn(fmt.Sprintf("oom_score_adj: wanted %s, kept %s (lowering it needs CAP_SYS_RESOURCE)", want, strings.TrimSpace(string(cur))))
		return nil
	}
	if err != nil {
		return fmt.Errorf("oom_score_adj: %w", err)
	}
	return nil
}

// clampRlimit fits a wanted soft/hard pair under the hard limit a process may not raise.
func clampRlimit(cur, max, ceiling uint64) (uint64, uint64) {
	max = min(max, ceiling)
	return min(cur, max), max
}

// rlimitString prints a limit as prlimit(1) does.
func rlimitString(v uint64) string {
	if v == unix.RLIM_INFINITY {
		return "unlimited"
	}
	return strconv.FormatUint(v, 10)
}

// setFinalRegisters gives a thread its saved signal mask, FPU state and registers. The
// registers are stored restart-fixed; orig_rax = -1 keeps the kernel from restarting
// anything a second time.
func (r *restorer) setFinalRegisters(p *process, t *thread, c *criu_core.CoreEntry) error {
	mask := c.GetThreadCore().GetBlkSigset()
	if c.GetThreadCore().BlkSigset == nil && c.Tc != nil {
		mask = c.Tc.GetBlkSigset()
	}
	if err := ptrace.SetSigmask(t.tid, mask); err != nil {
		return err
	}
	if r.xsaveBuf == nil { // the kernel's XSAVE size, one buffer for every thread
		buf, err := ptrace.GetRegset(t.tid, ptrace.NTX86XState, make([]byte, fpu.MaxSize))
		if err != nil {
			return fmt.Errorf("thread %d: reading the XSAVE area: %w", t.tid, err)
		}
		r.xsaveBuf = make([]byte, len(buf))
	}
	if err := r.xs.BuildInto(c.ThreadInfo.Fpregs, r.xsaveBuf); err != nil {
		return fmt.Errorf("thread %d: %w", t.tid, err)
	}
	if err := ptrace.SetRegset(t.tid, ptrace.NTX86XState, r.xsaveBuf); err != nil {
		return fmt.Errorf("thread %d: setting the FPU state: %w", t.tid, err)
	}
	g := c.ThreadInfo.Gpregs
	regs := unix.PtraceRegs{
		R15: g.GetR15(), R14: g.GetR14(), R13: g.GetR13(), R12: g.GetR12(), Rbp: g.GetBp(), Rbx: g.GetBx(),
		R11: g.GetR11(), R10: g.GetR10(), R9: g.GetR9(), R8: g.GetR8(), Rax: g.GetAx(), Rcx: g.GetCx(),
		Rdx: g.GetDx(), Rsi: g.GetSi(), Rdi: g.GetDi(), Orig_rax: ^uint64(0), Rip: g.GetIp(), Cs: g.GetCs(),
		Eflags: g.GetFlags(), Rsp: g.GetSp(), Ss: g.GetSs(), Fs_base: g.GetFsBase(), Gs_base: g.GetGsBase(),
		Ds: g.GetDs(), Es: g.GetEs(), Fs: g.GetFs(), Gs: g.GetGs(),
	}
	if err := ptrace.SetRegs(t.tid, &regs); err != nil {
		return err
	}
	return nil
}
