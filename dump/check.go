package dump

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/imgtool/imgtool/internal/par"
	"github.com/imgtool/imgtool/internal/procfs"
	"golang.org/x/sys/unix"
)

// namespaces compared with the dumper's own: the dump only supports the host's.
var namespaces = []string{"ipc", "mnt", "net", "pid", "user", "uts", "cgroup", "time"}

// precheck walks the tree through /proc, touching nothing, and refuses what cannot be
// dumped: every such object of the tree at once (Refusals), so that a user learns in one
// run all that stands in the way. A process other than the root that exits meanwhile is no
// longer part of the tree; one that is dead but not yet reaped is a *changedError (its
// parent may reap it in a moment). Processes that appear between the check and the freeze
// are checked again once the tree is stopped (collect).
func (d *dumper) precheck() error {
	if _, err := os.Stat(procfs.Path(d.opts.Pid, "stat")); err != nil {
		return fmt.Errorf("no process %d: %w", d.opts.Pid, err)
	}
	var refused Refusals
	var pids []int
	seen := map[int]bool{}
	parents := map[int]int{}     // child -> parent, for the copy-on-write check
	vmas := map[int][]*vmaDesc{} // each live process's mappings, for the same
	var members []*liveProc      // every process of the tree, zombies included
	var procs []*liveProc        // the live ones, in the order of pids
	// /proc/locks before any fdinfo: a lock it lists that no fd lists afterwards is not
	// held through an fd (checkFileLocks).
	locks, err := procfs.ReadLocks()
	if err != nil {
		return err
	}
	// Level by level (the root, its children, theirs, ...), the processes of a level
	// checked at once on every core: each reads only its own /proc files. The results are
	// taken in the level's order, so refusals come in tree order whatever the timing.
	files := &mappedFiles{}
	level := []int{d.opts.Pid}
	for len(level) > 0 {
		if err := d.checkCtx(); err != nil {
			return err
		}
		var todo []int
		for _, pid := range level {
			if !seen[pid] {
				seen[pid] = true
				todo = append(todo, pid)
			}
		}
		res := make([]precheckResult, len(todo))
		par.Each(len(todo), func(i int) {
			r := &res[i]
			r.err = precheckProcess(todo[i], r, files, d.zombiesOK && todo[i] != d.opts.Pid)
		})
		level = nil
		for i, pid := range todo {
			r := &res[i]
			if r.err != nil {
				if pid != d.opts.Pid && vanished(r.err) {
					continue
				}
				return r.err
			}
			for _, re := range r.refused {
				refused.add(re)
			}
			members = append(members, r.live)
			if r.zombie {
				continue // dumped as a zombie (zombie.go): it holds nothing to check or share
			}
			pids = append(pids, pid)
			procs = append(procs, r.live)
			vmas[pid] = r.mapped
			for _, k := range r.kids {
				parents[k] = pid
			}
			level = append(level, r.kids...)
		}
	}
	// The checks of the whole tree take each process's stat, threads and fds from what
	// was read above (each listed and read every fd of the tree again), touch nothing and
	// run at once on every core (serial, they were half of a 200-process precheck), each
	// with refusals of its own, taken in this order.
	var transient, ttyTransient, pipeTransient bool
	var deleted []*treeFile
	checks := []func(r *Refusals) error{
		func(r *Refusals) error { return checkGroupLeaders(members, d.opts.ShellJob, r) },
		func(r *Refusals) (err error) { transient, err = checkSharing(pids, parents, r); return err },
		func(r *Refusals) (err error) { ttyTransient, err = checkTTYs(procs, d.opts.ShellJob, r); return err }, // tty.go
		func(r *Refusals) error {
			if d.opts.COWCopies {
				return nil
			}
			return checkCOW(pids, parents, vmas, r)
		},
		func(r *Refusals) error { return checkFdOwners(procs, r) },
		func(r *Refusals) error { return checkUnixPeers(procs, d.opts.ExtUnixSk, r) },
		func(r *Refusals) (err error) { pipeTransient, err = checkPipeEnds(procs, members, r); return err }, // files.go
		func(r *Refusals) error { return checkPidfds(procs, members, r) },                                   // pidfd.go
		func(r *Refusals) error { return checkTCPConns(procs, d.opts, r) },
		func(r *Refusals) error { return checkFileLocks(procs, locks, d.opts.FileLocks, r) },
		func(r *Refusals) (err error) { deleted, err = deletedTreeFiles(procs, vmas); return err }, // remap.go
	}
	found := make([]Refusals, len(checks))
	if err := par.EachUntil(len(checks), func(i int) error { return checks[i](&found[i]) }); err != nil {
		return err
	}
	for _, f := range found {
		refused = append(refused, f...)
	}
	transient = transient || ttyTransient || pipeTransient
	checkGhosts(deleted, d.opts.GhostLimit, &refused)
	checkLinkRemaps(deleted, d.opts.LinkRemap, &refused) // remap.go
	if transient {
		return &changedError{refused.err()}
	}
	return refused.err()
}

// checkGroupLeaders refuses a process whose process group or session is led by a
// process that is gone (it exited and was reaped: zdtm's zombie01), other than the
// root's own. A restore cannot make a session without a leader: the process would come
// back in another one. The root's session, when the root does not lead it, is left to
// the restore's (as CRIU's shell jobs): refused unless shellJob (--shell-job), as CRIU's
// dump refuses it (a daemon that forked twice, a job started from a shell).
// A group whose leader exited is restored with a helper leading it (restore/group.go),
// when the member's parent, which clones the helper, is in the member's session.
func checkGroupLeaders(members []*liveProc, shellJob bool, refused *Refusals) error {
	stats := map[int]*procfs.Stat{}
	for _, m := range members {
		stats[m.pid] = m.stat
	}
	root := members[0].stat
	if root.Sid != members[0].pid && !shellJob {
		refused.add(refuse(members[0].pid, -1, fmt.Sprintf("session %d", root.Sid), "the root does not lead its session, "+
			"which a process outside the tree leads: a restore would put it in another session and process group; "+
			"dump the session's leader, or give --shell-job (to dump and restore) to accept that, as CRIU asks"))
	}
	for _, m := range members[1:] {
		st := m.stat
		// A group whose leader is gone is restored with a helper leading it, cloned by the
		// member's parent (restore/group.go): that parent must be in the member's session.
		if st.Pgid != root.Pgid && stats[st.Pgid] == nil && !inSession(st.Ppid, st.Sid, stats) {
			refused.add(refuse(m.pid, -1, fmt.Sprintf("process group %d", st.Pgid), "its leader has exited and its parent is in another session: such a group cannot be restored"))
		}
		if st.Sid != root.Sid && stats[st.Sid] == nil {
			refused.add(refuse(m.pid, -1, fmt.Sprintf("session %d", st.Sid), "its leader has exited: a session without a leader cannot be restored yet"))
		}
	}
	return nil
}

// inSession tells whether process pid is in session sid: by stats, for the processes of
// the tree, else by its /proc stat.
func inSession(pid, sid int, stats map[int]*procfs.Stat) bool {
	if st := stats[pid]; st != nil {
		return st.Sid == sid
	}
	st, err := procfs.ReadStat(procfs.Path(pid, "stat"))
	return err == nil && st.Sid == sid
}

// liveProc is one process of the running tree as precheck read it: the checks of the
// whole tree take its stat, threads and fds from here.
type liveProc struct {
	pid  int
	stat *procfs.Stat
	tids []int
	fds  []*fdDesc // ascending, those inspectFd refused too (fdDesc.refused)
}

// precheckResult is what precheckProcess found for one process.
type precheckResult struct {
	live    *liveProc
	kids    []int
	zombie  bool
	mapped  []*vmaDesc
	refused Refusals
	err     error
}

// precheckProcess checks one process, adding what cannot be dumped to r.refused, and
// records in r what it read, its children and its mappings (files stats the mapped files). Its error is a failure to look
// (or a *changedError), not a refusal. A zombie is a *changedError unless zombiesOK, when
// it is reported as one.
func precheckProcess(pid int, r *precheckResult, files *mappedFiles, zombiesOK bool) error {
	refused := &r.refused
	stat, err := procfs.ReadStat(procfs.Path(pid, "stat"))
	if err != nil {
		return fmt.Errorf("process %d: %w", pid, err)
	}
	r.live = &liveProc{pid: pid, stat: stat}
	status, err := procfs.ReadStatus(procfs.Path(pid, "status"))
	if err != nil {
		return fmt.Errorf("process %d: %w", pid, err)
	}
	if zombiesOK && isZombie(stat) {
		z, err := readZombie(pid, nil)
		if err != nil || z != nil {
			r.zombie = z != nil
			return err
		}
	}
	if err := checkProcess(pid, stat, status, false); err != nil {
		if isZombie(stat) {
			return &changedError{err}
		}
		if err := refused.add(err); err != nil {
			return err
		}
	}
	fds, err := procfs.ListNumeric(procfs.Path(pid, "fd"))
	if err != nil {
		return fmt.Errorf("list fds of %d: %w", pid, err)
	}
	for _, fd := range fds {
		f, err := inspectFd(pid, fd)
		if err != nil {
			if vanished(err) {
				continue // closed meanwhile; the frozen tree is inspected again
			}
			if err := refused.add(err); err != nil {
				return err
			}
			// Still part of the tree (a peer of another fd, say): kept, refused.
			f.refused = true
		}
		if f.info != nil { // the checks of the tree need only its locks and flags
			f.info = &procfs.Fdinfo{Locks: f.info.Locks, Flags: f.info.Flags}
		}
		r.live.fds = append(r.live.fds, f)
	}
	// Each thread's tracer and children, every thread at once (a process may have
	// thousands); taken in the threads' order.
	tids, err := procfs.ListNumeric(procfs.Path(pid, "task"))
	if err != nil {
		return fmt.Errorf("list threads of %d: %w", pid, err)
	}
	r.live.tids = tids
	type threadCheck struct {
		tracer string
		shstk  bool
		ioprio int // ioPriority
		kids   []int
		err    error
	}
	checks := make([]threadCheck, len(tids))
	par.Each(len(tids), func(i int) {
		c, tid := &checks[i], tids[i]
		if st, err := procfs.ReadStatusKeys(procfs.Path(pid, "task", strconv.Itoa(tid), "status"), threadCheckKeys); err == nil {
			c.tracer = st["TracerPid"]
			c.shstk = hasShadowStack(st)
		}
		c.ioprio = ioPriority(tid)
		c.kids, c.err = readChildren(pid, tid)
	})
	var kids []int
	shstk := false
	for i, c := range checks {
		if c.tracer != "" && c.tracer != "0" && tids[i] != pid {
			refused.add(refuse(pid, -1, fmt.Sprintf("thread %d", tids[i]), "already traced by process "+c.tracer))
		}
		if own := ownIOPriority(); c.ioprio != own && c.ioprio >= 0 && own >= 0 {
			refused.add(refuse(pid, -1, fmt.Sprintf("thread %d", tids[i]), fmt.Sprintf("its I/O priority (ionice: %s) is not imgtool's (%s): "+
				"the images have no place for it, CRIU's neither, and a restore gives every process its own", ioprioName(c.ioprio), ioprioName(own))))
		}
		if c.err != nil {
			return c.err
		}
		kids = append(kids, c.kids...)
		shstk = shstk || c.shstk
	}
	vmas, err := precheckMappings(pid, status, shstk)
	if err != nil {
		return err
	}
	var mapped []*vmaDesc
	for i := range vmas {
		v, err := classifyVMA(pid, &vmas[i], files, false)
		if err != nil {
			if err := refused.add(err); err != nil {
				return err
			}
			continue
		}
		if v != nil {
			mapped = append(mapped, v)
		}
	}
	r.kids, r.mapped = kids, mapped
	return nil
}

// The I/O priority of ioprio_get(2): a class (IOPRIO_CLASS_NONE, the default, follows
// the nice value) above a level. Children inherit it: the processes a restore makes get
// the restorer's, which a dump can only compare with its own.
const (
	ioprioWhoProcess = 1
	ioprioClassShift = 13
)

// ioPriority returns the I/O priority of thread tid (0: the calling thread), or -1 if it
// cannot be read (the thread is gone: its absence is dealt with elsewhere).
func ioPriority(tid int) int {
	r, _, e := unix.Syscall(unix.SYS_IOPRIO_GET, ioprioWhoProcess, uintptr(tid), 0)
	if e != 0 {
		return -1
	}
	return int(r)
}

// ownIOPriority is imgtool's I/O priority, which a restore's processes would inherit.
var ownIOPriority = sync.OnceValue(func() int { return ioPriority(0) })

// ioprioName shows an I/O priority as ionice names its class, with its level.
func ioprioName(p int) string {
	class := []string{"none", "realtime", "best-effort", "idle"}[min(p>>ioprioClassShift, 3)]
	return fmt.Sprintf("%s, level %d", class, p&(1<<ioprioClassShift-1))
}

// threadCheckKeys are the lines of a thread's status precheck looks at.
var threadCheckKeys = []string{"TracerPid", "x86_Thread_features"}

// precheckMappings reads the mappings of a running process for precheck. Of the
// VmFlags of smaps, precheck needs only those it refuses (lf, ht, ss; io and pf come
// with device files, refused by their kind): its status tells when none can be there
// (no locked memory, no hugetlb pages, no thread with a shadow stack), and then maps is
// read, which the kernel makes without walking every page table as it does for smaps
// (a 4 GiB process's smaps takes a tenth of a second; 20,000 mappings' a sixth of a
// dump). A file on hugetlbfs mapped without a page faulted yet is found by its
// filesystem (classifyVMA). The stopped tree's smaps is read whole (readProcess).
func precheckMappings(pid int, status procfs.Status, shstk bool) ([]procfs.Mapping, error) {
	if shstk || status["VmLck"] != "0 kB" || status["HugetlbPages"] != "0 kB" {
		return procfs.ReadSmaps(pid)
	}
	maps, err := procfs.ReadMaps(pid)
	if err != nil {
		return nil, err
	}
	for _, m := range maps {
		if strings.HasPrefix(m.Path, "/anon_hugepage") {
			return procfs.ReadSmaps(pid)
		}
	}
	return maps, nil
}

// hasShadowStack tells by its status whether a thread has a shadow stack enabled
// (x86_Thread_features: shstk).
func hasShadowStack(st procfs.Status) bool {
	return slices.Contains(strings.Fields(st["x86_Thread_features"]), "shstk")
}

// Refusals is everything of a tree that the dump cannot checkpoint, found at once. It
// unwraps to each *RefusedError.
type Refusals []*RefusedError

// add records err if it is a refusal, and returns any other error.
func (r *Refusals) add(err error) error {
	var re *RefusedError
	if !errors.As(err, &re) {
		return err
	}
	*r = append(*r, re)
	return nil
}

// err is nil without refusals, the one refusal, or all of them.
func (r Refusals) err() error {
	switch len(r) {
	case 0:
		return nil
	case 1:
		return r[0]
	}
	return r
}

func (r Refusals) Error() string {
	parts := make([]string, len(r))
	for i, re := range r {
		parts[i] = re.what()
	}
	return fmt.Sprintf("cannot dump the tree, %d things in it cannot be checkpointed: %s", len(r), strings.Join(parts, "; "))
}

// Unwrap gives errors.As and errors.Is every refusal.
func (r Refusals) Unwrap() []error {
	out := make([]error, len(r))
	for i, re := range r {
		out[i] = re
	}
	return out
}

// sharedKinds are the kernel objects two processes can share (clone flags) and kcmp can
// compare. Restore gives each process its own, but for an fd table a child shares with
// its parent (CLONE_FILES): it is cloned sharing it, as CRIU does. A tree whose processes
// share one otherwise is refused.
var sharedKinds = []struct {
	typ  uintptr
	name string
}{
	{kcmpVM, "memory (CLONE_VM)"},
	{kcmpFiles, "fd table (CLONE_FILES)"},
	{kcmpFS, "fs context (CLONE_FS)"},
	{kcmpSighand, "signal handlers (CLONE_SIGHAND)"},
}

// checkSharing refuses processes of the tree that share memory, their fd table, fs
// context or signal handlers with another one. Each kind is grouped by sorting the
// processes with kcmp's ordering: n log n comparisons, not n squared. Shared memory is
// usually a child between vfork and exec (posix_spawn, shells): transient tells the
// caller to look again in a moment before refusing it.
// parents maps each process of the tree to its parent.
func checkSharing(pids []int, parents map[int]int, refused *Refusals) (transient bool, err error) {
	for _, k := range sharedKinds {
		groups, err := kcmpGroups(pids, k.typ)
		if err != nil {
			return false, err
		}
		for _, g := range groups {
			for _, pid := range g[1:] {
				if k.typ == kcmpFiles && slices.Contains(g, parents[pid]) {
					continue // cloned with its parent's fd table: restored so
				}
				refused.add(refuse(pid, -1, "shared "+k.name, fmt.Sprintf("shares it with process %d, not through its parent; not supported", g[0])))
				transient = transient || k.typ == kcmpVM
			}
		}
	}
	return transient, nil
}

// treeChanged tells whether a thread of members, the processes of the tree as precheck
// read them (zombies too), has a child that is not one of them, or one of them is gone:
// the tree changed since it was read.
func treeChanged(members []*liveProc) bool {
	in := map[int]bool{}
	for _, p := range members {
		in[p.pid] = true
	}
	for _, p := range members {
		for _, tid := range p.tids {
			kids, err := readChildren(p.pid, tid)
			if err != nil {
				return true
			}
			for _, k := range kids {
				if !in[k] {
					return true
				}
			}
		}
		if _, err := os.Stat(procfs.Path(p.pid, "stat")); err != nil {
			return true
		}
	}
	return false
}

// sharesFiles reports whether a process uses its parent's fd table (CLONE_FILES).
func sharesFiles(parent, pid int) bool {
	r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(parent), uintptr(pid), kcmpFiles, 0, 0, 0)
	return e == 0 && r == 0
}

// kcmpGroups returns the groups of more than one process (in the order of pids) that
// share the object of kind typ.
func kcmpGroups(pids []int, typ uintptr) ([][]int, error) {
	sorted := append([]int(nil), pids...)
	var ferr error
	cmp := func(a, b int) int {
		r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(a), uintptr(b), typ, 0, 0, 0)
		switch {
		case e != 0:
			if ferr == nil {
				ferr = fmt.Errorf("kcmp %d with %d: %w", a, b, e)
				if e == unix.ESRCH { // one exited since it was checked: look again
					ferr = &changedError{ferr}
				}
			}
			return 0
		case r == 1:
			return -1
		case r == 2:
			return 1
		}
		return 0
	}
	slices.SortStableFunc(sorted, cmp)
	if ferr != nil {
		return nil, ferr
	}
	order := map[int]int{}
	for i, pid := range pids {
		order[pid] = i
	}
	var groups [][]int
	for i := 0; i < len(sorted); {
		j := i + 1
		for j < len(sorted) && cmp(sorted[i], sorted[j]) == 0 {
			j++
		}
		if j-i > 1 {
			g := append([]int(nil), sorted[i:j]...)
			slices.SortFunc(g, func(a, b int) int { return order[a] - order[b] })
			groups = append(groups, g)
		}
		i = j
	}
	return groups, ferr
}

// isZombie tells whether a process has exited but was not reaped yet.
func isZombie(stat *procfs.Stat) bool {
	switch stat.State {
	case 'Z', 'X', 'x':
		return true
	}
	return false
}

// checkProcess refuses processes the dump does not handle. frozen tells whether the dump has
// already seized the process (it is then traced, by the dump itself).
func checkProcess(pid int, stat *procfs.Stat, status procfs.Status, frozen bool) error {
	if !frozen && status["TracerPid"] != "0" {
		return refuse(pid, -1, "ptrace", "already traced by process "+status["TracerPid"])
	}
	if isZombie(stat) {
		return refuse(pid, -1, "zombie", "dead (zombie): only a zombie child of one thread can be dumped, not the root nor a leader whose other threads still run")
	}
	for _, ns := range namespaces {
		mine, err1 := os.Readlink("/proc/self/ns/" + ns)
		theirs, err2 := os.Readlink(procfs.Path(pid, "ns", ns))
		if err1 != nil || err2 != nil {
			continue // namespace type not supported by this kernel
		}
		if mine != theirs {
			return refuse(pid, -1, ns+" namespace "+theirs, "only the host's namespaces are supported")
		}
	}
	return nil
}

// fdKind is the kind of an open file the dump supports.
type fdKind int

const (
	fdReg   fdKind = iota // regular file, directory, character or block device
	fdPipe                // anonymous pipe
	fdFifo                // named pipe
	fdMemfd               // memfd_create file
)

// fdDesc is what /proc tells about one fd.
type fdDesc struct {
	fd      int
	kind    fdKind
	link    string
	st      unix.Stat_t
	info    *procfs.Fdinfo
	refused bool // by inspectFd, in precheck: still part of the tree (a peer, a lock), its kind not to be trusted
}

// isTTYMajor tells the character-device majors of terminals: tty and virtual consoles,
// /dev/tty, console and ptmx, pts, and USB and low-density serial ports.
func isTTYMajor(major uint32) bool {
	return major == 4 || major == 5 || (major >= 136 && major <= 143) || major == 188 || major == 204
}

// inspectFd reads and classifies fd of pid, refusing what cannot be dumped.
func inspectFd(pid, fd int) (*fdDesc, error) {
	f, err := readFd(pid, fd)
	if err != nil {
		return nil, err
	}
	return f, classifyFd(pid, f)
}

// readFd reads what /proc says of fd of pid: its link, the stat of what it opens, its
// fdinfo. It opens nothing.
func readFd(pid, fd int) (*fdDesc, error) {
	path := procfs.Path(pid, "fd", strconv.Itoa(fd))
	link, err := os.Readlink(path)
	if err != nil {
		return nil, fmt.Errorf("read fd %d of %d: %w", fd, pid, err)
	}
	f := &fdDesc{fd: fd, link: link}
	if err := unix.Stat(path, &f.st); err != nil {
		return nil, fmt.Errorf("stat fd %d of %d (%s): %w", fd, pid, link, err)
	}
	if f.info, err = procfs.ReadFdinfo(pid, fd); err != nil {
		return nil, err
	}
	return f, nil
}

// classifyFd sets the kind of f, an fd of pid read by readFd, and runs its kind's check,
// refusing what cannot be dumped.
func classifyFd(pid int, fdesc *fdDesc) error {
	fd, link := fdesc.fd, fdesc.link
	switch {
	case strings.Contains(link, "io_uring"):
		return refuse(pid, fd, link, "io_uring is not supported")
	case strings.HasPrefix(link, "anon_inode:") && !isAnonKind(link):
		return refuse(pid, fd, link, "this kind of file is not supported")
	case strings.HasSuffix(link, "]") && !strings.HasPrefix(link, "/") && !strings.HasPrefix(link, "pipe:") && !strings.HasPrefix(link, "socket:") && !isAnonKind(link):
		return refuse(pid, fd, link, "this kind of file is not supported")
	}
	mode := fdesc.st.Mode & unix.S_IFMT
	switch {
	case strings.HasPrefix(link, "pipe:"):
		fdesc.kind = fdPipe
	case mode == unix.S_IFIFO: // deleted ones too: ghost.go, remap.go
		fdesc.kind = fdFifo
	case mode == unix.S_IFSOCK:
		fdesc.kind = sockKind(pid, fd) // sk_inet.go: TCP and UDP; sk_unix.go refuses other families
	case mode == unix.S_IFCHR && isTTYMajor(unix.Major(fdesc.st.Rdev)):
		fdesc.kind = fdTTY // tty.go: pseudo-terminals; the others are refused there
	case isShmem(link, &fdesc.st): // a memfd, or MAP_SHARED anonymous memory ("/dev/zero (deleted)")
		fdesc.kind = fdMemfd
	case (mode == unix.S_IFCHR || mode == unix.S_IFBLK) && fdesc.st.Nlink == 0:
		return refuse(pid, fd, "removed "+link, "device nodes that were removed cannot be recreated")
	case (mode == unix.S_IFREG || mode == unix.S_IFDIR) && fdesc.st.Nlink == 0 && !isGhost(link, &fdesc.st) && !strings.HasPrefix(link, "/proc/"):
		return refuse(pid, fd, "unlinked file "+link, "this kind of deleted file cannot be made again")
	case strings.HasPrefix(link, "/proc/"):
		// A /proc file names the state of a process (often the holder's own): reopened
		// by path before the restored processes exist, it would name nothing or another.
		return refuse(pid, fd, link, "files in /proc are not supported")
	case mode == unix.S_IFREG, mode == unix.S_IFDIR, mode == unix.S_IFCHR, mode == unix.S_IFBLK:
		fdesc.kind = fdReg // deleted files and directories too: ghost.go; renamed by a link: remap.go
	case isAnonKind(link):
		fdesc.kind = anonKinds[link]
	default:
		return refuse(pid, fd, link, "this kind of file is not supported")
	}
	return fdKinds[fdesc.kind].check(pid, fdesc)
}
