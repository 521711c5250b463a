package restore

import (
	"fmt"
	"os"
	"sort"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"
	"golang.org/x/sys/unix"

	"github.com/imgtool/imgtool/image"
	"github.com/imgtool/imgtool/internal/procfs"
	"github.com/imgtool/imgtool/internal/ptrace"
)

// mapFlagsKept are the mmap flags of a saved VMA that are passed back to mmap. MAP_LOCKED
// is not: the areas are locked once their pages are written (lockMemory).
const mapFlagsKept = unix.MAP_SHARED | unix.MAP_PRIVATE | unix.MAP_DROPPABLE | unix.MAP_ANONYMOUS | unix.MAP_GROWSDOWN | unix.MAP_NORESERVE

// savedSpecials returns where a process had its vvar areas (merged: CRIU 4.2 writes
// [vvar] and [vvar_vclock] as one entry) and its vDSO.
func savedSpecials(vmas []*vma.VmaEntry) (vvar, vdso span) {
	for _, v := range vmas {
		s := span{v.GetStart(), v.GetEnd()}
		switch {
		case v.GetStatus()&image.VMAAreaVVAR != 0:
			if vvar.end == 0 {
				vvar = s
			} else if s.start == vvar.end {
				vvar.end = s.end
			} else if s.end == vvar.start {
				vvar.start = s.start
			}
		case v.GetStatus()&image.VMAAreaVDSO != 0:
			vdso = s
		}
	}
	return vvar, vdso
}

// kernelSpecialsIn finds the kernel's special mappings among a process's maps.
func kernelSpecialsIn(maps []procfs.Mapping) kernelSpecials {
	var k kernelSpecials
	for _, m := range maps {
		switch m.Path {
		case "[vvar]":
			k.vvar = span{m.Start, m.End}
		case "[vvar_vclock]":
			k.vclock = span{m.Start, m.End}
		case "[vdso]":
			k.vdso = span{m.Start, m.End}
		}
	}
	return k
}

// checkKernelSpecials refuses a set whose vDSO and vvar areas differ in size or in
// relative place from this kernel's: the restored libc keeps calling vDSO code at its old
// addresses, which only works with this kernel's vDSO put back exactly there.
func checkKernelSpecials(pl *plan, k kernelSpecials) error {
	vvarSize := (k.vvar.end - k.vvar.start) + (k.vclock.end - k.vclock.start)
	vdsoSize := k.vdso.end - k.vdso.start
	for _, p := range pl.procs {
		vvar, vdso := savedSpecials(p.mm.Vmas)
		if vdso.end != 0 && vdso.end-vdso.start != vdsoSize {
			return fmt.Errorf("pid %d: the saved vDSO is %d bytes, this kernel's %d: the set was made on another kernel", p.pid, vdso.end-vdso.start, vdsoSize)
		}
		if vvar.end != 0 && vvar.end-vvar.start != vvarSize {
			return fmt.Errorf("pid %d: the saved vvar areas are %d bytes, this kernel's %d: the set was made on another kernel", p.pid, vvar.end-vvar.start, vvarSize)
		}
		if vvar.end != 0 && vdso.end != 0 && k.vvar.end != 0 && vvar.end != vdso.start && k.vclock.end == k.vdso.start {
			return fmt.Errorf("pid %d: the saved vvar area does not precede the vDSO as on this kernel", p.pid)
		}
	}
	return nil
}

// restoreMemory rebuilds the address space of p, cloned from parent (nil for the root, cloned
// from the blank helper): the mappings it keeps from its parent (cow.go) adjusted and the
// others unmapped, the kernel's special mappings moved to their saved addresses, every other
// saved VMA mapped where it was, the saved pages written, then the locked areas locked. Its
// own children are cloned from it afterwards, and share its pages as theirs did. born is
// passed to dropInherited.
func (r *restorer) restoreMemory(p, parent *process, born []procfs.Mapping) error {
	var inh *inheritance
	if parent != nil && parent.pl != nil {
		inh = inherit(r.pl, parent.pl, p.pl, parent.held)
		if err := r.dropInherited(p, inh, born); err != nil {
			return err
		}
	}
	if err := r.placeSpecials(p); err != nil {
		return err
	}
	files := map[string]uint64{} // fd in the target of each file mapped, by key
	defer func() {
		for _, fd := range files {
			p.leader().syscall(unix.SYS_CLOSE, fd)
		}
	}()
	q := &mapQueue{p: p, single: r.noBatch}
	for _, v := range p.pl.mm.Vmas {
		st := v.GetStatus()
		if st&(image.VMAAreaVDSO|image.VMAAreaVVAR) != 0 || st&image.VMAAreaRegular == 0 {
			continue // placed above, or not a mapping of the process's own (vsyscall)
		}
		if err := r.placeVMA(p, v, inh.keeps(v), files, q); err != nil {
			return err
		}
	}
	if err := q.flush(); err != nil {
		return err
	}
	if err := r.writePages(p, inh, q.fresh); err != nil {
		return err
	}
	if inh != nil {
		if err := r.dropUnsaved(p, inh); err != nil {
			return err
		}
	}
	return r.lockMemory(p)
}

// placeVMA gives p its saved mapping v: the parts it keeps from its parent adjusted, the
// rest mapped.
// Its mmap and madvise calls go into q, run in batches; what else it injects runs after
// the queue is flushed, so that every call keeps its order.
func (r *restorer) placeVMA(p *process, v *vma.VmaEntry, kept []keptPart, files map[string]uint64, q *mapQueue) error {
	var keptSpans spans
	if len(kept) > 0 {
		if err := q.flush(); err != nil {
			return err
		}
	}
	for _, part := range kept {
		if err := adjustKept(p, part, v); err != nil {
			return vmaError(v, err)
		}
		keptSpans = append(keptSpans, part.span)
	}
	for _, s := range (spans{{v.GetStart(), v.GetEnd()}}).subtract(keptSpans) {
		if err := r.mapVMA(p, v, s, files, q); err != nil {
			return err
		}
	}
	return nil
}

// vmaError names the saved mapping v in err.
func vmaError(v *vma.VmaEntry, err error) error {
	return fmt.Errorf("mapping %#x-%#x: %w", v.GetStart(), v.GetEnd(), err)
}

// mapQueue holds the mmap and madvise calls of a process's mappings until they are run,
// hundreds at a time, by ptrace.BatchCode in the scratch area: a process with 20,000
// mappings took 40,000 ptrace stops, one mmap each, where CRIU's restorer maps them all
// from inside the process; a batch takes one. Each call keeps what is needed to report
// its failure as the call made alone would have.
type mapQueue struct {
	p      *process
	single bool // one call at a time (no executable scratch area)
	calls  []ptrace.BatchCall
	why    []queuedCall
	fresh  spans // the mapped parts whose pages a userfaultfd may place (userfault.go)
}

// queuedCall is what a queued call does: mmap of s (advice < 0), or madvise of s.
type queuedCall struct {
	v      *vma.VmaEntry
	s      span
	advice int
}

func (q *mapQueue) add(c ptrace.BatchCall, why queuedCall) error {
	q.calls = append(q.calls, c)
	q.why = append(q.why, why)
	if len(q.calls) == batchMax {
		return q.flush()
	}
	return nil
}

// fail returns err of mapping v once the calls queued before it have run: the failure of
// one of them, made first, is the one reported.
func (q *mapQueue) fail(v *vma.VmaEntry, err error) error {
	if ferr := q.flush(); ferr != nil {
		return ferr
	}
	return vmaError(v, err)
}

// flush runs the queued calls, and reports the first that failed (nothing after it ran).
func (q *mapQueue) flush() error {
	if len(q.calls) == 0 {
		return nil
	}
	calls, why := q.calls, q.why
	q.calls, q.why = q.calls[:0], q.why[:0]
	got, err := runCalls(q.p, q.p.leader(), q.single, calls)
	for i, ret := range got {
		if w := why[i]; w.advice < 0 && ret != w.s.start {
			return vmaError(w.v, fmt.Errorf("mapped at %#x", ret))
		}
	}
	if err != nil {
		w := why[len(got)]
		if w.advice >= 0 {
			err = fmt.Errorf("madvise %d: %w", w.advice, err)
		}
		return vmaError(w.v, err)
	}
	return nil
}

// savedSpecialsOf is where p's vvar, vvar_vclock and vDSO go: their saved addresses (this
// kernel's sizes, checked by checkKernelSpecials), or, for one the set does not have, the
// place they are parked at.
func (r *restorer) savedSpecialsOf(p *process) kernelSpecials {
	k := r.kern
	to := k
	vvar, vdso := savedSpecials(p.pl.mm.Vmas)
	if vvar.end != 0 {
		to.vvar = span{vvar.start, vvar.start + (k.vvar.end - k.vvar.start)}
		if k.vclock.end != 0 {
			to.vclock = span{to.vvar.end, to.vvar.end + (k.vclock.end - k.vclock.start)}
		}
	}
	if vdso.end != 0 {
		to.vdso = span{vdso.start, vdso.start + (k.vdso.end - k.vdso.start)}
	}
	return to
}

// placeSpecials moves the kernel's special mappings of p to their saved addresses. A
// child has them where its parent's were saved: unless they are the same, they go back
// to the parking place first, where nothing of the set is, so that no move lands on
// another.
func (r *restorer) placeSpecials(p *process) error {
	to := r.savedSpecialsOf(p)
	if p.specials == to {
		return nil
	}
	if p.specials != r.kern {
		if err := moveSpecials(p, r.kern); err != nil {
			return err
		}
	}
	return moveSpecials(p, to)
}

// moveSpecials mremaps p's vvar, vvar_vclock and vDSO to the places in to, and injects its
// syscalls from the vDSO's new place afterwards.
func moveSpecials(p *process, to kernelSpecials) error {
	t := p.leader()
	move := func(from, to span) error {
		if from.end == 0 || from == to {
			return nil
		}
		n := from.end - from.start
		_, err := t.syscall(unix.SYS_MREMAP, from.start, n, n, unix.MREMAP_MAYMOVE|unix.MREMAP_FIXED, to.start)
		return err
	}
	cur := p.specials
	if err := move(cur.vvar, to.vvar); err != nil {
		return err
	}
	if err := move(cur.vclock, to.vclock); err != nil {
		return err
	}
	if err := move(cur.vdso, to.vdso); err != nil {
		return err
	}
	if cur.vdso.end != 0 {
		p.sysInsn = to.vdso.start + to.insnOff
	}
	p.specials = to
	return nil
}

// lockMemory locks the areas that were locked (VM_LOCKED: MAP_LOCKED in vma_entry.flags,
// as CRIU 4.2 records "lo" of smaps VmFlags), with mlock injected into p.
//
// It runs before the saved resource limits and credentials are applied, so the locks are
// taken as imgtool could take them (as root, CAP_IPC_LOCK ignores RLIMIT_MEMLOCK): a
// process may lock memory and then lower its RLIMIT_MEMLOCK or give up its privileges
// (zdtm mlock_setuid), and its locks stay. Where imgtool cannot take a lock, the restore
// fails rather than leave the memory unlocked.
func (r *restorer) lockMemory(p *process) error {
	for _, v := range p.pl.mm.Vmas {
		if v.GetFlags()&unix.MAP_LOCKED == 0 || v.GetStatus()&image.VMAAreaRegular == 0 ||
			v.GetStatus()&(image.VMAAreaVDSO|image.VMAAreaVVAR) != 0 {
			continue
		}
		if _, err := p.leader().syscall(unix.SYS_MLOCK, v.GetStart(), v.GetEnd()-v.GetStart()); err != nil {
			return fmt.Errorf("locking %#x-%#x (mlock): %w", v.GetStart(), v.GetEnd(), err)
		}
	}
	return nil
}

// mapVMA maps the range s of one saved VMA (all of it, or what a child does not keep of
// its parent's) at its address with MAP_FIXED_NOREPLACE.
func (r *restorer) mapVMA(p *process, v *vma.VmaEntry, s span, files map[string]uint64, q *mapQueue) error {
	st := v.GetStatus()
	flags := uint64(v.GetFlags()&mapFlagsKept) | unix.MAP_FIXED_NOREPLACE
	fd, off := ^uint64(0), uint64(0)
	switch {
	case st&image.VMAAnonPrivate != 0:
		// MAP_DROPPABLE is a mapping type of its own: never with MAP_PRIVATE.
		if flags&unix.MAP_DROPPABLE == 0 {
			flags = flags&^unix.MAP_SHARED | unix.MAP_PRIVATE
		}
		flags |= unix.MAP_ANONYMOUS
		if userfaultable(v) {
			q.fresh = append(q.fresh, s)
		}
	case st&(image.VMAFilePrivate|image.VMAFileShared|image.VMAAnonShared) != 0:
		key, open, err := r.mappedFile(v)
		if err != nil {
			return q.fail(v, err)
		}
		got, ok := files[key]
		if !ok {
			// The fd is passed with injected calls of its own: the queue goes first.
			if err := q.flush(); err != nil {
				return err
			}
			f, err := open()
			if err != nil {
				return vmaError(v, err)
			}
			got, err = r.transfer(p, f)
			f.Close()
			if err != nil {
				return vmaError(v, err)
			}
			files[key] = got
		}
		fd, off = got, v.GetPgoff()+(s.start-v.GetStart())
		flags &^= unix.MAP_ANONYMOUS
		if st&image.VMAFilePrivate != 0 {
			flags = flags&^unix.MAP_SHARED | unix.MAP_PRIVATE
		} else {
			flags = flags&^unix.MAP_PRIVATE | unix.MAP_SHARED
		}
	default:
		return q.fail(v, fmt.Errorf("unsupported VMA status %#x", st))
	}
	if err := q.add(ptrace.BatchCall{Nr: unix.SYS_MMAP, Args: [6]uint64{s.start, s.end - s.start, uint64(v.GetProt()), flags, fd, off}},
		queuedCall{v, s, -1}); err != nil {
		return err
	}
	steps, ok := image.MadviseSteps(0, v.GetMadv())
	if !ok {
		return q.fail(v, fmt.Errorf("advice %#x cannot be given", v.GetMadv()))
	}
	for _, advice := range steps {
		if err := q.add(ptrace.BatchCall{Nr: unix.SYS_MADVISE, Args: [6]uint64{s.start, s.end - s.start, uint64(advice)}},
			queuedCall{v, s, advice}); err != nil {
			return err
		}
	}
	return nil
}

// madvise gives the range s each advice of steps, in order.
func madvise(t *thread, s span, steps []int) error {
	for _, advice := range steps {
		if _, err := t.syscall(unix.SYS_MADVISE, s.start, s.end-s.start, uint64(advice)); err != nil {
			return fmt.Errorf("madvise %d: %w", advice, err)
		}
	}
	return nil
}

// mappedFile says which file a file-backed or shared VMA maps: a key for reusing one fd
// per file, and how to open it here.
func (r *restorer) mappedFile(v *vma.VmaEntry) (string, func() (*os.File, error), error) {
	st := v.GetStatus()
	if st&image.VMAAnonShared != 0 {
		shmid := v.GetShmid()
		return fmt.Sprintf("shm:%d", shmid), func() (*os.File, error) { return r.descs.anonShared(r.pl, shmid, r.pl.procs) }, nil
	}
	fe := r.pl.files[uint32(v.GetShmid())]
	if fe == nil {
		return "", nil, fmt.Errorf("file id %d is not in files.img", v.GetShmid())
	}
	acc := v.GetFdflags() & unix.O_ACCMODE
	if fe.Memfd != nil {
		ino := uint64(fe.Memfd.GetInodeId())
		return fmt.Sprintf("memfd:%d:%d", ino, acc), func() (*os.File, error) { return r.descs.memfdReopen(r.pl, ino, int(acc)) }, nil
	}
	if fe.Reg == nil {
		return "", nil, fmt.Errorf("file id %d (%v) cannot be mapped", v.GetShmid(), fe.GetType())
	}
	return fmt.Sprintf("reg:%d:%d", fe.GetId(), acc), func() (*os.File, error) {
		name, err := r.descs.regPath(r.pl, fe) // a deleted file is made again: ghost.go
		if err != nil {
			return nil, err
		}
		f, err := os.OpenFile(name, int(acc)|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("opening mapped file: %w", err)
		}
		return f, nil
	}, nil
}

// pageRun is a run of saved pages: where they go and where they are in the pages file.
type pageRun struct {
	vaddr uint64
	off   int64
	size  int64
}

// pageRuns lists the present pages of a page map, minus the vDSO and vvar areas: the vDSO
// pages are saved for CRIU's symbol check only, and the running kernel's vDSO is used.
func pageRuns(pm *image.PageMap, skip ...span) []pageRun {
	var runs []pageRun
	for i, e := range pm.Entries {
		off := pm.EntryOffset(i)
		if off < 0 {
			continue
		}
		run := pageRun{vaddr: e.GetVaddr(), off: off, size: int64(image.NrPages(e) * image.PageSize)}
		runs = append(runs, clipRun(run, skip)...)
	}
	sort.Slice(runs, func(i, j int) bool { return runs[i].off < runs[j].off })
	return runs
}

// clipRun removes the skipped ranges from a run.
func clipRun(run pageRun, skip []span) []pageRun {
	for _, s := range skip {
		if s.end == 0 {
			continue
		}
		end := run.vaddr + uint64(run.size)
		if s.end <= run.vaddr || s.start >= end {
			continue
		}
		var out []pageRun
		if s.start > run.vaddr {
			out = append(out, clipRun(pageRun{run.vaddr, run.off, int64(s.start - run.vaddr)}, skip)...)
		}
		if s.end < end {
			d := s.end - run.vaddr
			out = append(out, clipRun(pageRun{s.end, run.off + int64(d), run.size - int64(d)}, skip)...)
		}
		return out
	}
	return []pageRun{run}
}

// writePages writes the saved pages of p into its memory, streaming its pages file (see
// streamRuns). The vDSO and vvar pages are skipped: this kernel's are used. In the mappings
// p keeps from its parent, a page already holding the saved bytes is left shared.
//
// The pages of the parts in fresh (mapped by this restore, in address order) go through a
// userfaultfd where the kernel offers one (userfault.go).
func (r *restorer) writePages(p *process, inh *inheritance, fresh spans) error {
	pm := p.pl.pagemap
	name := fmt.Sprintf("pages-%d.img", pm.Head.GetPagesId())
	vvar, vdso := savedSpecials(p.pl.mm.Vmas)
	runs := pageRuns(pm, vvar, vdso)
	if len(runs) == 0 {
		return nil
	}
	p.readOnly = readOnlySpans(p.pl.mm.Vmas)
	put := p.writeMemory
	u, err := userfaultFor(p, fresh, runs)
	if err != nil {
		return err
	}
	if u != nil {
		defer u.close()
		put = u.put
	}
	if inh != nil && len(inh.shared) > 0 { // reads the shared pages: not direct
		return streamRuns(r.pl.src, name, runs, p.writeChanged(inh.shared, put), r.progress, false)
	}
	// Mapped only for process_vm_writev: see mappedFile.
	return streamRuns(r.pl.src, name, runs, put, r.progress, u == nil)
}

// readOnlySpans are the mappings of vmas without PROT_WRITE, in address order.
func readOnlySpans(vmas []*vma.VmaEntry) spans {
	var out spans
	for _, v := range vmas {
		if v.GetProt()&unix.PROT_WRITE == 0 {
			out = append(out, span{v.GetStart(), v.GetEnd()})
		}
	}
	return out.normal()
}

// progress reports written page bytes to Options.Progress.
func (r *restorer) progress(n int64) {
	if r.opts.Progress != nil {
		r.pl.pagesDone += n
		r.opts.Progress(r.pl.pagesDone, r.pl.pagesTotal)
	}
}
