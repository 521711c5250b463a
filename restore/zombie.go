package restore

import (
	"errors"
	"fmt"

	criu_core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"golang.org/x/sys/unix"

	"github.com/imgtool/imgtool/image"
	"github.com/imgtool/imgtool/internal/ptrace"
)

// A zombie of the set (task_state TASK_DEAD: a process that had exited and was not reaped
// when the tree was dumped) has only a pstree entry and a core with its exit code and
// name; CRIU writes nothing else for it. It is created like any process, from its parent,
// with its PID, session and group, and then made to end as it ended, before any process
// of the tree runs: exit_group with its status, or killed by its signal (default action,
// not dumpable, so that no core file is written; a signal that does not kill is replaced
// by SIGABRT, as CRIU does). imgtool, its tracer, collects the death; the kernel then
// hands the zombie to its parent, whose wait gets the status.

// loadZombie tells by the leader's core c whether p is a zombie, filling it in.
func loadZombie(c *criu_core.CoreEntry, p *procPlan) bool {
	if c.GetTc().GetTaskState() != image.TaskDead {
		return false
	}
	p.dead, p.exitCode, p.comm = true, c.GetTc().GetExitCode(), c.GetTc().GetComm()
	return true
}

// spawnZombie makes parent clone the zombie pp with its PID, session and group; it dies in
// killZombies.
func (r *restorer) spawnZombie(parent *process, pp *procPlan) error {
	if err := parent.leader().clone3(0, uint64(unix.SIGCHLD), pp.pid); err != nil {
		return err
	}
	p := &process{pid: pp.pid, pl: pp, sysInsn: parent.sysInsn, scratch: parent.scratch, specials: parent.specials}
	r.zombies = append(r.zombies, p)
	r.dead[p.pid] = true
	t, err := stopAndAttach(pp.pid, p)
	if err != nil {
		return err
	}
	p.threads = []*thread{t}
	if err := p.openMem(); err != nil {
		return err
	}
	return r.setSessionAndGroup(p)
}

// fatalSignals are the signals whose default action ends a process (CRIU's SIG_FATAL_MASK).
const fatalSignals = 1<<unix.SIGHUP | 1<<unix.SIGINT | 1<<unix.SIGQUIT | 1<<unix.SIGILL | 1<<unix.SIGTRAP |
	1<<unix.SIGABRT | 1<<unix.SIGBUS | 1<<unix.SIGFPE | 1<<unix.SIGKILL | 1<<unix.SIGUSR1 |
	1<<unix.SIGSEGV | 1<<unix.SIGUSR2 | 1<<unix.SIGPIPE | 1<<unix.SIGALRM | 1<<unix.SIGTERM |
	1<<unix.SIGXCPU | 1<<unix.SIGXFSZ | 1<<unix.SIGVTALRM | 1<<unix.SIGPROF | 1<<unix.SIGIO |
	1<<unix.SIGSYS | 1<<unix.SIGSTKFLT | 1<<unix.SIGPWR

// killZombies makes every zombie end with its status and collects its death as its tracer.
func (r *restorer) killZombies() error {
	for len(r.zombies) > 0 {
		z := r.zombies[0]
		if err := r.killZombie(z); err != nil {
			return fmt.Errorf("restoring zombie %d: %w", z.pid, err)
		}
		z.mem.Close()
		r.zombies = r.zombies[1:]
	}
	return nil
}

func (r *restorer) killZombie(z *process) error {
	t := z.leader()
	code := z.pl.exitCode
	if name := z.pl.comm; name != "" {
		b := append([]byte(name), 0)
		if len(b) > 16 {
			b = append(b[:15], 0)
		}
		if err := z.poke(z.scratch+scratchStrBuf, b); err != nil {
			return err
		}
		if _, err := t.syscall(unix.SYS_PRCTL, unix.PR_SET_NAME, z.scratch+scratchStrBuf); err != nil {
			return err
		}
	}
	sig := unix.Signal(code & 0x7f)
	if sig == 0 {
		regs := t.tmpl
		regs.Rip, regs.Rax, regs.Orig_rax, regs.Rdi = z.sysInsn, unix.SYS_EXIT_GROUP, ^uint64(0), uint64(code>>8&0xff)
		if err := ptrace.SetRegs(t.tid, &regs); err != nil {
			return err
		}
		return runToDeath(t.tid, false)
	}
	if fatalSignals&(1<<sig) == 0 {
		sig = unix.SIGABRT
	}
	if _, err := t.syscall(unix.SYS_PRCTL, unix.PR_SET_DUMPABLE, 0); err != nil {
		return err
	}
	if sig != unix.SIGKILL { // SIGKILL's action is always the default, and cannot be set
		if err := z.poke(z.scratch+scratchArgs, make([]byte, 32)); err != nil { // SIG_DFL
			return err
		}
		if _, err := t.syscall(unix.SYS_RT_SIGACTION, uint64(sig), z.scratch+scratchArgs, 0, 8); err != nil {
			return err
		}
	}
	if err := ptrace.SetSigmask(t.tid, ^uint64(0)&^(1<<(sig-1))); err != nil {
		return err
	}
	if err := unix.Tgkill(z.pid, t.tid, sig); err != nil {
		return err
	}
	return runToDeath(t.tid, true)
}

// runToDeath resumes tid until it is gone, passing signals on when pass is set.
func runToDeath(tid int, pass bool) error {
	var sig unix.Signal
	for i := 0; i < 16; i++ {
		if err := ptrace.Cont(tid, sig); err != nil {
			if errors.Is(err, unix.ESRCH) { // already dying (SIGKILL): collect the death
				if _, werr := ptrace.Wait(tid); errors.Is(werr, ptrace.ErrGone) {
					return nil
				}
			}
			return err
		}
		st, err := ptrace.Wait(tid)
		if err != nil {
			if errors.Is(err, ptrace.ErrGone) {
				return nil
			}
			return err
		}
		sig = 0
		if pass && st.Kind == ptrace.StopSignal {
			sig = st.Sig
		}
	}
	return fmt.Errorf("thread %d does not die", tid)
}
