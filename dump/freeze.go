package dump

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imgtool/imgtool/internal/phase"
	"github.com/imgtool/imgtool/internal/procfs"
	"github.com/imgtool/imgtool/internal/ptrace"
)

// maxFreezeRounds bounds the re-listing of threads and children while a tree is being
// stopped: a tree that keeps spawning for that long is refused rather than chased forever.
const maxFreezeRounds = 64

// killTimeout bounds the wait for killed tracees to be reported.
const killTimeout = 10 * time.Second

// thread is one stopped thread.
type thread struct {
	tid      int
	orig     unix.PtraceRegs // as the thread stopped
	regs     unix.PtraceRegs // restart-fixed, as stored in core-TID.img
	origMask uint64          // blocked signals as the thread stopped
	masked   bool            // the mask was replaced for syscall injection
	injected bool            // registers were changed by syscall injection
	// jobStopped: the thread is in a job-control stop: a stop signal still pending is
	// discarded on the way to an injected call (stopped.go).
	jobStopped bool
	// seccompMode and seccompFilters (oldest first) are its seccomp state (seccomp.go).
	seccompMode    int
	seccompFilters []seccompFilter
	state          threadState
}

// process is one stopped process of the tree.
type process struct {
	pid      int
	parent   *process
	children []*process
	threads  []*thread // leader first
	state    *procState
	inj      *injector
	mem      *memState
	files    *procFiles
	ids      kobjIDs
	stopSig  uint32 // the signal of its job-control stop (stopped.go), or 0
	// forkPages: the pages its parent must hold when a restore forks it (cow.go)
	forkPages []forkPage
}

type dumper struct {
	ctx       context.Context
	opts      Options
	sink      Sink
	root      *process
	procs     []*process       // tree order: parents before children
	zombies   []*zombie        // dead children not reaped yet, neither seized nor in procs
	zombiesOK bool             // zombies are dumped as such (after zombieRetries looks)
	seized    []*thread        // every seized thread, for thaw/kill
	open      []io.WriteCloser // files of the set being written (closeOpen)
	openMu    sync.Mutex
	committed bool
	stats     dumpStats
	set       *setState

	lockList                    []procfs.Lock // /proc/locks, read as the stopped tree is (readTree)
	progressMu                  sync.Mutex
	progressDone, progressTotal int64

	held       []heldLocks // the file locks of the stopped tree (file_lock.go)
	xsaveBuf   []byte      // receives each thread's XSAVE state (collectThread)
	pagemapBuf []byte      // pagemapChunk entries of one read (scanPages): one for all processes
}

type dumpStats struct {
	freezeStart, frozenAt time.Time
	memStart, memEnd      time.Time
	pagesScanned          uint64
	pagesWritten          uint64
	pagesLazy             uint64
	shpagesScanned        uint64
	shpagesWritten        uint64
}

func newDumper(ctx context.Context, opts Options, sink Sink) *dumper {
	return &dumper{ctx: ctx, opts: opts, sink: sink}
}

// maxFreezeAttempts bounds how often a tree that changed while being stopped (a process
// exited, or died and waits to be reaped) is put back and stopped again.
const maxFreezeAttempts = 20

// errTreeChanged reports a tree that changed while being checked or stopped: a process
// exited or became a zombie. The dump puts the tree back, lets it run a moment (so that
// parents reap their dead children) and starts over, as CRIU does.
var errTreeChanged = errors.New("the process tree changed during the dump")

// changedError is errTreeChanged with what changed: cause is reported if the tree never
// settles.
type changedError struct{ cause error }

func (e *changedError) Error() string        { return e.cause.Error() }
func (e *changedError) Unwrap() error        { return e.cause }
func (e *changedError) Is(target error) bool { return target == errTreeChanged }

// seizes counts the threads ever seized, so that tests can prove a refusal came first.
var seizes atomic.Int64

// checkAndFreeze checks the tree, then stops it; a tree that changes meanwhile is put back
// and checked and stopped again, until it holds still. Refusals come from the checks,
// before any thread of the tree is seized.
func (d *dumper) checkAndFreeze() error {
	for attempt := 1; ; attempt++ {
		d.zombiesOK = attempt > zombieRetries
		err := d.precheck()
		phase.Mark("dump: check the running tree")
		if err == nil {
			d.stats.freezeStart = time.Now()
			err = d.freeze()
			phase.Mark("dump: seize")
			if err == nil {
				err = d.readTree() // collect.go
				phase.Mark("dump: read /proc of the stopped tree")
			}
			if err == nil {
				err = d.checkFrozenSharing()
			}
			if err == nil {
				err = d.checkFrozenTTYs() // tty.go
			}
			if err != nil {
				if terr := d.thaw(); terr != nil {
					return fmt.Errorf("%w (and resuming the target failed: %v)", err, terr)
				}
				d.root, d.procs, d.zombies = nil, nil, nil
			}
		}
		var ce *changedError
		if !errors.As(err, &ce) {
			return err
		}
		if attempt == maxFreezeAttempts {
			return ce.cause
		}
		// Let the tree run: a parent reaps its dead child, a short-lived child finishes.
		select {
		case <-d.ctx.Done():
			return d.checkCtx()
		case <-time.After(time.Duration(attempt) * 5 * time.Millisecond):
		}
	}
}

// checkFrozenSharing checks the stopped tree for processes sharing kernel objects: one
// that was born (say, vforked) between the check and the freeze was not checked yet.
func (d *dumper) checkFrozenSharing() error {
	pids := make([]int, len(d.procs))
	parents := map[int]int{}
	for i, p := range d.procs {
		pids[i] = p.pid
		if p.parent != nil {
			parents[p.pid] = p.parent.pid
		}
	}
	var refused Refusals
	transient, err := checkSharing(pids, parents, &refused)
	switch {
	case err != nil:
		return err
	case transient:
		return &changedError{refused.err()}
	}
	return refused.err()
}

// freeze seizes and interrupts every thread of the tree, re-listing threads and children
// until no new one appears. A child that exited before it could be seized is not part of
// the tree; one that died and waits for its stopped parent to reap it is a *changedError.
func (d *dumper) freeze() error {
	root, err := d.freezeProcess(d.opts.Pid, nil)
	if err != nil {
		if errors.Is(err, errTreeChanged) {
			return fmt.Errorf("process %d exited during the dump", d.opts.Pid)
		}
		return err
	}
	d.root = root
	queue := []*process{root}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		d.procs = append(d.procs, p)
		kids, err := childrenOf(p)
		if err != nil {
			return err
		}
		for _, k := range kids {
			if err := d.checkCtx(); err != nil {
				return err
			}
			if d.zombiesOK {
				z, err := readZombie(k, p)
				if err != nil {
					return err
				}
				if z != nil {
					d.zombies = append(d.zombies, z)
					continue
				}
			}
			c, err := d.freezeProcess(k, p)
			if err != nil {
				return err
			}
			p.children = append(p.children, c)
			queue = append(queue, c)
		}
	}
	return nil
}

// freezeProcess seizes every thread of pid, listing them again until no new one appears.
// Each round asks all its new threads to stop first and then waits for them, so that they
// stop in parallel (on every core) rather than one after the other.
//
// Nothing is read from /proc per thread here: what the dump needs of a thread's status
// (its seccomp mode, a stop signal on its way) is read once the tree is stopped
// (readThreads), where each thread's status was read three times before.
func (d *dumper) freezeProcess(pid int, parent *process) (*process, error) {
	p := &process{pid: pid, parent: parent}
	seen := map[int]bool{}
	for round := 0; ; round++ {
		if round == maxFreezeRounds {
			return nil, fmt.Errorf("process %d keeps creating threads; cannot stop it", pid)
		}
		tids, err := procfs.ListNumeric(procfs.Path(pid, "task"))
		if err != nil {
			if vanished(err) {
				return nil, &changedError{fmt.Errorf("process %d exited during the dump", pid)}
			}
			return nil, fmt.Errorf("list threads of %d: %w", pid, err)
		}
		var fresh []*thread
		for _, tid := range tids {
			if seen[tid] {
				continue
			}
			seen[tid] = true
			seizes.Add(1)
			if err := ptrace.Attach(tid, 0); err != nil {
				if dead, why := threadDead(pid, tid, err); dead {
					if tid != pid {
						continue // a thread that exited while being stopped is simply not dumped
					}
					return nil, &changedError{refuse(pid, -1, "zombie", why)}
				}
				return nil, err
			}
			t := &thread{tid: tid}
			d.seized = append(d.seized, t)
			fresh = append(fresh, t)
		}
		if len(fresh) == 0 {
			break
		}
		for _, t := range fresh {
			if err := ptrace.WaitInterrupt(t.tid); err != nil {
				if dead, why := threadDead(pid, t.tid, err); dead {
					d.seized = slices.DeleteFunc(d.seized, func(s *thread) bool { return s == t })
					if t.tid != pid {
						continue
					}
					return nil, &changedError{refuse(pid, -1, "zombie", why)}
				}
				return nil, err
			}
			if sig := groupStopSignal(t.tid); sig != 0 {
				if err := leaveGroupStop(t.tid); err != nil {
					return nil, err
				}
				t.jobStopped = true
				if t.tid == pid {
					p.stopSig = sig
				}
			}
			if t.tid == pid {
				p.threads = append([]*thread{t}, p.threads...)
			} else {
				p.threads = append(p.threads, t)
			}
		}
	}
	if len(p.threads) == 0 || p.threads[0].tid != pid {
		return nil, &changedError{fmt.Errorf("process %d exited during the dump", pid)}
	}
	return p, nil
}

// threadDead tells whether a seize failed because the thread had exited or died (the
// kernel refuses to trace a zombie with EPERM, which alone reads as "not permitted").
func threadDead(pid, tid int, err error) (bool, string) {
	if errors.Is(err, ptrace.ErrGone) {
		return true, "exited during the dump"
	}
	st, serr := procfs.ReadStat(procfs.Path(pid, "task", strconv.Itoa(tid), "stat"))
	if serr != nil {
		return vanished(serr), "exited during the dump"
	}
	if isZombie(st) {
		return true, "died during the dump (a zombie)"
	}
	return false, ""
}

// vanished tells whether err says a process or thread no longer exists.
func vanished(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ESRCH)
}

// childrenOf lists the children of every thread of p (the tree is stopped, so the list is
// final).
func childrenOf(p *process) ([]int, error) {
	var out []int
	seen := map[int]bool{}
	for _, t := range p.threads {
		kids, err := readChildren(p.pid, t.tid)
		if err != nil {
			return nil, err
		}
		for _, k := range kids {
			if !seen[k] {
				seen[k] = true
				out = append(out, k)
			}
		}
	}
	return out, nil
}

func readChildren(pid, tid int) ([]int, error) {
	b, err := os.ReadFile(procfs.Path(pid, "task", strconv.Itoa(tid), "children"))
	if err != nil {
		if os.IsNotExist(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("list children of %d: %w", tid, err)
	}
	var out []int
	for _, w := range strings.Fields(string(b)) {
		n, err := strconv.Atoi(w)
		if err != nil {
			return nil, fmt.Errorf("children of %d: %q", tid, w)
		}
		out = append(out, n)
	}
	return out, nil
}

// thaw puts every seized thread back as it was and detaches it. Threads whose registers were
// used for syscall injection sit in a syscall-exit-stop: their original registers are put
// back and they pass through one more interrupt stop, so that the kernel's own syscall
// restart logic (ERESTARTSYS, restart_syscall) runs on the way out exactly as if the dump had
// never happened.
func (d *dumper) thaw() error {
	d.unmapScratch()
	var first error
	note := func(err error) {
		if err != nil && first == nil {
			first = err
		}
	}
	// Every thread that ran injected calls is sent on its way first, then each is waited
	// for at its interrupt stop and detached: they go through it at once, on every core.
	var passing []*thread
	for i := len(d.seized) - 1; i >= 0; i-- {
		t := d.seized[i]
		ok, err := startResume(t)
		note(err)
		if ok {
			passing = append(passing, t)
		}
	}
	for _, t := range passing {
		note(finishResume(t))
	}
	d.seized = nil
	return first
}

// startResume puts a thread's registers and signal mask back. One that ran injected
// calls is resumed towards one more interrupt stop (ok: finishResume waits for it and
// detaches it); any other is detached at once.
func startResume(t *thread) (ok bool, err error) {
	if t.injected {
		if err := ptrace.SetRegs(t.tid, &t.orig); err != nil {
			_ = ptrace.Detach(t.tid)
			return false, err
		}
	}
	if t.masked {
		if err := ptrace.SetSigmask(t.tid, t.origMask); err != nil {
			_ = ptrace.Detach(t.tid)
			return false, err
		}
	}
	if !t.injected {
		return false, detach(t)
	}
	if err := ptrace.Interrupt(t.tid); err != nil {
		return false, err
	}
	if err := ptrace.Cont(t.tid, 0); err != nil {
		return false, err
	}
	return true, nil
}

// finishResume waits for a thread startResume resumed to reach its interrupt stop, and
// detaches it.
func finishResume(t *thread) error {
	st, err := ptrace.Wait(t.tid)
	for err == nil && st.Kind != ptrace.StopInterrupt {
		// Only the interrupt trap is expected; pass anything else on.
		var pass unix.Signal
		if st.Kind == ptrace.StopSignal {
			pass = st.Sig
		}
		if err = ptrace.Cont(t.tid, pass); err == nil {
			st, err = ptrace.Wait(t.tid)
		}
	}
	if err != nil {
		return err
	}
	return detach(t)
}

// detach lets a stopped thread go; one that is gone already is no error.
func detach(t *thread) error {
	if err := ptrace.Detach(t.tid); err != nil && !errors.Is(err, unix.ESRCH) {
		return err
	}
	return nil
}

// kill ends the dumped tree after a complete dump and reaps the tracee notifications, so the
// real parents can collect their children.
func (d *dumper) kill() error {
	d.unmapScratch()
	for _, p := range d.procs {
		_ = unix.Kill(p.pid, unix.SIGKILL)
	}
	// Non-leader threads first: a thread group leader is only reported once every other
	// thread of its group was reaped, and the traced ones are ours to reap.
	deadline := time.Now().Add(killTimeout)
	for i := len(d.seized) - 1; i >= 0; i-- {
		t := d.seized[i]
		for time.Now().Before(deadline) {
			var ws unix.WaitStatus
			pid, err := unix.Wait4(t.tid, &ws, unix.WALL|unix.WNOHANG, nil)
			if err == unix.EINTR {
				continue
			}
			if err != nil || (pid == t.tid && (ws.Exited() || ws.Signaled())) {
				break
			}
			if pid == t.tid && ws.Stopped() {
				// Still stopped on its way out: let it go.
				_ = ptrace.Cont(t.tid, 0)
				continue
			}
			time.Sleep(time.Millisecond)
		}
	}
	d.seized = nil
	return nil
}

func (d *dumper) closeOpen() {
	for _, w := range d.open {
		_ = w.Close()
	}
	d.open = nil
}
