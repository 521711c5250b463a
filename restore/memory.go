package restore

import (
	"fmt"
	"os"
	"sort"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"
	"golang.org/x/sys/unix"

	"github.com/imgtool/imgtool/image"
	"github.com/imgtool/imgtool/internal/procfs"
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

// restoreMemory rebuilds the address space of p: the kernel's special mappings moved to
// their saved addresses, every saved VMA mapped where it was, then the saved pages written.
func (r *restorer) restoreMemory(p *process) error {
	t := p.leader()
	vvar, vdso := savedSpecials(p.pl.mm.Vmas)
	remap := func(from, to uint64, n uint64) error {
		if n == 0 {
			return nil
		}
		_, err := t.syscall(unix.SYS_MREMAP, from, n, n, unix.MREMAP_MAYMOVE|unix.MREMAP_FIXED, to)
		return err
	}
	k := r.kern
	if vvar.end != 0 {
		if err := remap(k.vvar.start, vvar.start, k.vvar.end-k.vvar.start); err != nil {
			return err
		}
		if err := remap(k.vclock.start, vvar.start+(k.vvar.end-k.vvar.start), k.vclock.end-k.vclock.start); err != nil {
			return err
		}
	}
	if vdso.end != 0 {
		if err := remap(k.vdso.start, vdso.start, k.vdso.end-k.vdso.start); err != nil {
			return err
		}
		p.sysInsn = vdso.start + k.insnOff
	}

	files := map[string]uint64{} // fd in the target of each file mapped, by key
	defer func() {
		for _, fd := range files {
			t.syscall(unix.SYS_CLOSE, fd)
		}
	}()
	for _, v := range p.pl.mm.Vmas {
		st := v.GetStatus()
		if st&(image.VMAAreaVDSO|image.VMAAreaVVAR) != 0 || st&image.VMAAreaRegular == 0 {
			continue // moved above, or not a mapping of the process's own (vsyscall)
		}
		if err := r.mapVMA(p, v, files); err != nil {
			return fmt.Errorf("mapping %#x-%#x: %w", v.GetStart(), v.GetEnd(), err)
		}
	}
	return r.writePages(p, vvar, vdso)
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

// mapVMA maps one saved VMA at its address with MAP_FIXED_NOREPLACE.
func (r *restorer) mapVMA(p *process, v *vma.VmaEntry, files map[string]uint64) error {
	t := p.leader()
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
	case st&(image.VMAFilePrivate|image.VMAFileShared|image.VMAAnonShared) != 0:
		key, open, err := r.mappedFile(v)
		if err != nil {
			return err
		}
		got, ok := files[key]
		if !ok {
			f, err := open()
			if err != nil {
				return err
			}
			got, err = r.transfer(p, f)
			f.Close()
			if err != nil {
				return err
			}
			files[key] = got
		}
		fd, off = got, v.GetPgoff()
		flags &^= unix.MAP_ANONYMOUS
		if st&image.VMAFilePrivate != 0 {
			flags = flags&^unix.MAP_SHARED | unix.MAP_PRIVATE
		} else {
			flags = flags&^unix.MAP_PRIVATE | unix.MAP_SHARED
		}
	default:
		return fmt.Errorf("unsupported VMA status %#x", st)
	}
	addr, err := t.syscall(unix.SYS_MMAP, v.GetStart(), v.GetEnd()-v.GetStart(), uint64(v.GetProt()), flags, fd, off)
	if err != nil {
		return err
	}
	if addr != v.GetStart() {
		return fmt.Errorf("mapped at %#x", addr)
	}
	// madv holds 1<<MADV_x for each advice given (MADV_DONTFORK, MADV_DONTDUMP, ...).
	for bit := uint64(0); bit < 64; bit++ {
		if v.GetMadv()&(1<<bit) != 0 {
			if _, err := t.syscall(unix.SYS_MADVISE, v.GetStart(), v.GetEnd()-v.GetStart(), bit); err != nil {
				return err
			}
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
// streamRuns). The vDSO and vvar pages are skipped: this kernel's are used.
func (r *restorer) writePages(p *process, vvar, vdso span) error {
	pm := p.pl.pagemap
	name := fmt.Sprintf("pages-%d.img", pm.Head.GetPagesId())
	runs := pageRuns(pm, vvar, vdso)
	if len(runs) == 0 {
		return nil
	}
	return streamRuns(r.pl.src, name, runs, p.writeMemory, r.progress)
}

// progress reports written page bytes to Options.Progress.
func (r *restorer) progress(n int64) {
	if r.opts.Progress != nil {
		r.pl.pagesDone += n
		r.opts.Progress(r.pl.pagesDone, r.pl.pagesTotal)
	}
}
