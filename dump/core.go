package dump

import (
	"fmt"

	core_x86 "github.com/checkpoint-restore/go-criu/v8/crit/images/core-x86"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/creds"
	criu_core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	criu_sa "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-sa"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/rlimit"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/rseq"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/siginfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/timer"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/imgtool/imgtool/image"
	"github.com/imgtool/imgtool/internal/ptrace"
)

// cgSetID is the cgroup set CRIU 4.2 names in inventory and thread_core although it
// writes no cgroup.img for tasks in the root cgroup set; a restore accepts it.
const cgSetID = 1

func gpregs(r *unix.PtraceRegs) *core_x86.UserX86RegsEntry {
	return &core_x86.UserX86RegsEntry{
		R15: proto.Uint64(r.R15), R14: proto.Uint64(r.R14), R13: proto.Uint64(r.R13), R12: proto.Uint64(r.R12),
		Bp: proto.Uint64(r.Rbp), Bx: proto.Uint64(r.Rbx), R11: proto.Uint64(r.R11), R10: proto.Uint64(r.R10),
		R9: proto.Uint64(r.R9), R8: proto.Uint64(r.R8), Ax: proto.Uint64(r.Rax), Cx: proto.Uint64(r.Rcx),
		Dx: proto.Uint64(r.Rdx), Si: proto.Uint64(r.Rsi), Di: proto.Uint64(r.Rdi), OrigAx: proto.Uint64(r.Orig_rax),
		Ip: proto.Uint64(r.Rip), Cs: proto.Uint64(r.Cs), Flags: proto.Uint64(r.Eflags), Sp: proto.Uint64(r.Rsp),
		Ss: proto.Uint64(r.Ss), FsBase: proto.Uint64(r.Fs_base), GsBase: proto.Uint64(r.Gs_base),
		Ds: proto.Uint64(r.Ds), Es: proto.Uint64(r.Es), Fs: proto.Uint64(r.Fs), Gs: proto.Uint64(r.Gs),
		Mode: core_x86.UserX86RegsMode_NATIVE.Enum(),
	}
}

// tlsEntry converts a GDT TLS slot (struct user_desc with its flag bitfield).
func tlsEntry(d ptrace.UserDesc) *core_x86.UserDescT {
	bit := func(n uint) *bool { return proto.Bool(d.Flags&(1<<n) != 0) }
	return &core_x86.UserDescT{
		EntryNumber: proto.Uint32(d.EntryNumber), BaseAddr: proto.Uint32(d.BaseAddr), Limit: proto.Uint32(d.Limit),
		Seg_32Bit: bit(0), ContentsH: bit(2), ContentsL: bit(1), ReadExecOnly: bit(3),
		LimitInPages: bit(4), SegNotPresent: bit(5), Usable: bit(6),
	}
}

func signalQueue(sigs [][]byte) *siginfo.SignalQueueEntry {
	q := &siginfo.SignalQueueEntry{}
	for _, s := range sigs {
		q.Signals = append(q.Signals, &siginfo.SiginfoEntry{Siginfo: s})
	}
	return q
}

// capWords splits a 64-bit capability set into CRIU's two 32-bit words.
func capWords(v uint64) []uint32 { return []uint32{uint32(v), uint32(v >> 32)} }

func credsEntry(t *thread) (*creds.CredsEntry, error) {
	st := t.state.status
	uids, err := st.Ints("Uid")
	if err != nil {
		return nil, err
	}
	gids, err := st.Ints("Gid")
	if err != nil {
		return nil, err
	}
	if len(uids) != 4 || len(gids) != 4 {
		return nil, fmt.Errorf("thread %d: bad Uid/Gid lines", t.tid)
	}
	groups, err := st.Ints("Groups")
	if err != nil {
		return nil, err
	}
	c := &creds.CredsEntry{
		Uid: proto.Uint32(uids[0]), Euid: proto.Uint32(uids[1]), Suid: proto.Uint32(uids[2]), Fsuid: proto.Uint32(uids[3]),
		Gid: proto.Uint32(gids[0]), Egid: proto.Uint32(gids[1]), Sgid: proto.Uint32(gids[2]), Fsgid: proto.Uint32(gids[3]),
		Secbits: proto.Uint32(t.state.secbits), Groups: groups,
	}
	for _, f := range []struct {
		key string
		dst *[]uint32
	}{{"CapInh", &c.CapInh}, {"CapPrm", &c.CapPrm}, {"CapEff", &c.CapEff}, {"CapBnd", &c.CapBnd}, {"CapAmb", &c.CapAmb}} {
		v, err := st.Hex(f.key)
		if err != nil {
			return nil, err
		}
		*f.dst = capWords(v)
	}
	if nnp := st["NoNewPrivs"]; nnp != "" && nnp != "0" {
		c.NoNewPrivs = proto.Uint32(1)
	}
	return c, nil
}

// coreEntry builds core-TID.img for thread t of p.
func coreEntry(p *process, t *thread) (*criu_core.CoreEntry, error) {
	s := &t.state
	fp := s.fpregs
	if s.cet {
		fp.Xsave.Cet = &core_x86.UserX86CetEntry{Cet: proto.Uint64(s.cetState), Ssp: proto.Uint64(s.cetSSP)}
	}
	ti := &core_x86.ThreadInfoX86{ClearTidAddr: proto.Uint64(s.clearTid), Gpregs: gpregs(&t.regs), Fpregs: fp}
	for _, d := range s.tls {
		ti.Tls = append(ti.Tls, tlsEntry(d))
	}
	cr, err := credsEntry(t)
	if err != nil {
		return nil, err
	}
	tc := &criu_core.ThreadCoreEntry{
		FutexRla: proto.Uint64(s.robustHead), FutexRlaLen: proto.Uint32(uint32(s.robustLen)),
		SchedNice: proto.Int32(s.nice), SchedPolicy: proto.Uint32(s.schedPolicy),
		Sas:      &criu_core.ThreadSasEntry{SsSp: proto.Uint64(s.sasSp), SsSize: proto.Uint64(s.sasSize), SsFlags: proto.Uint32(s.sasFlags)},
		SignalsP: signalQueue(s.pending), Creds: cr, Comm: proto.String(s.comm), CgSet: proto.Uint32(cgSetID),
	}
	if s.hasSchedPrio {
		tc.SchedPrio = proto.Uint32(s.schedPrio)
	}
	if s.pdeathSig != 0 {
		tc.PdeathSig = proto.Uint32(s.pdeathSig)
	}
	if s.hasRseq && s.rseq.RseqAbiPointer != 0 {
		tc.RseqEntry = &rseq.RseqEntry{RseqAbiPointer: proto.Uint64(s.rseq.RseqAbiPointer),
			RseqAbiSize: proto.Uint32(s.rseq.RseqAbiSize), Signature: proto.Uint32(s.rseq.Signature)}
	}
	core := &criu_core.CoreEntry{Mtype: criu_core.CoreEntry_X86_64.Enum(), ThreadInfo: ti, ThreadCore: tc}
	if t != p.threads[0] {
		tc.BlkSigset = proto.Uint64(t.origMask)
		return core, nil
	}
	core.Tc = taskCore(p, t)
	return core, nil
}

// taskCore builds the leader's task_core_entry (process-wide state).
func taskCore(p *process, leader *thread) *criu_core.TaskCoreEntry {
	ps := p.state
	it := func(v [4]uint64) *timer.ItimerEntry {
		return &timer.ItimerEntry{Isec: proto.Uint64(v[0]), Iusec: proto.Uint64(v[1]), Vsec: proto.Uint64(v[2]), Vusec: proto.Uint64(v[3])}
	}
	tc := &criu_core.TaskCoreEntry{
		TaskState: proto.Uint32(image.TaskAlive), ExitCode: proto.Uint32(0), Personality: proto.Uint32(ps.personality),
		Flags: proto.Uint32(ps.stat.Flags), BlkSigset: proto.Uint64(leader.origMask),
		Comm: proto.String(leader.state.comm),
		Timers: &timer.TaskTimersEntry{Real: it(ps.itimers[0]), Virt: it(ps.itimers[1]), Prof: it(ps.itimers[2]),
			Posix: posixTimerEntries(ps.posixTimers)},
		Rlimits:  &criu_core.TaskRlimitsEntry{},
		SignalsS: signalQueue(ps.sharedPending), OomScoreAdj: proto.Int32(ps.oomScoreAdj),
		ChildSubreaper: proto.Bool(ps.subreaper),
	}
	if p.stopSig != 0 {
		tc.TaskState, tc.StopSigno = proto.Uint32(image.TaskStopped), proto.Uint32(p.stopSig)
	}
	if ps.hasLoginuid {
		tc.Loginuid = proto.Uint32(ps.loginuid)
	}
	for _, r := range ps.rlimits {
		tc.Rlimits.Rlimits = append(tc.Rlimits.Rlimits, &rlimit.RlimitEntry{Cur: proto.Uint64(r.Cur), Max: proto.Uint64(r.Max)})
	}
	for _, sig := range image.SigactionSignals() {
		a := ps.sigactions[sig-1]
		tc.Sigactions = append(tc.Sigactions, &criu_sa.SaEntry{Sigaction: proto.Uint64(a.handler),
			Flags: proto.Uint64(a.flags), Restorer: proto.Uint64(a.restorer), Mask: proto.Uint64(a.mask),
			CompatSigaction: proto.Bool(false)})
	}
	return tc
}
