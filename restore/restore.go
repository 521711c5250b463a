package restore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imgtool/imgtool/image"
	"github.com/imgtool/imgtool/imgset"
	"github.com/imgtool/imgtool/internal/fpu"
	"github.com/imgtool/imgtool/internal/phase"
	"github.com/imgtool/imgtool/internal/procfs"
	"github.com/imgtool/imgtool/internal/ptrace"
)

// Options say how to restore.
type Options struct {
	// Detach leaves the restored tree running and returns once it runs. Otherwise
	// Restore waits for the root process and reports how it ended.
	Detach bool
	// PidFile, when set, receives the root's PID (decimal and a newline) once the tree runs.
	PidFile string
	// Progress, when set, is called as page bytes are written: done of total.
	Progress func(done, total int64)
	// Warn, when set, receives one line for each thing restored less than exactly but
	// within what CRIU also accepts (a resource limit this machine does not allow).
	Warn func(msg string)
	// FileLocks takes back the file locks of the set (filelocks.img), as criu restore
	// --file-locks does; a set holding locks is refused without it (file_lock.go).
	FileLocks bool
	// ShellJob restores a set whose terminal came from outside the tree (dump --shell-job,
	// criu dump --shell-job) onto imgtool's own: its standard input, which must be its
	// controlling terminal (tty.go).
	ShellJob bool
	// TCPEstablished restores TCP connections with their queues (criu restore
	// --tcp-established; sk_tcp.go); TCPClose restores them closed (--tcp-close). A set
	// holding a connection is refused without either.
	TCPEstablished, TCPClose bool
	// ExtUnixSk restores UNIX datagram sockets connected to a socket outside the set
	// (dump --ext-unix-sk, criu dump --ext-unix-sk: the peer's entry has USK_EXTERN) by
	// connecting them to the peer's name again, as criu restore --ext-unix-sk does; a
	// set holding one is refused without it (sk_unix.go).
	ExtUnixSk bool
}

// ExitError reports a restored root process that ended with a non-zero status or by a
// signal (Restore without Detach).
type ExitError struct {
	Pid    int
	Status unix.WaitStatus
}

func (e *ExitError) Error() string {
	return fmt.Sprintf("restored process %d %s", e.Pid, ptrace.DescribeStatus(e.Status))
}

// ExitCode is the status a shell would report for the root: its exit status, or 128 plus
// the number of the signal that killed it.
func (e *ExitError) ExitCode() int {
	if e.Status.Signaled() {
		return 128 + int(e.Status.Signal())
	}
	return e.Status.ExitStatus()
}

// setSource adapts *imgset.Set to source.
type setSource struct{ s *imgset.Set }

func (s setSource) open(name string) (imageFile, error) { return s.s.Open(name) }
func (s setSource) has(name string) bool                { return s.s.Has(name) }
func (s setSource) encrypted() bool                     { return s.s.Encrypted() }

// Restore recreates the process tree the image set describes, with the same PIDs, and
// lets it continue. Everything that can be checked is checked before the first process is
// created; if anything fails afterwards, every process created is killed. The set is only
// read. Restore makes the calling process a child subreaper (PR_SET_CHILD_SUBREAPER), so
// that the restored root becomes its child.
func Restore(ctx context.Context, opts Options, set *imgset.Set) error {
	return restoreFrom(ctx, opts, setSource{set})
}

func restoreFrom(ctx context.Context, opts Options, src source) error {
	phase.Mark("restore: started")
	pl, err := loadPlan(src)
	if err != nil {
		return err
	}
	phase.Mark("restore: read the images")
	pl.tcp.established, pl.tcp.close = opts.TCPEstablished, opts.TCPClose
	pl.extUnixSk, pl.shellJob = opts.ExtUnixSk, opts.ShellJob
	xs := fpu.CPULayout()
	if err := precheck(pl, xs); err != nil {
		return err
	}
	if err := checkLocks(pl, opts.FileLocks); err != nil {
		return err
	}
	if err := checkTTYs(pl, opts.ShellJob); err != nil { // tty.go
		return err
	}
	phase.Mark("restore: check")
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("becoming a child subreaper: %w", err)
	}
	r := &restorer{ctx: ctx, opts: opts, pl: pl, xs: xs, byPid: map[int]*process{}, dead: map[int]bool{},
		groupLeaders: map[int]*process{}, groupParents: map[int]*process{}}
	if err := ptrace.OnTracerThread(r.run); err != nil {
		return err
	}
	phase.Mark("restore: done")
	root := pl.procs[0].pid
	if opts.PidFile != "" {
		if err := writePidFile(opts.PidFile, root); err != nil {
			unix.Kill(root, unix.SIGKILL)
			return err
		}
	}
	if opts.Detach {
		return nil
	}
	return waitRoot(ctx, r, root)
}

// waitRoot waits for the restored root to end. A cancelled ctx kills the restored tree: a
// restore without Detach owns its tree like a foreground job.
func waitRoot(ctx context.Context, r *restorer, root int) error {
	done := make(chan error, 1)
	go func() {
		var ws unix.WaitStatus
		for {
			_, err := unix.Wait4(root, &ws, 0, nil)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				done <- fmt.Errorf("waiting for restored process %d: %w", root, err)
				return
			}
			if ws.Exited() || ws.Signaled() {
				if ws.Exited() && ws.ExitStatus() == 0 {
					done <- nil
				} else {
					done <- &ExitError{Pid: root, Status: ws}
				}
				return
			}
		}
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		for _, p := range r.procs {
			unix.Kill(p.pid, unix.SIGKILL)
		}
		<-done
		return ctx.Err()
	}
}

// writePidFile writes the pid atomically (a temporary file renamed into place).
func writePidFile(path string, pid int) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("pid file: %w", err)
	}
	_, err = tmp.WriteString(strconv.Itoa(pid) + "\n")
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("pid file: %w", err)
	}
	return nil
}

// restorer holds the state of one restore; its methods run on the tracer thread.
// singleCalls makes every restore inject its calls one at a time, as where the scratch
// area cannot be executable: for the tests of that way.
var singleCalls bool

type restorer struct {
	ctx     context.Context
	noBatch bool // the scratch area is not executable: no ptrace.BatchCode (memory.go)
	opts    Options
	pl      *plan
	xs      fpu.Layout
	procs   []*process // created processes, in creation order
	byPid   map[int]*process
	zombies []*process // created zombies (zombie.go), until they are dead
	dead    map[int]bool
	// groupLeaders are the helpers leading groups whose leader is gone, by group id,
	// until they are reaped, and groupParents the processes that cloned them (group.go).
	groupLeaders, groupParents map[int]*process

	helper    *process
	kern      kernelSpecials // the running kernel's vvar/vvar_vclock/vdso, as moved in the helper
	scratch   uint64
	fdBase    int // first fd number above every fd any process uses
	pidfdFd   int // fd (in every process) of a pidfd of this process, for pidfd_getfd
	descs     *descriptions
	inherited *inheritedState  // what every process has from the helper (creds.go)
	shared    map[any]*os.File // files handed over to every process (openShared)
	xsaveBuf  []byte           // the kernel's XSAVE size, each thread's state built in it (setFinalRegisters)
	warned    map[string]bool  // warnings already given, so each is said once per restore
}

// warn reports msg once through Options.Warn.
func (r *restorer) warn(msg string) {
	if r.opts.Warn == nil || r.warned[msg] {
		return
	}
	if r.warned == nil {
		r.warned = map[string]bool{}
	}
	r.warned[msg] = true
	r.opts.Warn(msg)
}

// kernelSpecials is where the helper's special mappings sit once parked in the hole.
type kernelSpecials struct {
	vvar, vclock, vdso span
	insnOff            uint64 // offset of a syscall instruction inside the vDSO
}

// run restores the tree; on any error it kills everything it created.
func (r *restorer) run() (err error) {
	defer func() {
		if err != nil {
			r.abort()
		}
		if r.descs != nil {
			r.descs.close()
		}
		r.closeShared()
		for _, p := range r.procs {
			if p.mem != nil {
				p.mem.Close()
			}
		}
	}()
	if err := r.startHelper(); err != nil {
		return err
	}
	phase.Mark("restore: start the helper")
	if err := r.createTree(); err != nil {
		return err
	}
	phase.Mark("restore: make the other processes")
	if err := r.setForeground(); err != nil { // tty.go
		return err
	}
	if err := r.readInherited(); err != nil { // creds.go
		return err
	}
	// Every process's first batch is started before any is waited for: they run at
	// once, on every core, where each process waited for its own in turn. Processes
	// sharing an fd table hand files over through it, one after another.
	firsts := make([]*firstBatch, len(r.procs))
	for i, p := range r.procs {
		if err := r.ctx.Err(); err != nil {
			return err
		}
		if p.pl.tableShared() {
			continue
		}
		fb, err := r.startProcess(p)
		if err != nil {
			return fmt.Errorf("restoring %d: %w", p.pid, err)
		}
		firsts[i] = fb
	}
	// The last batches too (signal actions): every one started before any is waited for.
	lasts := make([]*lastBatch, len(r.procs))
	for i, p := range r.procs {
		if err := r.ctx.Err(); err != nil {
			return err
		}
		fb := firsts[i]
		if fb == nil {
			var err error
			if fb, err = r.startProcess(p); err != nil {
				return fmt.Errorf("restoring %d: %w", p.pid, err)
			}
		}
		lb, err := r.finishProcess(p, fb)
		if err != nil {
			return fmt.Errorf("restoring %d: %w", p.pid, err)
		}
		lasts[i] = lb
	}
	for i, p := range r.procs {
		if err := r.endProcess(p, lasts[i]); err != nil {
			return fmt.Errorf("restoring %d: %w", p.pid, err)
		}
	}
	phase.Mark("restore: process state, threads")
	if err := r.closeSharedSlots(); err != nil {
		return err
	}
	if err := r.setOwners(); err != nil {
		return err
	}
	if err := r.armDescriptions(); err != nil {
		return err
	}
	if err := r.leaveTCPRepair(); err != nil { // sk_tcp.go
		return err
	}
	// Every file is open: the links the dump made (--link-remap) go before the tree runs.
	if err := r.removeLinks(); err != nil { // remap.go
		return err
	}
	phase.Mark("restore: arm files")
	defer phase.Mark("restore: release")
	return r.release()
}

// groupExists tells whether the leader of group pgid exists now: a process of the tree,
// a zombie made from one, or a helper (group.go).
func (r *restorer) groupExists(pgid int) bool {
	return r.byPid[pgid] != nil || r.dead[pgid] || r.groupLeaders[pgid] != nil
}

// abort kills every process created so far, the helper included, and reaps them.
func (r *restorer) abort() {
	all := append(append([]*process{}, r.procs...), r.zombies...)
	for _, h := range r.groupLeaders {
		all = append(all, h)
	}
	if r.helper != nil {
		all = append(all, r.helper)
	}
	killAndReap(all)
}

// startHelper starts the helper and shapes it into the blank template of every process:
// no fds, no mappings but the scratch area and the kernel's special mappings parked at a
// hole no restored process uses, and a pidfd of us at a high fd.
func (r *restorer) startHelper() error {
	pid, err := startHelper()
	if err != nil {
		return err
	}
	h := &process{pid: pid}
	r.helper = h
	t, err := newThread(pid, h)
	if err != nil {
		return err
	}
	h.threads = []*thread{t}
	if err := ptrace.SetSigmask(pid, ^uint64(0)); err != nil {
		return fmt.Errorf("the helper: %w", err)
	}
	if err := h.openMem(); err != nil {
		return err
	}
	maps, err := procfs.ReadMaps(pid)
	if err != nil {
		return err
	}
	cur := kernelSpecialsIn(maps)
	if cur.vdso.end == 0 {
		return errors.New("the helper has no vDSO: cannot inject syscalls")
	}
	code := make([]byte, cur.vdso.end-cur.vdso.start)
	if _, err := h.mem.ReadAt(code, int64(cur.vdso.start)); err != nil {
		return fmt.Errorf("reading the vDSO: %w", err)
	}
	if cur.insnOff, err = ptrace.FindSyscallInsn(code); err != nil {
		return err
	}
	h.sysInsn = cur.vdso.start + cur.insnOff

	// The hole: free in the helper and in every restored address space.
	var used []span
	for _, m := range maps {
		used = append(used, span{m.Start, m.End})
	}
	for _, p := range r.pl.procs {
		for _, v := range p.mm.Vmas {
			used = append(used, span{v.GetStart(), v.GetEnd()})
		}
	}
	specialSize := (cur.vvar.end - cur.vvar.start) + (cur.vclock.end - cur.vclock.start) + (cur.vdso.end - cur.vdso.start)
	hole, ok := findHole(used, 1<<20, scratchSize+specialSize, 1<<20)
	if !ok {
		return errors.New("no address range is free in every restored process for the restore's scratch area")
	}
	r.scratch, h.scratch = hole, hole
	// Executable too: the batches of mmap calls run from it (memory.go, mapQueue). Where
	// writable and executable memory is refused (an LSM's execmem, MDWE), it is mapped
	// without and the calls are made one at a time, as before batches.
	mapScratch := func(prot uint64) error {
		_, err := t.syscall(unix.SYS_MMAP, hole, scratchSize, prot,
			unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_FIXED_NOREPLACE, ^uint64(0), 0)
		return err
	}
	var mapErr error = unix.EACCES
	if !singleCalls {
		mapErr = mapScratch(unix.PROT_READ | unix.PROT_WRITE | unix.PROT_EXEC)
	}
	if mapErr != nil {
		if !errors.Is(mapErr, unix.EACCES) && !errors.Is(mapErr, unix.EPERM) {
			return mapErr
		}
		if err := mapScratch(unix.PROT_READ | unix.PROT_WRITE); err != nil {
			return err
		}
		r.noBatch = true
	}
	// Park vvar, vvar_vclock and vdso in the hole, in their order, right after the scratch.
	at := hole + scratchSize
	move := func(s span) (span, error) {
		if s.end == 0 {
			return span{}, nil
		}
		n := s.end - s.start
		if _, err := t.syscall(unix.SYS_MREMAP, s.start, n, n, unix.MREMAP_MAYMOVE|unix.MREMAP_FIXED, at); err != nil {
			return span{}, err
		}
		out := span{at, at + n}
		at += n
		return out, nil
	}
	if r.kern.vvar, err = move(cur.vvar); err != nil {
		return err
	}
	if r.kern.vclock, err = move(cur.vclock); err != nil {
		return err
	}
	if r.kern.vdso, err = move(cur.vdso); err != nil {
		return err
	}
	r.kern.insnOff = cur.insnOff
	h.sysInsn = r.kern.vdso.start + r.kern.insnOff
	h.specials = r.kern
	// Unmap everything else the exec left: the helper's code and stack.
	maps, err = procfs.ReadMaps(pid)
	if err != nil {
		return err
	}
	for _, m := range maps {
		if m.Start >= hole && m.End <= at || m.Path == "[vsyscall]" {
			continue
		}
		if _, err := t.syscall(unix.SYS_MUNMAP, m.Start, m.End-m.Start); err != nil {
			return err
		}
	}
	// No inherited fds, then a pidfd of us above every fd number of the set.
	if _, err := t.syscall(unix.SYS_CLOSE_RANGE, 0, ^uint64(0)>>32, 0); err != nil {
		return err
	}
	if err := r.raiseNofile(pid); err != nil {
		return err
	}
	fd, err := t.syscall(unix.SYS_PIDFD_OPEN, uint64(os.Getpid()), 0)
	if err != nil {
		return err
	}
	r.pidfdFd = r.fdBase
	if _, err := t.syscall(unix.SYS_DUP3, fd, uint64(r.pidfdFd), 0); err != nil {
		return err
	}
	if _, err := t.syscall(unix.SYS_CLOSE, fd); err != nil {
		return err
	}
	return nil
}

// raiseNofile lets the helper use the fd numbers the restore parks descriptions at (its
// soft RLIMIT_NOFILE is raised to the hard one; the restored processes get their own
// limits at the end). precheck made sure the hard limit allows them.
func (r *restorer) raiseNofile(pid int) error {
	r.fdBase = fdBase(r.pl)
	var lim unix.Rlimit
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, nil, &lim); err != nil {
		return fmt.Errorf("reading the helper's fd limit: %w", err)
	}
	lim.Cur = lim.Max
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &lim, nil); err != nil {
		return fmt.Errorf("raising the helper's fd limit: %w", err)
	}
	return nil
}

// fdBase is the first fd number above every fd any process of the set uses: the restore
// parks the open file descriptions from there on.
func fdBase(pl *plan) int {
	maxFd := 2
	for _, p := range pl.procs {
		for _, fd := range p.fds {
			maxFd = max(maxFd, int(fd.GetFd()))
		}
	}
	return maxFd + 1
}

// fdsNeeded is the soft RLIMIT_NOFILE the restore needs while it builds the tree: the
// set's fd numbers, the pidfd slot and one slot per open file description.
func fdsNeeded(pl *plan) uint64 {
	return uint64(fdBase(pl) + 1 + len(pl.files))
}

// createTree creates every process with its PID and its memory: the root from the helper,
// each other process from its parent once the parent's memory is restored (so that the
// pages they shared are shared again: cow.go), sessions and groups set as each is born.
// The open file descriptions are created in the root before it forks, so that every
// process inherits them.
func (r *restorer) createTree() error {
	rootPlan := r.pl.procs[0]
	root, err := r.spawn(r.helper, rootPlan)
	if err != nil {
		return err
	}
	// The helper is done: its death makes the root our child (we are a subreaper).
	h := r.helper
	r.helper = nil
	killAndReap([]*process{h})
	h.mem.Close()

	phase.Mark("restore: make the root")
	if r.descs, err = r.createDescriptions(root); err != nil {
		return err
	}
	phase.Mark("restore: open files")
	if err := r.setCtty(root); err != nil { // tty.go: a session leader's terminal, before it forks
		return err
	}
	if err := r.restoreMemory(root, nil, nil); err != nil {
		return fmt.Errorf("restoring %d: %w", root.pid, err)
	}
	phase.Mark("restore: root memory")
	for rest := r.pl.all[1:]; len(rest) > 0; {
		if err := r.ctx.Err(); err != nil {
			return err
		}
		pp := rest[0]
		parent := r.byPid[pp.parent.pid]
		if n := r.siblingsAtOnce(parent, rest); n > 1 {
			made, err := r.spawnSiblings(parent, rest[:n])
			if err != nil && !errors.Is(err, unix.EEXIST) {
				return err
			}
			// Each was born with the same mappings, its parent's: they are read once,
			// before any is changed.
			var born []procfs.Mapping
			if len(made) > 0 {
				if born, err = procfs.ReadMaps(made[0].pid); err != nil {
					return err
				}
			}
			for _, p := range made {
				if err := r.restoreMemory(p, parent, born); err != nil {
					return fmt.Errorf("restoring %d: %w", p.pid, err)
				}
			}
			if len(made) > 0 {
				rest = rest[len(made):]
				continue
			}
			// Its PID is still held (a process just killed): the single clone3
			// below retries it for a while.
		}
		rest = rest[1:]
		if g := r.pl.groupHelperFor(pp); g != 0 && r.groupLeaders[g] == nil {
			if err := r.spawnGroupLeader(parent, g); err != nil {
				return err
			}
		}
		if pp.dead {
			if err := r.spawnZombie(parent, pp); err != nil {
				return err
			}
			continue
		}
		if err := r.holdForFork(parent, pp); err != nil {
			return err
		}
		p, err := r.spawn(parent, pp)
		if err != nil {
			return err
		}
		if err := r.restoreMemory(p, parent, nil); err != nil {
			return fmt.Errorf("restoring %d: %w", p.pid, err)
		}
	}
	if err := r.restoreHeld(); err != nil {
		return err
	}
	if err := r.joinLaterGroups(); err != nil {
		return err
	}
	if err := r.reapGroupLeaders(); err != nil {
		return err
	}
	// The zombies die now, before anything of the tree runs: their parents find them
	// dead, with their status, as they were left.
	return r.killZombies()
}

// joinLaterGroups puts each process (zombies included) whose process group is led by a
// process created after it into that group, now that every process exists: a group is
// joined at birth only when its leader is already there.
func (r *restorer) joinLaterGroups() error {
	for _, p := range append(append([]*process{}, r.procs...), r.zombies...) {
		pp := p.pl
		if pp.sid == pp.pid || pp.pgid == pp.pid || !r.groupExists(pp.pgid) {
			continue
		}
		if cur, err := unix.Getpgid(p.pid); err == nil && cur == pp.pgid {
			continue
		}
		if _, err := p.leader().syscall(unix.SYS_SETPGID, 0, uint64(pp.pgid)); err != nil {
			return fmt.Errorf("pid %d joining process group %d: %w", p.pid, pp.pgid, err)
		}
	}
	return nil
}

// spawn makes parent clone the process pp with its PID, and sets its session and group.
func (r *restorer) spawn(parent *process, pp *procPlan) (*process, error) {
	if err := parent.leader().clone3(processFlags(pp), uint64(unix.SIGCHLD), pp.pid); err != nil {
		return nil, err
	}
	return r.adopt(parent, pp)
}

// processFlags are the clone flags of the process pp.
func processFlags(pp *procPlan) uint64 {
	if pp.sharesFiles() {
		return unix.CLONE_FILES
	}
	return 0
}

// siblingsAtOnce is how many processes at the head of rest (in tree order) parent may
// clone in one batch (spawnSiblings): its children, up to cloneChunk, none of which is a
// zombie, needs a group leader made first, or has parent hold pages for its fork.
func (r *restorer) siblingsAtOnce(parent *process, rest []*procPlan) int {
	if !parent.traps {
		return 0
	}
	n := 0
	for n < len(rest) && n < cloneChunk {
		pp := rest[n]
		if pp.parent.pid != parent.pid || pp.dead || r.pl.groupHelperFor(pp) != 0 || len(pp.forkPages) > 0 {
			break
		}
		n++
	}
	return n
}

// spawnSiblings makes parent clone the processes pps, each with its PID, in one batch
// (each clone reports an event stop on the way, and the new processes wait in their
// first stop), then adopts each: where each clone3 was a batch of its own, a tree of 200
// processes waited for 200 more stops. It returns the processes made: a failed clone3
// stops the batch, with its error.
func (r *restorer) spawnSiblings(parent *process, pps []*procPlan) ([]*process, error) {
	pids := make([]int, len(pps))
	for i, pp := range pps {
		pids[i] = pp.pid
	}
	got, err := cloneAtOnce(parent, pids, func(i int) uint64 { return processFlags(pps[i]) }, uint64(unix.SIGCHLD))
	var made []*process
	for i, pid := range got {
		var aerr error
		if int(pid) != pps[i].pid {
			aerr = fmt.Errorf("creating %d: the kernel gave pid %d", pps[i].pid, pid)
			unix.Kill(int(pid), unix.SIGKILL)
		} else {
			var p *process
			if p, aerr = r.adopt(parent, pps[i]); aerr == nil { // among r.procs, even failed
				made = append(made, p)
				continue
			}
		}
		// The processes cloned after it are not among r.procs, which a failed restore
		// kills: killed here.
		for _, left := range got[i+1:] {
			unix.Kill(int(left), unix.SIGKILL)
		}
		return made, aerr
	}
	if err != nil {
		return made, fmt.Errorf("creating %d: %w", pps[len(got)].pid, err)
	}
	return made, nil
}

// adopt takes the process pp that parent has just cloned: it waits for its first stop,
// and sets its session, group and terminal.
func (r *restorer) adopt(parent *process, pp *procPlan) (*process, error) {
	p := &process{pid: pp.pid, pl: pp, sysInsn: parent.sysInsn, scratch: parent.scratch, specials: parent.specials, traps: !r.noBatch}
	r.procs = append(r.procs, p)
	r.byPid[p.pid] = p
	t, err := stopAndAttach(pp.pid, p)
	if err != nil {
		return nil, err
	}
	p.threads = []*thread{t}
	if err := p.openMem(); err != nil {
		return nil, err
	}
	if err := r.setSessionAndGroup(p); err != nil {
		return nil, err
	}
	return p, r.setCtty(p) // tty.go
}

// setSessionAndGroup gives a new process its session and process group. A session or
// group whose leader is outside the tree is left as inherited (like CRIU's shell jobs).
func (r *restorer) setSessionAndGroup(p *process) error {
	pp := p.pl
	t := p.leader()
	if pp.sid == pp.pid {
		_, err := t.syscall(unix.SYS_SETSID)
		return err
	}
	if pp.pgid == pp.pid {
		_, err := t.syscall(unix.SYS_SETPGID, 0, 0)
		return err
	}
	if pp.parent != nil && pp.pgid != pp.parent.pgid && r.groupExists(pp.pgid) {
		_, err := t.syscall(unix.SYS_SETPGID, 0, uint64(pp.pgid))
		return err
	}
	return nil
}

// release hands the tree over to itself: it sets every thread's final signal mask and
// registers, and detaches all threads, one after another with nothing in between.
func (r *restorer) release() error {
	for _, p := range r.procs {
		for i, t := range p.threads {
			if err := r.setFinalRegisters(p, t, p.pl.cores[i]); err != nil {
				return err
			}
		}
	}
	for _, p := range r.procs {
		// A process stopped by job control gets its stop signal while still traced: it
		// is dequeued on the way out of the ptrace stop, before any instruction runs.
		if tc := p.pl.leaderCore().GetTc(); tc.GetTaskState() == image.TaskStopped {
			sig := unix.Signal(tc.GetStopSigno())
			switch sig {
			case unix.SIGSTOP, unix.SIGTSTP, unix.SIGTTIN, unix.SIGTTOU:
			default:
				sig = unix.SIGSTOP
			}
			if err := unix.Kill(p.pid, sig); err != nil {
				return fmt.Errorf("stopping %d: %w", p.pid, err)
			}
		}
	}
	var stopped []int
	for _, p := range r.procs {
		for _, t := range p.threads {
			if err := ptrace.Detach(t.tid); err != nil {
				return err
			}
		}
		if p.pl.leaderCore().GetTc().GetTaskState() == image.TaskStopped {
			stopped = append(stopped, p.pid)
		}
	}
	// A detached thread stops once it is scheduled: wait for that (briefly), so that the
	// tree is as it was saved when Restore returns.
	deadline := time.Now().Add(time.Second)
	for _, pid := range stopped {
		for time.Now().Before(deadline) {
			st, err := procfs.ReadStat(procfs.Path(pid, "stat"))
			if err != nil || st.State == 'T' {
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
	return nil
}

// sleepCtx sleeps for d unless ctx ends first.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
