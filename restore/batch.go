package restore

import (
	"fmt"

	"github.com/imgtool/imgtool/internal/ptrace"
)

// The batch area: BatchCode, then the table, in the upper part of the scratch area (the
// lower part holds the arguments of single calls, a seccomp filter up to 32 KiB + 16).
const (
	scratchBatch    = 40 << 10
	scratchBatchTab = scratchBatch + 64
	batchMax        = (scratchSize - scratchBatchTab) / ptrace.BatchEntrySize
)

// callBatch gathers injected calls for one thread and runs them as one batch
// (ptrace.RunBatch): a trap at the end instead of two ptrace stops per call, which is most
// of the cost of a call. Where the scratch area is not executable (restorer.noBatch) the
// calls run one at a time, with the same results.
//
// A batch ends in a forced SIGTRAP, which resets the thread's SIGTRAP action to SIG_DFL
// when the signal is blocked or ignored: batches run before the process's signal actions
// are set (finishProcess), never after.
type callBatch struct {
	p      *process
	t      *thread
	single bool
	calls  []ptrace.BatchCall
	what   []string // each call's name in errors
}

// newBatch starts a batch of calls for thread t of p.
func (r *restorer) newBatch(p *process, t *thread) *callBatch {
	return &callBatch{p: p, t: t, single: r.noBatch}
}

// add queues nr(args), described as what in an error.
func (b *callBatch) add(what string, nr uintptr, args ...uint64) {
	c := ptrace.BatchCall{Nr: nr}
	copy(c.Args[:], args)
	b.calls = append(b.calls, c)
	b.what = append(b.what, what)
}

// run runs the queued calls in order and stops at the first that fails, returning its
// error named by its description; the calls after it do not run. It returns the results
// of the calls that ran. The batch is empty afterwards.
func (b *callBatch) run() ([]uint64, error) {
	calls, what := b.calls, b.what
	b.calls, b.what = nil, nil
	if len(calls) == 0 {
		return nil, nil
	}
	got, err := runCalls(b.p, b.t, b.single, calls)
	if err != nil {
		return got, fmt.Errorf("%s: %w", what[len(got)], err)
	}
	return got, nil
}

// startedBatch is a batch running in its thread, started by callBatch.start.
type startedBatch struct {
	b     *callBatch
	calls []ptrace.BatchCall
	what  []string
	mask  uint64 // the thread's signal mask, put back once the batch trapped
	done  bool   // got and err are the batch's outcome already
	got   []uint64
	err   error
}

// start starts the queued calls as one batch and returns without waiting for them (the
// batches of several processes then run at once); finish waits. Where they cannot run as
// one batch (no batches, too many calls), start runs them and finish reports how they
// went. The batch is empty afterwards.
func (b *callBatch) start() *startedBatch {
	if b.single || len(b.calls) == 0 || len(b.calls) > batchMax {
		got, err := b.run()
		return &startedBatch{done: true, got: got, err: err}
	}
	sb := &startedBatch{b: b, calls: b.calls, what: b.what}
	b.calls, b.what = nil, nil
	var err error
	if sb.mask, err = startBatch(b.p, b.t, sb.calls); err != nil {
		sb.done, sb.err = true, fmt.Errorf("%s: %w", sb.what[0], err)
	}
	return sb
}

// finish waits for the batch start started and returns what run would have.
func (sb *startedBatch) finish() ([]uint64, error) {
	if sb.done {
		return sb.got, sb.err
	}
	got, err := finishBatch(sb.b.p, sb.b.t, sb.calls, sb.mask)
	if err != nil && len(got) < len(sb.calls) {
		return got, fmt.Errorf("%s: %w", sb.what[len(got)], err)
	}
	return got, err
}

// runCalls runs calls in thread t of p, as a batch or, with single, one at a time, and
// returns their results up to the first that failed, with its error. A batch takes the
// upper part of the scratch area: the lower part may hold the calls' arguments.
func runCalls(p *process, t *thread, single bool, calls []ptrace.BatchCall) ([]uint64, error) {
	if single {
		var got []uint64
		for _, c := range calls {
			ret, err := t.syscall(c.Nr, c.Args[:]...)
			if err != nil {
				return got, err
			}
			got = append(got, ret)
		}
		return got, nil
	}
	var got []uint64
	for len(calls) > 0 {
		n := min(len(calls), batchMax)
		part, err := runBatch(p, t, calls[:n])
		got = append(got, part...)
		if err != nil {
			return got, err
		}
		calls = calls[n:]
	}
	return got, nil
}

// runBatch runs at most batchMax calls as one batch in thread t.
func runBatch(p *process, t *thread, calls []ptrace.BatchCall) ([]uint64, error) {
	mask, err := startBatch(p, t, calls)
	if err != nil {
		return nil, err
	}
	return finishBatch(p, t, calls, mask)
}

// startBatch writes the batch code (once) and the table of calls into p's scratch area
// and starts thread t on them; it returns t's signal mask for finishBatch.
func startBatch(p *process, t *thread, calls []ptrace.BatchCall) (uint64, error) {
	if !p.batchCode {
		if err := p.poke(p.scratch+scratchBatch, ptrace.BatchCode); err != nil {
			return 0, err
		}
		p.batchCode = true
	}
	if err := p.poke(p.scratch+scratchBatchTab, ptrace.EncodeBatch(calls)); err != nil {
		return 0, err
	}
	in := ptrace.Injector{Insn: p.sysInsn, DiscardSignals: true}
	return in.StartBatch(t.tid, t.tmpl, p.scratch+scratchBatch, p.scratch+scratchBatchTab, len(calls))
}

// finishBatch waits for the batch startBatch started and returns its results up to the
// first call that failed, with its error.
func finishBatch(p *process, t *thread, calls []ptrace.BatchCall, mask uint64) ([]uint64, error) {
	in := ptrace.Injector{Insn: p.sysInsn, DiscardSignals: true}
	if err := in.FinishBatch(t.tid, p.scratch+scratchBatch, len(calls), mask); err != nil {
		return nil, err
	}
	table := make([]byte, len(calls)*ptrace.BatchEntrySize)
	if _, err := p.mem.ReadAt(table, int64(p.scratch+scratchBatchTab)); err != nil {
		return nil, fmt.Errorf("reading memory of %d at %#x: %w", p.pid, p.scratch+scratchBatchTab, err)
	}
	return ptrace.BatchResults(t.tid, calls, table)
}
