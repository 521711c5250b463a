package dump

import (
	"cmp"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	core_x86 "github.com/checkpoint-restore/go-criu/v8/crit/images/core-x86"
	"github.com/imgtool/imgtool/image"
	"github.com/imgtool/imgtool/internal/fpu"
	"github.com/imgtool/imgtool/internal/par"
	"github.com/imgtool/imgtool/internal/procfs"
	"github.com/imgtool/imgtool/internal/ptrace"
)

const (
	pageSize      = 4096
	maxAuxvWords  = 44   // CRIU's AT_VECTOR_SIZE: a restore refuses more
	maxAuxvLen    = 4096 // /proc/PID/auxv bytes
	sigactionSize = 32   // struct sigaction of the x86_64 kernel ABI
	itimervalSize = 32
	threadScratch = 64 // per-thread slot: stack_t (24), tid address (8), pdeath signal (4)
)

// threadState is what core-TID.img records of one thread.
type threadState struct {
	comm             string
	status           procfs.Status
	fpregs           *core_x86.UserX86FpregsEntry // split at once: the raw XSAVE buffer is 11 KiB with AMX
	tls              [3]ptrace.UserDesc
	rseq             ptrace.RseqConfig
	hasRseq          bool
	robustHead       uint64
	robustLen        uint64
	sasSp, sasSize   uint64
	sasFlags         uint32
	clearTid         uint64
	pdeathSig        uint32
	secbits          uint32
	schedPolicy      uint32
	schedPrio        uint32
	hasSchedPrio     bool
	nice             int32
	pending          [][]byte
	cet              bool // the CPU has shadow stacks: CRIU writes a (zero) cet entry
	cetState, cetSSP uint64
}

type sigaction struct {
	handler, flags, restorer, mask uint64
}

// procState is what the per-process images record.
type procState struct {
	stat          *procfs.Stat
	status        procfs.Status
	brk           uint64
	sigactions    [image.NSignals]sigaction
	itimers       [3][4]uint64
	posixTimers   []posixTimer // posix_timer.go
	subreaper     bool
	dumpable      int32
	thpDisabled   bool
	personality   uint32
	loginuid      uint32
	hasLoginuid   bool
	oomScoreAdj   int32
	rlimits       [image.NRlimits]unix.Rlimit
	auxv          []uint64
	umask         uint32
	sharedPending [][]byte
	vmas          []procfs.Mapping
	fds           []*fdDesc // read once the tree stopped (readFds), classified in collect
	exePath       string
	exeStat       unix.Stat_t
	cwdPath       string
	rootPath      string
	cwdStat       unix.Stat_t
	rootStat      unix.Stat_t
}

// fixRestart stores registers the way CRIU does for a thread stopped inside a system call:
// a restartable call is rewound to run again (ptrace.Resumable), but a restart_syscall-
// style call returns -EINTR, as its restart block does not survive a restore (poll
// without a timeout runs again: nothing of it was lost).
func fixRestart(r unix.PtraceRegs) unix.PtraceRegs {
	if int64(r.Orig_rax) < 0 || int64(r.Rax) != -ptrace.RestartBlock {
		return ptrace.Resumable(r)
	}
	if r.Orig_rax == unix.SYS_POLL && int32(uint32(r.Rdx)) < 0 {
		// poll without a timeout: run again, as the kernel's restart would (a program
		// watching signals through a signalfd, as script(1) does, takes EINTR for an error)
		r.Rax = r.Orig_rax
		r.Rip -= 2
		return r
	}
	eintr := int64(unix.EINTR)
	r.Rax = uint64(-eintr)
	return r
}

// collectThread reads everything about t that the tracer can read directly. buf, of
// fpu.MaxSize bytes, receives the XSAVE state, of which t keeps a copy of its own size:
// one buffer for all, where one each (64 KiB) made a dump's memory grow by 64 KiB a thread.
func collectThread(p *process, t *thread, buf []byte) error {
	regs, err := ptrace.GetRegs(t.tid)
	if err != nil {
		return err
	}
	if regs.Cs != 0x33 {
		return refuse(p.pid, -1, fmt.Sprintf("thread %d", t.tid), "32-bit (compat) tasks are not supported")
	}
	t.orig = regs
	t.regs = fixRestart(regs)
	if t.seccompMode == seccompModeFilter {
		if t.seccompFilters, err = readSeccompFilters(p.pid, t.tid); err != nil {
			return err
		}
	}
	if t.origMask, err = ptrace.GetSigmask(t.tid); err != nil {
		return err
	}
	s := &t.state // its status and comm: readThread

	xsave, err := ptrace.GetRegset(t.tid, ptrace.NTX86XState, buf)
	if err != nil {
		return fmt.Errorf("read XSAVE state of thread %d: %w", t.tid, err)
	}
	if len(xsave) < fpu.MinSize {
		return fmt.Errorf("thread %d: XSAVE state of %d bytes, want at least %d", t.tid, len(xsave), fpu.MinSize)
	}
	if s.fpregs, err = fpu.CPULayout().Split(xsave); err != nil {
		return fmt.Errorf("thread %d: %w", t.tid, err)
	}
	if live := s.fpregs.GetXsave().GetXstateBv() &^ fpu.ImageFeatures; live != 0 {
		// AMX tiles (bits 17 and 18), say: a CRIU core image has no field for them, and
		// a restore would bring the thread back with that state reset.
		return refuse(p.pid, -1, fmt.Sprintf("thread %d", t.tid),
			fmt.Sprintf("its FPU has live XSAVE components %#x that CRIU images cannot hold (AMX tiles are 0x60000)", live))
	}
	for i := range s.tls {
		d, err := ptrace.GetThreadArea(t.tid, uint32(12+i))
		if err != nil {
			return fmt.Errorf("read TLS entry %d of thread %d: %w", 12+i, t.tid, err)
		}
		s.tls[i] = d
	}
	if c, err := ptrace.GetRseq(t.tid); err == nil {
		s.rseq, s.hasRseq = c, true
	} else {
		return fmt.Errorf("read rseq configuration of thread %d: %w", t.tid, err)
	}
	if s.pending, err = ptrace.PendingSignals(t.tid, false); err != nil {
		return err
	}
	if t.jobStopped {
		s.pending = withoutStopSignals(s.pending)
	}
	if fpu.HasShadowStack() {
		s.cet = true
		var cet [2]uint64
		b := unsafe.Slice((*byte)(unsafe.Pointer(&cet[0])), 16)
		if got, err := ptrace.GetRegset(t.tid, ptrace.NTX86Shstk, b); err == nil && len(got) == 16 {
			s.cetState, s.cetSSP = cet[0], cet[1]
		}
	}
	return nil
}

func collectSched(tid int, s *threadState) error {
	pol, _, e := unix.Syscall(unix.SYS_SCHED_GETSCHEDULER, uintptr(tid), 0, 0)
	if e != 0 {
		return fmt.Errorf("read scheduling policy of thread %d: %w", tid, e)
	}
	// CRIU's sched_policy keeps SCHED_RESET_ON_FORK, the flag sched_setscheduler takes back.
	s.schedPolicy = uint32(pol)
	if p := s.schedPolicy &^ unix.SCHED_RESET_ON_FORK; p == unix.SCHED_FIFO || p == unix.SCHED_RR {
		var prio int32
		_, _, e := unix.Syscall(unix.SYS_SCHED_GETPARAM, uintptr(tid), uintptr(unsafe.Pointer(&prio)), 0)
		if e != 0 {
			return fmt.Errorf("read scheduling priority of thread %d: %w", tid, e)
		}
		s.schedPrio, s.hasSchedPrio = uint32(prio), true
	}
	// The raw syscall returns 20 - nice so that it is never negative.
	r, _, e := unix.Syscall(unix.SYS_GETPRIORITY, unix.PRIO_PROCESS, uintptr(tid), 0)
	if e != 0 {
		return fmt.Errorf("read nice of thread %d: %w", tid, e)
	}
	s.nice = 20 - int32(r)
	return nil
}

// collectProcess reads the per-process state: /proc first, then the injected syscalls.
func (d *dumper) collectProcess(p *process) error {
	ps := p.state
	var err error
	if d.xsaveBuf == nil {
		d.xsaveBuf = make([]byte, fpu.MaxSize)
	}
	for _, t := range p.threads {
		if err := collectThread(p, t, d.xsaveBuf); err != nil {
			return err
		}
	}
	if ps.sharedPending, err = ptrace.PendingSignals(p.pid, true); err != nil {
		return err
	}
	if p.stopSig != 0 {
		ps.sharedPending = withoutStopSignals(ps.sharedPending)
	}
	return d.injectAll(p, ps)
}

// readProcess reads what the images record of p that /proc tells without ptrace, into a
// new p.state: safe to run for every process of the stopped tree at once (collect).
func (d *dumper) readProcess(p *process) error {
	ps := &procState{}
	p.state = ps
	var err error
	if ps.stat, err = procfs.ReadStat(procfs.Path(p.pid, "stat")); err != nil {
		return err
	}
	if ps.status, err = procfs.ReadStatus(procfs.Path(p.pid, "status")); err != nil {
		return err
	}
	if err := checkProcess(p.pid, ps.stat, ps.status, true); err != nil {
		return err
	}
	if err := d.collectProcFiles(p, ps); err != nil {
		return err
	}
	if ps.fds, err = readFds(p.pid); err != nil {
		return err
	}
	ps.vmas, err = procfs.ReadSmaps(p.pid)
	return err
}

// readTree reads what /proc tells of the stopped tree (readProcess, readThread): every
// process and every thread at once, on every core. Then, on the tracer thread, what the
// threads' status says before anything is injected: a thread with seccomp filters gets
// PTRACE_O_SUSPEND_SECCOMP (seccomp.go), and one with SIGSTOP on its way is a
// *changedError (stopping).
func (d *dumper) readTree() error {
	type task struct {
		p *process
		t *thread
	}
	var tasks []task
	for _, p := range d.procs {
		for _, t := range p.threads {
			tasks = append(tasks, task{p, t})
		}
	}
	// /proc/locks before any fdinfo (readProcess): a lock it lists that no fd lists
	// afterwards is not held through an fd (holdLocks).
	var err error
	if d.lockList, err = procfs.ReadLocks(); err != nil {
		return err
	}
	procErrs := make([]error, len(d.procs))
	threadErrs := make([]error, len(tasks))
	par.Each(len(d.procs)+len(tasks), func(i int) {
		if i < len(d.procs) {
			procErrs[i] = d.readProcess(d.procs[i])
		} else {
			threadErrs[i-len(d.procs)] = readThread(tasks[i-len(d.procs)].p, tasks[i-len(d.procs)].t)
		}
	})
	for _, err := range procErrs {
		if err != nil {
			return err
		}
	}
	for i, err := range threadErrs {
		if err != nil {
			return err
		}
		p, t := tasks[i].p, tasks[i].t
		if t.seccompMode, err = seccompMode(t.state.status); err != nil {
			return fmt.Errorf("thread %d: %w", t.tid, err)
		}
		if t.seccompMode != 0 {
			if err := ptrace.SetOptions(t.tid, unix.PTRACE_O_SUSPEND_SECCOMP); err != nil {
				return err
			}
		}
		if !t.jobStopped && stopping(t.state.status) {
			return &changedError{fmt.Errorf("process %d: thread %d has a stop signal pending: it is about to stop", p.pid, t.tid)}
		}
	}
	return nil
}

// threadStatusKeys are the lines of a thread's /proc status kept in its state: its
// credentials (credsEntry), its seccomp mode and pending signals (liveOK, stopping).
var threadStatusKeys = []string{"Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb",
	"NoNewPrivs", "Seccomp", "SigPnd", "ShdPnd"}

// readThread reads t's status and name from /proc, its robust futex list and its
// scheduling (readTree).
func readThread(p *process, t *thread) error {
	s := &t.state
	taskDir := procfs.Path(p.pid, "task", strconv.Itoa(t.tid))
	var err error
	// Only what the images and the injection need: a thousand threads kept some 55 lines
	// each (7 MiB, doubled by the garbage collector's headroom).
	if s.status, err = procfs.ReadStatusKeys(taskDir+"/status", threadStatusKeys); err != nil {
		return err
	}
	comm, err := procfs.ReadFile(taskDir + "/comm")
	if err != nil {
		return fmt.Errorf("read comm of %d: %w", t.tid, err)
	}
	s.comm = strings.TrimSuffix(string(comm), "\n")
	// What other system calls than ptrace's tell of the stopped thread: read here, with
	// the rest of /proc, on every core.
	var head, hlen uint64
	_, _, e := unix.Syscall(unix.SYS_GET_ROBUST_LIST, uintptr(t.tid),
		uintptr(unsafe.Pointer(&head)), uintptr(unsafe.Pointer(&hlen)))
	if e != 0 {
		return fmt.Errorf("read robust futex list of thread %d: %w", t.tid, e)
	}
	s.robustHead, s.robustLen = head, hlen
	return collectSched(t.tid, s)
}

// collectProcFiles reads the per-process /proc files that need no injection.
func (d *dumper) collectProcFiles(p *process, ps *procState) error {
	pers, err := os.ReadFile(procfs.Path(p.pid, "personality"))
	if err != nil {
		return fmt.Errorf("read personality of %d: %w", p.pid, err)
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(pers)), 16, 32)
	if err != nil {
		return fmt.Errorf("personality of %d: %q", p.pid, pers)
	}
	ps.personality = uint32(v)
	if b, err := os.ReadFile(procfs.Path(p.pid, "loginuid")); err == nil {
		if v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32); err == nil {
			ps.loginuid, ps.hasLoginuid = uint32(v), true
		}
	}
	b, err := os.ReadFile(procfs.Path(p.pid, "oom_score_adj"))
	if err != nil {
		return fmt.Errorf("read oom_score_adj of %d: %w", p.pid, err)
	}
	oom, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 32)
	if err != nil {
		return fmt.Errorf("oom_score_adj of %d: %q", p.pid, b)
	}
	ps.oomScoreAdj = int32(oom)
	if ps.auxv, err = readAuxv(p.pid); err != nil {
		return err
	}
	um, err := strconv.ParseUint(ps.status["Umask"], 8, 32)
	if err != nil {
		return fmt.Errorf("umask of %d: %q", p.pid, ps.status["Umask"])
	}
	ps.umask = uint32(um)
	if ps.exePath, ps.exeStat, err = linkAndStat(procfs.Path(p.pid, "exe")); err != nil {
		return err
	}
	if ps.cwdPath, ps.cwdStat, err = linkAndStat(procfs.Path(p.pid, "cwd")); err != nil {
		return err
	}
	if ps.rootPath, ps.rootStat, err = linkAndStat(procfs.Path(p.pid, "root")); err != nil {
		return err
	}
	// A deleted executable or working directory is a ghost file (ghost.go); an executable
	// whose name was removed while it keeps another is saved through a link (remap.go).
	ps.posixTimers, err = readPosixTimers(p.pid)
	return err
}

// linkAndStat returns the target of a /proc magic link and the stat of what it opens.
func linkAndStat(path string) (string, unix.Stat_t, error) {
	var st unix.Stat_t
	l, err := os.Readlink(path)
	if err != nil {
		return "", st, fmt.Errorf("read link %s: %w", path, err)
	}
	if err := unix.Stat(path, &st); err != nil {
		return "", st, fmt.Errorf("stat %s: %w", path, err)
	}
	return l, st, nil
}

// readAuxv reads the saved auxiliary vector, keeping at most maxAuxvWords words as CRIU does
// (the kernel may report more; the tail is the AT_NULL pair).
func readAuxv(pid int) ([]uint64, error) {
	b, err := procfs.ReadFile(procfs.Path(pid, "auxv"))
	if err != nil {
		return nil, err
	}
	if len(b) > maxAuxvLen || len(b)%8 != 0 {
		return nil, fmt.Errorf("auxv of %d: %d bytes", pid, len(b))
	}
	var out []uint64
	for i := 0; i+8 <= len(b); i += 8 {
		out = append(out, le64(b[i:]))
	}
	if len(out) > maxAuxvWords {
		out = out[:maxAuxvWords]
	}
	return out, nil
}

// injectAll runs the injected syscalls of one process: the process-wide ones in the leader,
// the per-thread ones in each thread.
//
// Every thread gets its own registers and signal mask back as soon as its calls are done
// (settle): if imgtool dies then (SIGKILL), the kernel detaches the threads and they carry
// on from their own state, not from the middle of an injected call.
func (d *dumper) injectAll(p *process, ps *procState) (err error) {
	defer func() {
		if serr := settle(p); err == nil {
			err = serr
		}
	}()
	var vdso *procfs.Mapping
	for i := range ps.vmas {
		if ps.vmas[i].Path == "[vdso]" {
			vdso = &ps.vmas[i]
		}
	}
	if vdso == nil {
		return refuse(p.pid, -1, "vDSO", "the process has no vDSO to run injected system calls from")
	}
	insn, err := findSyscallInsn(p.pid, vdso.Start, vdso.End)
	if err != nil {
		return err
	}
	in := &injector{pid: p.pid, insn: insn}
	p.inj = in
	leader := p.threads[0]
	const (
		offSigactions = 0
		offItimers    = offSigactions + image.NSignals*sigactionSize
		offSubreaper  = offItimers + 3*itimervalSize
		offThreads    = 4096
	)
	offTimers := offThreads + uint64(len(p.threads))*threadScratch
	offLive := alignUp(offTimers+uint64(len(ps.posixTimers))*itimerspecLen, 64)
	size := offLive + liveAreaSize(procCalls+threadCalls) + uint64(len(p.threads)-1)*liveAreaSize(threadCalls)
	if err := in.mapScratch(leader, size); err != nil {
		return err
	}
	in.sig = chooseLiveSignal(ps.status)
	if err := in.checkLockFuture(ps.status); err != nil {
		return err
	}
	// The process's calls and its leader's, in one batch; each other thread's in its own.
	var proc []ptrace.BatchCall
	add := func(calls *[]ptrace.BatchCall, nr uintptr, args ...uint64) int {
		c := ptrace.BatchCall{Nr: nr}
		copy(c.Args[:], args)
		*calls = append(*calls, c)
		return len(*calls) - 1
	}
	iBrk := add(&proc, unix.SYS_BRK, 0)
	for _, sig := range image.SigactionSignals() {
		add(&proc, unix.SYS_RT_SIGACTION, uint64(sig), 0, in.scratch+offSigactions+uint64(sig-1)*sigactionSize, 8)
	}
	for which := 0; which < 3; which++ {
		add(&proc, unix.SYS_GETITIMER, uint64(which), in.scratch+offItimers+uint64(which)*itimervalSize)
	}
	add(&proc, unix.SYS_PRCTL, unix.PR_GET_CHILD_SUBREAPER, in.scratch+offSubreaper)
	iDumpable := add(&proc, unix.SYS_PRCTL, unix.PR_GET_DUMPABLE)
	iTHP := add(&proc, unix.SYS_PRCTL, unix.PR_GET_THP_DISABLE)
	// Each thread's calls: the live batches of all threads are started before any is
	// waited for (they run at once, on every core); the others run one call at a time.
	type batch struct {
		t       *thread
		calls   []ptrace.BatchCall
		off     uint64
		secbits int // index of the securebits call
	}
	iMembarrier := -1 // the leader's last call (membarrierCall)
	var registrations uint64
	use := func(i int, b batch, got []uint64, err error) error {
		if i == 0 && len(got) == iMembarrier && membarrierUnknown(err) {
			got, err = append(got, 0), nil
		}
		if err != nil {
			return err
		}
		if i == 0 {
			ps.brk, ps.dumpable, ps.thpDisabled = got[iBrk], int32(got[iDumpable]), got[iTHP] != 0
			registrations = got[iMembarrier]
		}
		b.t.state.secbits = uint32(got[b.secbits])
		return nil
	}
	batches := make([]batch, len(p.threads))
	offArea := offLive
	for i, t := range p.threads {
		base := in.scratch + offThreads + uint64(i)*threadScratch
		var calls []ptrace.BatchCall
		if i == 0 {
			calls = proc
		}
		add(&calls, unix.SYS_SIGALTSTACK, 0, base)
		add(&calls, unix.SYS_PRCTL, unix.PR_GET_TID_ADDRESS, base+24)
		add(&calls, unix.SYS_PRCTL, unix.PR_GET_PDEATHSIG, base+32)
		iSecbits := add(&calls, unix.SYS_PRCTL, unix.PR_GET_SECUREBITS)
		if i == 0 {
			iMembarrier = add(&calls, unix.SYS_MEMBARRIER, membarrierGetRegistrations, 0, 0)
		}
		batches[i] = batch{t, calls, offArea, iSecbits}
		offArea += liveAreaSize(len(calls))
	}
	// The live batches: every area written at once, every thread launched, then each
	// waited for and every table read at once. A batch launched is always waited for,
	// even after an error: its thread stops at its end, where settle finds it. The other
	// threads make their calls one at a time meanwhile.
	region := make([]byte, offArea-offLive)
	live := make([]bool, len(p.threads))
	var first error
	for i, b := range batches {
		if !in.liveOK(b.t) {
			continue
		}
		area, err := in.prepare(b.t, b.calls, b.off)
		if err != nil {
			first = err
			break
		}
		copy(region[b.off-offLive:], area)
		live[i] = true
	}
	if first == nil && slices.Contains(live, true) {
		first = writeRemote(in.pid, in.scratch+offLive, region)
	}
	launched := make([]bool, len(p.threads))
	for i, b := range batches {
		if first != nil {
			break
		}
		if live[i] {
			first = in.launch(b.t, b.calls, b.off)
			launched[i] = first == nil
			continue
		}
		got, err := in.run(b.t, b.calls, b.off)
		if first = use(i, b, got, err); first != nil {
			break
		}
	}
	for i, b := range batches {
		if launched[i] {
			first = cmp.Or(first, in.wait(b.t, b.calls, b.off))
		}
	}
	if first == nil && slices.Contains(launched, true) {
		first = readRemote(in.pid, in.scratch+offLive, region)
	}
	for i, b := range batches {
		if first != nil {
			break
		}
		if launched[i] {
			got, err := ptrace.BatchResults(b.t.tid, b.calls, region[b.off-offLive+ptrace.LiveTableOff:])
			if first = use(i, b, got, err); first != nil {
				break
			}
		}
	}
	if first != nil {
		return first
	}
	if registrations != 0 {
		return membarrierRefusal(p.pid, registrations)
	}
	// The limits come from /proc/PID/limits, the fields prlimit64 reads: prlimit on
	// another process needs CAP_SYS_RESOURCE unless the uids match, and the dumper may
	// lack it; asking the process itself took 16 injected calls (two ptrace stops each),
	// a sixth of a process's fixed cost in a dump of a large tree.
	limits, err := procfs.ReadLimits(p.pid)
	if err != nil {
		return fmt.Errorf("read the resource limits of %d: %w", p.pid, err)
	}
	if len(limits) != image.NRlimits {
		return fmt.Errorf("read the resource limits of %d: %d, want %d", p.pid, len(limits), image.NRlimits)
	}
	for res, l := range limits {
		ps.rlimits[res] = unix.Rlimit{Cur: l[0], Max: l[1]}
	}
	if err := in.readTimerValues(leader, ps, offTimers); err != nil {
		return err
	}
	// Read every result at once.
	buf := make([]byte, in.size)
	if err := in.read(0, buf); err != nil {
		return err
	}
	for sig := 1; sig <= image.NSignals; sig++ {
		b := buf[offSigactions+(sig-1)*sigactionSize:]
		ps.sigactions[sig-1] = sigaction{handler: le64(b), flags: le64(b[8:]), restorer: le64(b[16:]), mask: le64(b[24:])}
	}
	for which := 0; which < 3; which++ {
		b := buf[offItimers+which*itimervalSize:]
		// struct itimerval: it_interval {sec, usec}, it_value {sec, usec}
		ps.itimers[which] = [4]uint64{le64(b), le64(b[8:]), le64(b[16:]), le64(b[24:])}
	}
	ps.subreaper = le32(buf[offSubreaper:]) != 0
	for i := range ps.posixTimers {
		b := buf[offTimers+uint64(i)*itimerspecLen:]
		ps.posixTimers[i].spec = [4]uint64{le64(b), le64(b[8:]), le64(b[16:]), le64(b[24:])}
	}
	for i, t := range p.threads {
		b := buf[offThreads+i*threadScratch:]
		// stack_t: ss_sp, ss_flags (int, padded), ss_size
		t.state.sasSp, t.state.sasFlags, t.state.sasSize = le64(b), le32(b[8:]), le64(b[16:])
		t.state.clearTid = le64(b[24:])
		t.state.pdeathSig = le32(b[32:])
	}
	return in.unmapScratch(leader)
}

// settle puts back the registers and signal mask of every thread of p that ran injected
// calls. The thread stays in its syscall-exit-stop; when it is resumed (by thaw, or by the
// kernel if the tracer dies) the pending interrupt makes the kernel apply its own syscall
// restart logic to the original registers. thaw still passes each such thread through one
// more interrupt stop.
func settle(p *process) error {
	var first error
	for _, t := range p.threads {
		if t.injected {
			if err := ptrace.SetRegs(t.tid, &t.orig); err != nil && first == nil {
				first = err
			}
		}
		if t.masked {
			if err := ptrace.SetSigmask(t.tid, t.origMask); err != nil && first == nil {
				first = err
			}
			t.masked = false
		}
	}
	return first
}

// unmapScratch removes any scratch mapping still in place (after a failure midway).
func (d *dumper) unmapScratch() {
	for _, p := range d.procs {
		if p.inj != nil && p.inj.scratch != 0 && len(p.threads) > 0 {
			_ = p.inj.unmapScratch(p.threads[0])
		}
	}
}

// The injected calls of injectAll: each thread's (sigaltstack and three prctl), and the
// process's own (brk, one rt_sigaction a signal, three getitimer, three prctl, the
// membarrier query), which size the scratch mapping's live batch areas (a batch beyond
// them is an error).
const threadCalls = 4

var procCalls = 1 + len(image.SigactionSignals()) + 3 + 3 + 1

// liveAreaSize is the room of a live batch of n calls in the scratch mapping.
func liveAreaSize(n int) uint64 { return alignUp(ptrace.LiveAreaSize(n), 64) }

// alignUp rounds n up to a multiple of a (a power of two).
func alignUp(n, a uint64) uint64 { return (n + a - 1) &^ (a - 1) }
