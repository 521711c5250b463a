package restore

import (
	"fmt"
	"slices"

	"golang.org/x/sys/unix"
)

// Process groups whose leader is gone (zdtm's zombie01: a child makes its own group,
// forks, and exits; its child keeps the group, whose id is no live process's). A process
// can only join a group whose leader exists, so before the first member of such a group is
// cloned, its parent clones a helper with the group's id as its PID, in its own session,
// which makes itself the leader (setpgid(0, 0)); the members join it as they are born
// (or once all exist). Once the tree exists the helper is killed and reaped: first by
// imgtool, its tracer, then by its parent, made to wait4 for it, before the tree runs. It
// is cloned with no exit signal, so its parent never hears of it. The group outlives it,
// as it did its leader. CRIU makes such helpers too (TASK_HELPER). The root's own group
// and session are left as inherited (like CRIU's shell jobs); a session without its
// leader is refused.

// groupHelperFor returns the group id pp needs a helper for, or 0.
func (pl *plan) groupHelperFor(pp *procPlan) int {
	root := pl.all[0]
	if pp == root || pp.pgid == pp.pid || pp.sid == pp.pid || pp.pgid == root.pgid || pl.inTree(pp.pgid) {
		return 0
	}
	return pp.pgid
}

// inTree tells whether pid is a process of the set, live or zombie.
func (pl *plan) inTree(pid int) bool { return hasPid(pl.all, pid) }

// isLive tells whether pid is a live process of the set.
func (pl *plan) isLive(pid int) bool { return hasPid(pl.procs, pid) }

// hasPid tells whether one of ps is process pid.
func hasPid(ps []*procPlan, pid int) bool {
	return slices.ContainsFunc(ps, func(p *procPlan) bool { return p.pid == pid })
}

// checkGroups refuses a process whose group has no leader in the tree when its parent,
// whose helper would lead the group, is in another session, and a process whose session
// has no leader in the tree (other than the root's), and, without pl.shellJob, a root that
// did not lead its session: the restore leaves it in imgtool's.
func checkGroups(pl *plan) error {
	root := pl.all[0]
	if root.sid != root.pid && !pl.shellJob {
		return fmt.Errorf("pid %d, the root, did not lead its session %d (a set of dump --shell-job or criu dump --shell-job): "+
			"restore it with --shell-job, which puts it in imgtool's session", root.pid, root.sid)
	}
	for _, pp := range pl.all[1:] {
		if pp.sid != pp.pid && pp.sid != root.sid && !pl.inTree(pp.sid) {
			return fmt.Errorf("pid %d: session %d has no leader in the set: not supported", pp.pid, pp.sid)
		}
		if g := pl.groupHelperFor(pp); g != 0 && pp.parent.sid != pp.sid {
			return fmt.Errorf("pid %d: process group %d has no leader in the set, and the parent is in another session: not supported", pp.pid, g)
		}
	}
	return nil
}

// spawnGroupLeader makes parent clone a helper with PID pgid that leads a new group.
func (r *restorer) spawnGroupLeader(parent *process, pgid int) error {
	if err := parent.leader().clone3(0, 0, pgid); err != nil {
		return fmt.Errorf("process group %d: %w", pgid, err)
	}
	h := &process{pid: pgid, sysInsn: parent.sysInsn, scratch: parent.scratch, specials: parent.specials}
	r.groupLeaders[pgid] = h
	r.groupParents[pgid] = parent
	t, err := stopAndAttach(pgid, h)
	if err != nil {
		return err
	}
	h.threads = []*thread{t}
	if _, err := t.syscall(unix.SYS_SETPGID, 0, 0); err != nil {
		return fmt.Errorf("process group %d: %w", pgid, err)
	}
	return nil
}

// reapGroupLeaders kills the group helpers, once every member is in its group, and has
// each reaped by its parent.
func (r *restorer) reapGroupLeaders() error {
	for pgid, h := range r.groupLeaders {
		killAndReap([]*process{h})
		delete(r.groupLeaders, pgid)
		parent := r.groupParents[pgid]
		if _, err := parent.leader().syscall(unix.SYS_WAIT4, uint64(pgid), 0, unix.WALL, 0); err != nil {
			return fmt.Errorf("process group %d: reaping its helper: %w", pgid, err)
		}
	}
	return nil
}
