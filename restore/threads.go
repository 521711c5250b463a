package restore

import (
	"errors"
	"fmt"

	criu_core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"golang.org/x/sys/unix"

	"github.com/imgtool/imgtool/internal/ptrace"
)

// Threads. The leader clones each other thread of its process with its TID (clone3 with
// set_tid), and each thread then restores what it holds of its own (threadCalls: name,
// alternate signal stack, robust futex list, clear_child_tid, rseq) by calls it makes
// itself. One at a time, a thread cost five ptrace stops or more (the clone3, its clone
// event, the new thread's first stop, its batch), each a round trip through the
// scheduler: a thousand threads took more than half of their restore.
//
// Where batches run (process.traps), the leader makes the clone3 calls of up to
// cloneChunk threads in one batch (each clone reports an event stop on the way, and the
// new threads wait in their first stop), and then the threads' own batches run
// threadChunk at a time, all started before any is waited for, each with its table and
// arguments in its own slot of the scratch area: they run at once, on every core.

const (
	threadFlags = unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SIGHAND |
		unix.CLONE_THREAD | unix.CLONE_SYSVSEM

	// cloneSlot: a struct clone_args (up to set_tid_size) and the one TID of its set_tid
	// array, in the lower part of the scratch area, one per clone3 of a batch.
	cloneSlot  = 96
	cloneChunk = min(scratchBatch/cloneSlot, batchMax)

	// threadSlot: a thread's arguments (threadArgs bytes: its name, its stack_t) and its
	// batch table (at most threadCallsMax calls).
	threadArgs     = 64
	threadCallsMax = 5
	threadSlot     = threadArgs + threadCallsMax*ptrace.BatchEntrySize
	threadChunk    = scratchBatch / threadSlot
)

// restoreThreads creates the threads of p other than its leader and restores each
// thread's own state, the leader's too unless leaderDone (startProcess put its calls
// in its first batch).
func (r *restorer) restoreThreads(p *process, leaderDone bool) error {
	cores := p.pl.cores
	if !p.traps {
		for _, tid := range p.pl.tids[1:] {
			if err := p.leader().clone3(threadFlags, 0, tid); err != nil {
				return err
			}
			nt, err := stopAndAttach(tid, p)
			if err != nil {
				return err
			}
			p.threads = append(p.threads, nt)
		}
		for i, t := range p.threads {
			if err := r.restoreThread(p, t, cores[i]); err != nil {
				return fmt.Errorf("thread %d: %w", t.tid, err)
			}
		}
		return nil
	}
	for rest := p.pl.tids[1:]; len(rest) > 0; {
		n, err := cloneThreads(p, rest[:min(len(rest), cloneChunk)])
		if err != nil {
			if !errors.Is(err, unix.EEXIST) {
				return err
			}
			// Its TID is still held (a thread of a process just killed): the single
			// call retries it for a while.
			if err := p.leader().clone3(threadFlags, 0, rest[n]); err != nil {
				return err
			}
			if err := attachThread(p, rest[n]); err != nil {
				return err
			}
			n++
		}
		rest = rest[n:]
	}
	from := 0
	if leaderDone {
		from = 1
	}
	for first := from; first < len(p.threads); first += threadChunk {
		if err := restoreThreadsAtOnce(p, first, min(first+threadChunk, len(p.threads))); err != nil {
			return err
		}
	}
	for i, t := range p.threads {
		if err := setScheduling(t, cores[i].GetThreadCore()); err != nil {
			return fmt.Errorf("thread %d: %w", t.tid, err)
		}
	}
	return nil
}

// cloneThreads makes p's leader clone threads with the TIDs tids in one batch, and
// attaches each. It returns how many it made: a failed clone3 stops the batch, with
// its error.
func cloneThreads(p *process, tids []int) (int, error) {
	got, err := cloneAtOnce(p, tids, func(int) uint64 { return threadFlags }, 0)
	for i, tid := range got {
		if int(tid) != tids[i] {
			return i, fmt.Errorf("creating %d: the kernel gave TID %d", tids[i], tid)
		}
		if aerr := attachThread(p, tids[i]); aerr != nil {
			return i, aerr
		}
	}
	if err != nil {
		return len(got), fmt.Errorf("creating %d: %w", tids[len(got)], err)
	}
	return len(got), nil
}

// cloneAtOnce makes p's leader clone a child with each id of ids (a thread or a process,
// with the clone flags flags(i) and exit signal exitSignal) in one batch of clone3 calls,
// their arguments in cloneSlots of the scratch area. It returns the batch's results up to
// the first clone3 that failed, with its error.
func cloneAtOnce(p *process, ids []int, flags func(i int) uint64, exitSignal uint64) ([]uint64, error) {
	args := make([]byte, len(ids)*cloneSlot)
	calls := make([]ptrace.BatchCall, len(ids))
	for i, id := range ids {
		at := p.scratch + scratchArgs + uint64(i*cloneSlot)
		a := cloneArgs{flags: flags(i), exitSignal: exitSignal, setTid: at + 80, setTidSize: 1}
		copy(args[i*cloneSlot:], pack(a, uint32(id)))
		calls[i] = ptrace.BatchCall{Nr: unix.SYS_CLONE3, Args: [6]uint64{at, 80}}
	}
	if err := p.poke(p.scratch+scratchArgs, args); err != nil {
		return nil, err
	}
	return runBatch(p, p.leader(), calls)
}

// attachThread waits for the first stop of a thread p's leader cloned and adds it to p.
func attachThread(p *process, tid int) error {
	t, err := stopAndAttach(tid, p)
	if err != nil {
		return err
	}
	p.threads = append(p.threads, t)
	return nil
}

// restoreThreadsAtOnce runs the own batches of p's threads first..last-1 at once: each
// slot written (all in one write), each thread started, then each waited for, and the
// tables read back in one read.
func restoreThreadsAtOnce(p *process, first, last int) error {
	n := last - first
	area := make([]byte, n*threadSlot)
	calls := make([][]ptrace.BatchCall, n)
	whats := make([][]string, n)
	for i := range n {
		base := p.scratch + scratchArgs + uint64(i*threadSlot)
		args, cs, what := threadCalls(p.pl.cores[first+i], base)
		copy(area[i*threadSlot:], args)
		copy(area[i*threadSlot+threadArgs:], ptrace.EncodeBatch(cs))
		calls[i], whats[i] = cs, what
	}
	if !p.batchCode {
		if err := p.poke(p.scratch+scratchBatch, ptrace.BatchCode); err != nil {
			return err
		}
		p.batchCode = true
	}
	if err := p.poke(p.scratch+scratchArgs, area); err != nil {
		return err
	}
	in := ptrace.Injector{Insn: p.sysInsn, DiscardSignals: true}
	code := p.scratch + scratchBatch
	masks := make([]uint64, n)
	for i := range n {
		t := p.threads[first+i]
		table := p.scratch + scratchArgs + uint64(i*threadSlot+threadArgs)
		var err error
		if masks[i], err = in.StartBatch(t.tid, t.tmpl, code, table, len(calls[i])); err != nil {
			return err
		}
	}
	for i := range n {
		t := p.threads[first+i]
		if err := in.FinishBatch(t.tid, code, len(calls[i]), masks[i]); err != nil {
			return err
		}
	}
	if _, err := p.mem.ReadAt(area, int64(p.scratch+scratchArgs)); err != nil {
		return fmt.Errorf("reading memory of %d at %#x: %w", p.pid, p.scratch+scratchArgs, err)
	}
	for i := range n {
		t := p.threads[first+i]
		got, err := ptrace.BatchResults(t.tid, calls[i], area[i*threadSlot+threadArgs:])
		if err != nil {
			return fmt.Errorf("thread %d: %s: %w", t.tid, whats[i][len(got)], err)
		}
	}
	return nil
}

// threadCalls are the calls a thread makes to restore its own state from its core c:
// name, alternate signal stack, robust futex list, clear_child_tid and rseq
// registration. Their arguments (threadArgs bytes, to be written at base) point into
// base.
func threadCalls(c *criu_core.CoreEntry, base uint64) (args []byte, calls []ptrace.BatchCall, what []string) {
	args = make([]byte, threadArgs)
	add := func(w string, nr uintptr, a ...uint64) {
		call := ptrace.BatchCall{Nr: nr}
		copy(call.Args[:], a)
		calls = append(calls, call)
		what = append(what, w)
	}
	tcore := c.ThreadCore
	comm := tcore.GetComm()
	if comm == "" && c.Tc != nil {
		comm = c.Tc.GetComm()
	}
	if comm != "" {
		// PR_SET_NAME takes at most TASK_COMM_LEN-1 bytes.
		copy(args[:15], comm)
		add("name", unix.SYS_PRCTL, unix.PR_SET_NAME, base)
	}
	if sas := tcore.GetSas(); sas != nil && sas.GetSsFlags()&ssDisable == 0 {
		// SS_ONSTACK describes the thread, not the stack: it cannot be set.
		copy(args[16:], pack(sas.GetSsSp(), uint32(0), uint32(0), sas.GetSsSize()))
		add("alternate signal stack", unix.SYS_SIGALTSTACK, base+16, 0)
	}
	if tcore.GetFutexRla() != 0 {
		add("robust futex list", unix.SYS_SET_ROBUST_LIST, tcore.GetFutexRla(), uint64(tcore.GetFutexRlaLen()))
	}
	add("clear_child_tid", unix.SYS_SET_TID_ADDRESS, c.ThreadInfo.GetClearTidAddr())
	if rs := tcore.GetRseqEntry(); rs != nil && rs.GetRseqAbiPointer() != 0 {
		add("registering rseq", unix.SYS_RSEQ, rs.GetRseqAbiPointer(), uint64(rs.GetRseqAbiSize()), 0, uint64(rs.GetSignature()))
	}
	return args, calls, what
}

// restoreThread restores one thread's own state (threadCalls) in one batch, then its
// scheduling (the parent death signal comes after the credentials).
func (r *restorer) restoreThread(p *process, t *thread, c *criu_core.CoreEntry) error {
	base := p.scratch + scratchArgs
	args, calls, what := threadCalls(c, base)
	if err := p.poke(base, args); err != nil {
		return err
	}
	b := r.newBatch(p, t)
	for i, call := range calls {
		b.add(what[i], call.Nr, call.Args[:]...)
	}
	if _, err := b.run(); err != nil {
		return err
	}
	return setScheduling(t, c.ThreadCore)
}

// setScheduling gives a thread its saved nice value and scheduling policy, from imgtool.
func setScheduling(t *thread, tcore *criu_core.ThreadCoreEntry) error {
	if n := tcore.GetSchedNice(); n != 0 {
		if err := unix.Setpriority(unix.PRIO_PROCESS, t.tid, int(n)); err != nil {
			return fmt.Errorf("nice %d: %w", n, err)
		}
	}
	if pol := tcore.GetSchedPolicy(); pol != 0 {
		prio := int32(tcore.GetSchedPrio())
		_, _, e := unix.Syscall(unix.SYS_SCHED_SETSCHEDULER, uintptr(t.tid), uintptr(pol), uintptr(unsafePointer(&prio)))
		if e != 0 {
			return fmt.Errorf("scheduling policy %d: %w", pol, e)
		}
	}
	return nil
}
