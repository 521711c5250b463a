package restore

import (
	"bytes"
	"fmt"
	"sort"
	"sync"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"
	"golang.org/x/sys/unix"

	"github.com/imgtool/imgtool/image"
	"github.com/imgtool/imgtool/internal/procfs"
)

// Copy-on-write sharing. Each process is cloned from its parent once the parent's memory
// is restored (and locked), so it starts with a copy of every mapping of its parent, every
// page shared. It keeps the mappings that are still the copies fork made of its parent's
// (image.InheritedVMA: the rule dump checks against too) and unmaps the others. In a kept
// mapping, a saved page whose bytes equal the parent's is not written: it stays shared,
// as it was when the tree was dumped; a page that differs is written (the write gives the
// child its own copy); a page the parent has and the child's set does not is dropped
// (MADV_DONTNEED: it reads as zeros, or as the file, as it did). CRIU restores the same
// way (criu/mem.c, restore_priv_vma_content).

// Siblings. Children sharing a page their parent has since written over (forked one after
// another, before the parent wrote) are given it the same way: imgtool's dump lists, in
// imgtool-fork-pages-PID.img, the pages each such child shares with its siblings, and the
// restore puts the child's saved content there in the parent just before forking it, if
// the parent does not hold it already (the sibling before it put it there), so that they
// all get the one page; a page a later child shares with the parent itself is listed too
// (ForkPagesParentOwn): the parent's own content goes back there first. Once all children
// exist, each parent gets its own content back where it held theirs. CRIU does not write
// or read that image: its restore gives such siblings copies.

// forkPages is one entry of imgtool-fork-pages-PID.img: pages the parent holds when the
// process is forked, the process's own saved ones or (parentOwn) the parent's.
type forkPages struct {
	span
	parentOwn bool
}

// maxForkPages bounds the entries of one imgtool-fork-pages-PID.img.
const maxForkPages = 1 << 20

// loadForkPages reads imgtool-fork-pages-PID.img, if the set has it.
func loadForkPages(src source, pid int) ([]forkPages, error) {
	name := fmt.Sprintf("imgtool-fork-pages-%d.img", pid)
	if !src.has(name) {
		return nil, nil
	}
	es, _, err := readEntries[pagemap.PagemapEntry](src, name)
	if err != nil {
		return nil, err
	}
	if len(es) > maxForkPages {
		return nil, fmt.Errorf("%s: %d entries, more than %d", name, len(es), maxForkPages)
	}
	var out []forkPages
	for _, e := range es {
		start, n := e.GetVaddr(), e.GetNrPages()
		if start%image.PageSize != 0 || n == 0 || n > userTop/image.PageSize || start > userTop-n*image.PageSize {
			return nil, fmt.Errorf("%s: pages %#x+%d are not in the user address space", name, start, n)
		}
		out = append(out, forkPages{span{start, start + n*image.PageSize}, e.GetFlags()&image.ForkPagesParentOwn != 0})
	}
	return out, nil
}

// userTop is the end of the 47-bit user address space.
const userTop = 0x7ffffffff000

// holdForFork puts in parent what the fork-pages records of pp ask it to hold when pp is
// forked: pp's saved pages, or the parent's own again. Only pages whose content differs
// are written, so that the page a sibling got stays the one the next sibling gets.
func (r *restorer) holdForFork(parent *process, pp *procPlan) error {
	buf := cmpBufPool.Get().(*[]byte)
	defer cmpBufPool.Put(buf)
	for _, fp := range pp.forkPages {
		from := pp
		if fp.parentOwn {
			from = parent.pl
		}
		b, err := r.savedBytes(from, fp.span)
		if err != nil {
			return fmt.Errorf("pages %#x-%#x %d holds when %d is forked: %w", fp.start, fp.end, parent.pid, pp.pid, err)
		}
		changed, err := parent.changedPages(segment{fp.start, b}, *buf)
		if err != nil {
			return err
		}
		if err := parent.writeMemory(changed); err != nil {
			return err
		}
		if fp.parentOwn {
			parent.held = parent.held.subtract(spans{fp.span})
		} else {
			parent.held = parent.held.union(spans{fp.span})
		}
	}
	return nil
}

// restoreHeld gives each process its own content back where it held its children's for
// their forks: its saved pages, or none (MADV_DONTNEED: zeros, or the file's page).
func (r *restorer) restoreHeld() error {
	for _, p := range r.procs {
		if len(p.held) == 0 {
			continue
		}
		saved := savedSpans(p.pl.pagemap)
		for _, s := range p.held.intersect(saved) {
			b, err := r.savedBytes(p.pl, s)
			if err != nil {
				return err
			}
			if err := p.writeMemory([]segment{{s.start, b}}); err != nil {
				return err
			}
		}
		for _, s := range p.held.subtract(saved) {
			if _, err := p.leader().syscall(unix.SYS_MADVISE, s.start, s.end-s.start, unix.MADV_DONTNEED); err != nil {
				return fmt.Errorf("dropping pages %#x-%#x held for forks: %w", s.start, s.end, err)
			}
		}
		p.held = nil
	}
	return nil
}

// savedBytes reads the saved pages of pp over s, all of which must be saved.
func (r *restorer) savedBytes(pp *procPlan, s span) ([]byte, error) {
	pm := pp.pagemap
	name := fmt.Sprintf("pages-%d.img", pm.Head.GetPagesId())
	out := make([]byte, s.end-s.start)
	covered := uint64(0)
	var f imageFile
	for i, e := range pm.Entries {
		off := pm.EntryOffset(i)
		start := e.GetVaddr()
		end := start + image.NrPages(e)*image.PageSize
		lo, hi := max(start, s.start), min(end, s.end)
		if off < 0 || lo >= hi {
			continue
		}
		if f == nil {
			var err error
			if f, err = r.pl.src.open(name); err != nil {
				return nil, err
			}
			defer f.Close()
		}
		if _, err := f.ReadAt(out[lo-s.start:hi-s.start], off+int64(lo-start)); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		covered += hi - lo
	}
	if covered != s.end-s.start {
		return nil, fmt.Errorf("process %d's set does not save all of them", pp.pid)
	}
	return out, nil
}

// inheritance is what a child keeps of the address space it was cloned with.
type inheritance struct {
	parts   map[*vma.VmaEntry][]keptPart // the kept parts of each of the child's mappings, in order
	keptAll spans                        // all kept parts
	shared  spans                        // the parent's saved pages in kept parts: compared, not written
	drop    spans                        // pages of kept parts the child must not have (the parent's saved or locked ones)
}

// keptPart is a range of a child's mapping kept from the copy of its parent's mapping.
type keptPart struct {
	span
	parent *vma.VmaEntry
}

// inherit works out which parts of p's saved mappings are copies of its parent's: where a
// mapping of p overlaps one of its parent's it may keep (image.InheritedVMA). held are the
// pages the parent holds for the fork besides its saved ones (holdForFork).
func inherit(pl *plan, parent, p *procPlan, held spans) *inheritance {
	inh := &inheritance{parts: map[*vma.VmaEntry][]keptPart{}}
	pvmas := parent.mm.Vmas // in address order, as mm images list them
	var locked spans
	for _, v := range p.mm.Vmas {
		i := sort.Search(len(pvmas), func(i int) bool { return pvmas[i].GetEnd() > v.GetStart() })
		for ; i < len(pvmas) && pvmas[i].GetStart() < v.GetEnd(); i++ {
			pv := pvmas[i]
			if !image.InheritedVMA(pv, v, pl.sameMappedFile(pv, v)) {
				continue
			}
			part := keptPart{span{max(pv.GetStart(), v.GetStart()), min(pv.GetEnd(), v.GetEnd())}, pv}
			inh.parts[v] = append(inh.parts[v], part)
			inh.keptAll = append(inh.keptAll, part.span)
			if pv.GetFlags()&unix.MAP_LOCKED != 0 {
				locked = append(locked, part.span) // locking faulted in every page of it
			}
		}
	}
	inh.keptAll = inh.keptAll.normal()
	parentPages := savedSpans(parent.pagemap).union(held)
	inh.shared = parentPages.intersect(inh.keptAll)
	inh.drop = parentPages.union(locked).intersect(inh.keptAll).subtract(savedSpans(p.pagemap))
	return inh
}

// keeps returns the kept parts of v (none without an inheritance).
func (inh *inheritance) keeps(v *vma.VmaEntry) []keptPart {
	if inh == nil {
		return nil
	}
	return inh.parts[v]
}

// sameMappedFile reports whether two file mappings of the set map the same file.
func (pl *plan) sameMappedFile(a, b *vma.VmaEntry) bool {
	if a.GetShmid() == b.GetShmid() {
		return true
	}
	fa, fb := pl.files[uint32(a.GetShmid())], pl.files[uint32(b.GetShmid())]
	switch {
	case fa == nil || fb == nil:
		return false
	case fa.Reg != nil && fb.Reg != nil:
		return fa.Reg.GetName() == fb.Reg.GetName()
	case fa.Memfd != nil && fb.Memfd != nil:
		return fa.Memfd.GetInodeId() == fb.Memfd.GetInodeId()
	}
	return false
}

// savedSpans are the address ranges of the pages a page map saves.
func savedSpans(pm *image.PageMap) spans {
	var out spans
	for i, e := range pm.Entries {
		if pm.EntryOffset(i) < 0 {
			continue
		}
		start := e.GetVaddr()
		out = append(out, span{start, start + image.NrPages(e)*image.PageSize})
	}
	return out.normal()
}

// dropInherited unmaps what p was cloned with and does not keep: every mapping but the
// kept copies, the scratch area and the kernel's special mappings. born, when not nil, is
// what p was cloned with (its siblings' mappings, read once), else /proc/PID/maps is read.
func (r *restorer) dropInherited(p *process, inh *inheritance, born []procfs.Mapping) error {
	maps := born
	if maps == nil {
		var err error
		if maps, err = procfs.ReadMaps(p.pid); err != nil {
			return err
		}
	}
	keep := append(spans{{r.scratch, r.scratch + scratchSize}, p.specials.vvar, p.specials.vclock, p.specials.vdso}, inh.keptAll...)
	var all spans
	for _, m := range maps {
		if m.Path != "[vsyscall]" {
			all = append(all, span{m.Start, m.End})
		}
	}
	for _, s := range all.normal().subtract(keep.normal()) {
		if _, err := p.leader().syscall(unix.SYS_MUNMAP, s.start, s.end-s.start); err != nil {
			return fmt.Errorf("unmapping %#x-%#x inherited from the parent: %w", s.start, s.end, err)
		}
	}
	return nil
}

// adjustKept gives a kept part the protection and advice of p's saved mapping v.
func adjustKept(p *process, part keptPart, v *vma.VmaEntry) error {
	t := p.leader()
	if part.parent.GetProt() != v.GetProt() {
		if _, err := t.syscall(unix.SYS_MPROTECT, part.start, part.end-part.start, uint64(v.GetProt())); err != nil {
			return err
		}
	}
	steps, _ := image.MadviseSteps(part.parent.GetMadv(), v.GetMadv()) // InheritedVMA checked they exist
	return madvise(t, part.span, steps)
}

// dropUnsaved drops the pages p got from its parent in kept mappings and did not have.
func (r *restorer) dropUnsaved(p *process, inh *inheritance) error {
	for _, s := range inh.drop {
		if _, err := p.leader().syscall(unix.SYS_MADVISE, s.start, s.end-s.start, unix.MADV_DONTNEED); err != nil {
			return fmt.Errorf("dropping pages %#x-%#x inherited from the parent: %w", s.start, s.end, err)
		}
	}
	return nil
}

// cmpBufPool holds the buffers the current bytes of shared pages are read into.
var cmpBufPool = sync.Pool{New: func() any { b := make([]byte, unitSize); return &b }}

// writeChanged returns a writer that hands write all but the pages inside shared whose
// bytes are already those saved, so that they stay shared with the parent.
func (p *process) writeChanged(shared spans, write func([]segment) error) func([]segment) error {
	return func(segs []segment) error {
		bp := cmpBufPool.Get().(*[]byte)
		defer cmpBufPool.Put(bp)
		var out []segment
		for _, s := range segs {
			for _, piece := range shared.split(s) {
				if !piece.inside {
					out = append(out, piece.segment)
					continue
				}
				changed, err := p.changedPages(piece.segment, *bp)
				if err != nil {
					return err
				}
				out = append(out, changed...)
			}
		}
		return write(out)
	}
}

// changedPages returns the pages of s whose saved bytes differ from the process's.
func (p *process) changedPages(s segment, buf []byte) ([]segment, error) {
	var out []segment
	for len(s.b) > 0 {
		n := min(len(s.b), len(buf))
		cur := buf[:n]
		if err := p.readMemory(s.addr, cur); err != nil {
			return nil, err
		}
		for off := 0; off < n; off += image.PageSize {
			end := min(off+image.PageSize, n)
			if bytes.Equal(cur[off:end], s.b[off:end]) {
				continue
			}
			addr := s.addr + uint64(off)
			if k := len(out) - 1; k >= 0 && out[k].addr+uint64(len(out[k].b)) == addr {
				out[k].b = out[k].b[:len(out[k].b)+end-off] // extend: same backing array
				continue
			}
			out = append(out, segment{addr: addr, b: s.b[off:end]})
		}
		s = segment{addr: s.addr + uint64(n), b: s.b[n:]}
	}
	return out, nil
}

// readMemory reads the process's memory at addr into b through /proc/PID/mem. Not with
// process_vm_readv: that call pins the pages it reads, and pinning a page shared
// copy-on-write gives the process its own copy first (the kernel's rule since 5.19), which
// is the sharing being kept.
func (p *process) readMemory(addr uint64, b []byte) error {
	if _, err := p.mem.ReadAt(b, int64(addr)); err != nil {
		return fmt.Errorf("reading memory of %d at %#x: %w", p.pid, addr, err)
	}
	return nil
}

// spans is a set of address ranges; normal() sorts and merges them, and the set
// operations take and give normal sets.
type spans []span

func (s spans) normal() spans {
	var out spans
	for _, x := range s {
		if x.end > x.start {
			out = append(out, x)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].start < out[j].start })
	merged := out[:0]
	for _, x := range out {
		if k := len(merged) - 1; k >= 0 && x.start <= merged[k].end {
			merged[k].end = max(merged[k].end, x.end)
			continue
		}
		merged = append(merged, x)
	}
	return merged
}

// has tells whether addr lies in one of s (normal: sorted, not overlapping).
func (s spans) has(addr uint64) bool {
	i := sort.Search(len(s), func(i int) bool { return s[i].end > addr })
	return i < len(s) && s[i].start <= addr
}

func (s spans) union(t spans) spans { return append(append(spans{}, s...), t...).normal() }

func (s spans) intersect(t spans) spans {
	var out spans
	for i, j := 0, 0; i < len(s) && j < len(t); {
		lo, hi := max(s[i].start, t[j].start), min(s[i].end, t[j].end)
		if lo < hi {
			out = append(out, span{lo, hi})
		}
		if s[i].end < t[j].end {
			i++
		} else {
			j++
		}
	}
	return out
}

func (s spans) subtract(t spans) spans {
	var out spans
	j := 0
	for _, x := range s {
		for j < len(t) && t[j].end <= x.start {
			j++
		}
		cur := x.start
		for k := j; k < len(t) && t[k].start < x.end; k++ {
			if t[k].start > cur {
				out = append(out, span{cur, t[k].start})
			}
			cur = max(cur, t[k].end)
		}
		if cur < x.end {
			out = append(out, span{cur, x.end})
		}
	}
	return out
}

// piece is part of a segment, inside the set or outside it.
type piece struct {
	segment
	inside bool
}

// split cuts seg at the boundaries of the set.
func (s spans) split(seg segment) []piece {
	var out []piece
	start, end := seg.addr, seg.addr+uint64(len(seg.b))
	i := sort.Search(len(s), func(i int) bool { return s[i].end > start })
	cur := start
	for ; i < len(s) && s[i].start < end && cur < end; i++ {
		if s[i].start > cur {
			out = append(out, piece{segment{cur, seg.b[cur-start : s[i].start-start]}, false})
			cur = s[i].start
		}
		hi := min(s[i].end, end)
		out = append(out, piece{segment{cur, seg.b[cur-start : hi-start]}, true})
		cur = hi
	}
	if cur < end {
		out = append(out, piece{segment{cur, seg.b[cur-start:]}, false})
	}
	return out
}
