package dump

import (
	"fmt"
	"os"
	"slices"
	"sort"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/imgtool/imgtool/image"
	"github.com/imgtool/imgtool/internal/procfs"
)

// Copy-on-write sharing. After fork, a parent and its child share every private page
// until one of them writes it. A restore rebuilds that sharing by forking each child from
// its restored parent and keeping the child's mappings that are still fork's copies
// (image.InheritedVMA): a page shared at the same address between a process and its
// parent, in such a mapping, is shared again. Siblings sharing a page their parent has
// since written over get it back too: the restore makes the parent hold it again while it
// forks them, as the dump's imgtool-fork-pages-PID.img records say (planCOW). Any other
// sharing (between a process and its grandparent or a cousin, or siblings in an order
// that cannot be forked so) would come back as separate copies: the same bytes but more
// memory, and a program that checks (zdtm's cow00, cow01) would see the sharing gone.
// The dump refuses such a tree unless Options.COWCopies accepts the copies. It looks
// twice: on the running tree, to refuse before anything is seized, and on the stopped
// tree, to write the records of what it dumps.
//
// Pages are told apart by their frames: /proc/PID/pagemap shows a privileged reader the
// frame of each present page and whether it is mapped by this process only. Only
// anonymous pages (of private mappings, or copied on write from a file) mapped by more
// than one process are looked at; the zero page is not a copy. Without frames (an
// unprivileged reader), nothing is found.

// cowHolder is one process's mapping of a shared page.
type cowHolder struct {
	pid  int
	addr uint64
	v    *vmaDesc
}

// sharedFrames maps each frame shared between processes of the tree to the processes
// and addresses that map it. vmas holds each process's mappings as precheck classified
// them.
//
// A frame one process maps at two addresses (KSM merges pages so) is not shared between
// processes: a tree of one process has none, and its pagemap is not read.
func sharedFrames(order []int, vmas map[int][]*vmaDesc) (map[uint64][]cowHolder, error) {
	frames := map[uint64][]cowHolder{}
	if len(order) < 2 {
		return frames, nil
	}
	zero := zeroPFNs()
	buf := make([]byte, pagemapChunk*8)
	for _, pid := range order {
		if err := scanShared(pid, vmas[pid], zero, buf, frames); err != nil {
			return nil, err
		}
	}
	for f, hs := range frames {
		if !slices.ContainsFunc(hs[1:], func(h cowHolder) bool { return h.pid != hs[0].pid }) {
			delete(frames, f)
		}
	}
	return frames, nil
}

// scanShared adds the non-exclusive anonymous pages of pid's private mappings to frames.
func scanShared(pid int, vmas []*vmaDesc, zero zeroFrames, buf []byte, frames map[uint64][]cowHolder) error {
	f, err := os.Open(procfs.Path(pid, "pagemap"))
	if err != nil {
		return err
	}
	defer f.Close()
	pm := &pagemapWindow{f: f, buf: buf}
	reach := pagemapReach(vmas, scansPages) // none of a droppable mapping's pages is saved
	for iv, v := range vmas {
		if !scansPages(v) {
			continue
		}
		for a := v.start; a < v.end; {
			n := min((v.end-a)/pageSize, pagemapChunk)
			b, err := pm.entries(a, n, reach[iv])
			if err != nil {
				return err
			}
			for i := uint64(0); i < n; i++ {
				e := le64(b[i*8:])
				if e&pmePresent == 0 || e&(pmeFile|pmeExclusive) != 0 {
					continue
				}
				pfn := e & pmePFNMask
				if pfn == 0 || zero.has(pfn) {
					continue
				}
				frames[pfn] = append(frames[pfn], cowHolder{pid: pid, addr: a + i*pageSize, v: v})
			}
			a += n * pageSize
		}
	}
	return nil
}

// forkCopy reports whether a child's mapping is still the copy fork made of its parent's
// (image.InheritedVMA), with files compared by device and inode.
func forkCopy(parent, child *vmaDesc) bool {
	same := parent.st == child.st // anonymous: neither has a file
	if parent.st != nil && child.st != nil {
		same = parent.st.Dev == child.st.Dev && parent.st.Ino == child.st.Ino
	}
	return image.InheritedVMA(parent.entry(), child.entry(), same)
}

// cowLoss is the sharing a restore would not rebuild for one process.
type cowLoss struct {
	pages uint64
	with  int // a process it shares them with
	first cowHolder
}

// forkPage is a run of pages whose content a restore puts in a process's parent just
// before it forks the process (imgtool-fork-pages-PID.img): the process's own saved
// pages, which it shares with siblings its parent has since written over, or the
// parent's own again, for a process sharing them with the parent after such siblings.
type forkPage struct {
	addr, n   uint64
	parentOwn bool
}

// pidAddr is a page of a process.
type pidAddr struct {
	pid  int
	addr uint64
}

// cowPlan is what the tree's sharing asks of a restore: the pages it cannot share
// again (losses, by process), and the parent's content each process must be forked
// with (records, by process).
type cowPlan struct {
	losses  map[int]*cowLoss
	records map[int][]forkPage
}

// siblingGroup is children of one parent sharing a page at one address that the parent
// has since written over: a restore puts their content back in the parent while it forks
// them.
type siblingGroup struct {
	frame   uint64
	members []cowHolder
}

// planCOW works out, from the frames the processes of the tree share, what a restore
// must do to share them again and what it cannot. A restore forks each child from its
// restored parent (order is the order it does so: the tree's, root first): a page a child
// shares with its parent, at the same address in a mapping fork copied (forkCopy), is
// shared again by the fork. Children sharing a page their parent has since written
// over are forked while the parent holds their content for a moment (a sibling group,
// written to forkPage records); that works when, among the parent's children with a
// need at that address, each group's members come one after another and those sharing
// the parent's own page come after every group, which is how fork made them. Any other
// sharing is a loss.
func planCOW(order []int, parents map[int]int, vmas map[int][]*vmaDesc, frames map[uint64][]cowHolder) cowPlan {
	rank := map[int]int{}
	for i, pid := range order {
		rank[pid] = i
	}
	at := map[pidAddr]uint64{}      // the shared frame each process maps at an address
	where := map[pidAddr]*vmaDesc{} // and in which mapping
	for f, hs := range frames {
		for _, h := range hs {
			at[pidAddr{h.pid, h.addr}] = f
			where[pidAddr{h.pid, h.addr}] = h.v
		}
	}
	// fromParent: h's page is its parent's, by fork.
	fromParent := func(h cowHolder, f uint64) bool {
		parent, ok := parents[h.pid]
		pa := pidAddr{parent, h.addr}
		return ok && at[pa] == f && forkCopy(where[pa], h.v)
	}
	plan := cowPlan{losses: map[int]*cowLoss{}, records: map[int][]forkPage{}}
	lose := func(hs []cowHolder, with int) {
		for _, h := range hs {
			l := plan.losses[h.pid]
			if l == nil {
				l = &cowLoss{with: with, first: h}
				plan.losses[h.pid] = l
			}
			l.pages++
			if h.addr < l.first.addr {
				l.first = h
			}
		}
	}
	groups := map[pidAddr][]siblingGroup{} // by parent and address
	for f, hs := range frames {
		var alone []cowHolder // holders fork does not give the page to
		for _, h := range hs {
			if !fromParent(h, f) {
				alone = append(alone, h)
			}
		}
		if len(alone) < 2 {
			continue
		}
		sort.Slice(alone, func(i, j int) bool { return rank[alone[i].pid] < rank[alone[j].pid] })
		if _, ok := siblings(alone, parents, vmas); ok {
			pa := pidAddr{parents[alone[0].pid], alone[0].addr}
			groups[pa] = append(groups[pa], siblingGroup{f, alone})
			continue
		}
		lose(alone[1:], alone[0].pid)
	}
	children := map[int][]int{}
	for _, pid := range order {
		if parent, ok := parents[pid]; ok {
			children[parent] = append(children[parent], pid)
		}
	}
	for pa, gs := range groups {
		own := at[pa] // the parent's own page there, if shared
		var withParent []int
		if own != 0 {
			for _, c := range children[pa.pid] {
				if at[pidAddr{c, pa.addr}] == own && fromParent(cowHolder{pid: c, addr: pa.addr, v: where[pidAddr{c, pa.addr}]}, own) {
					withParent = append(withParent, c)
				}
			}
		}
		parentShared := own != 0 && fromParent(cowHolder{pid: pa.pid, addr: pa.addr, v: where[pa]}, own)
		if parentShared || !forkable(children[pa.pid], gs, withParent) {
			// The parent's content there cannot change between the forks (it is shared
			// with its own parent), or the forks come in an order that would need it to
			// change back: each group after its first member gets copies.
			for _, g := range gs {
				lose(g.members[1:], g.members[0].pid)
			}
			continue
		}
		for _, g := range gs {
			for _, h := range g.members {
				plan.records[h.pid] = append(plan.records[h.pid], forkPage{addr: pa.addr, n: 1})
			}
		}
		for _, c := range withParent {
			plan.records[c] = append(plan.records[c], forkPage{addr: pa.addr, n: 1, parentOwn: true})
		}
	}
	for pid, rs := range plan.records {
		plan.records[pid] = mergeForkPages(rs)
	}
	return plan
}

// siblings tells whether holders (in tree order) are children of one parent, at one
// address, each in a mapping that can be fork's copy of the parent's there.
func siblings(hs []cowHolder, parents map[int]int, vmas map[int][]*vmaDesc) (int, bool) {
	parent, ok := parents[hs[0].pid]
	if !ok {
		return 0, false
	}
	pv := vmaAt(vmas[parent], hs[0].addr)
	if pv != nil && pv.flags&unix.MAP_LOCKED != 0 {
		return 0, false // the parent's locked pages cannot be dropped after the forks
	}
	for _, h := range hs {
		if p, ok := parents[h.pid]; !ok || p != parent || h.addr != hs[0].addr || pv == nil || !forkCopy(pv, h.v) {
			return 0, false
		}
	}
	return parent, true
}

// forkable tells whether a parent can fork its children (in order) so that each sibling
// group gets its content and each of withParent the parent's own: among the children
// named in groups or withParent, each group's members are consecutive, and withParent
// come after every group.
func forkable(children []int, gs []siblingGroup, withParent []int) bool {
	label := map[int]int{} // group index + 1, or -1 for withParent
	for i, g := range gs {
		for _, h := range g.members {
			label[h.pid] = i + 1
		}
	}
	for _, c := range withParent {
		label[c] = -1
	}
	done := map[int]bool{}
	last := 0
	for _, c := range children {
		l := label[c]
		switch {
		case l == 0 || l == last:
		case done[l] || last == -1 && l > 0:
			return false
		default:
			done[last] = true
			last = l
		}
	}
	return true
}

// vmaAt returns the mapping of vmas (in address order) that holds addr, or nil.
func vmaAt(vmas []*vmaDesc, addr uint64) *vmaDesc {
	i := sort.Search(len(vmas), func(i int) bool { return vmas[i].end > addr })
	if i < len(vmas) && vmas[i].start <= addr {
		return vmas[i]
	}
	return nil
}

// mergeForkPages sorts records and joins neighbours of the same kind.
func mergeForkPages(rs []forkPage) []forkPage {
	sort.Slice(rs, func(i, j int) bool { return rs[i].addr < rs[j].addr })
	var out []forkPage
	for _, r := range rs {
		if k := len(out) - 1; k >= 0 && out[k].addr+out[k].n*pageSize == r.addr && out[k].parentOwn == r.parentOwn {
			out[k].n += r.n
			continue
		}
		out = append(out, r)
	}
	return out
}

// checkCOW refuses each process of the tree holding pages shared copy-on-write that a
// restore would not share again (see above). order lists the live processes root first,
// parents maps each to its parent, vmas gives their mappings.
func checkCOW(order []int, parents map[int]int, vmas map[int][]*vmaDesc, refused *Refusals) error {
	frames, err := sharedFrames(order, vmas)
	if err != nil {
		if vanished(err) {
			return nil // a process exited meanwhile: the tree is checked again
		}
		return fmt.Errorf("copy-on-write pages: %w", err)
	}
	refuseLosses(order, planCOW(order, parents, vmas, frames).losses, refused)
	return nil
}

// refuseLosses adds a refusal for each process with pages a restore would not share
// again.
func refuseLosses(order []int, losses map[int]*cowLoss, refused *Refusals) {
	for _, pid := range order {
		l := losses[pid]
		if l == nil {
			continue
		}
		v := l.first.v
		refused.add(refuse(pid, -1, fmt.Sprintf("%d pages shared copy-on-write with process %d (first at %#x in %#x-%#x %s)", l.pages, l.with, l.first.addr, v.start, v.end, v.path),
			"not in a way a restore can share again, so it would give each its own copy (same content, more memory); --cow-copies accepts that"))
	}
}

// planSharing works out, on the stopped tree, the pages each process must be forked
// with (forkPage records) and, unless Options.COWCopies, refuses sharing a restore would
// not rebuild (precheck found it on the running tree already, unless it changed since).
func (d *dumper) planSharing() error {
	order := make([]int, len(d.procs))
	parents := map[int]int{}
	vmas := map[int][]*vmaDesc{}
	for i, p := range d.procs {
		order[i] = p.pid
		vmas[p.pid] = p.mem.vmas
		if p.parent != nil {
			parents[p.pid] = p.parent.pid
		}
	}
	frames, err := sharedFrames(order, vmas)
	if err != nil {
		return fmt.Errorf("copy-on-write pages: %w", err)
	}
	plan := planCOW(order, parents, vmas, frames)
	if !d.opts.COWCopies {
		var refused Refusals
		refuseLosses(order, plan.losses, &refused)
		if err := refused.err(); err != nil {
			return err
		}
	}
	for _, p := range d.procs {
		p.forkPages = plan.records[p.pid]
	}
	return nil
}

// forkPagesEntries are the records of imgtool-fork-pages-PID.img.
func forkPagesEntries(rs []forkPage) []proto.Message {
	var out []proto.Message
	for _, r := range rs {
		var flags uint32
		if r.parentOwn {
			flags = image.ForkPagesParentOwn
		}
		out = append(out, &pagemap.PagemapEntry{Vaddr: proto.Uint64(r.addr), CompatNrPages: proto.Uint32(0), NrPages: proto.Uint64(r.n), Flags: proto.Uint32(flags)})
	}
	return out
}

// entry is the mapping as mm-PID.img records it (shmid is set once files are numbered).
func (v *vmaDesc) entry() *vma.VmaEntry {
	e := &vma.VmaEntry{
		Start: proto.Uint64(v.start), End: proto.Uint64(v.end), Pgoff: proto.Uint64(v.pgoff),
		Shmid: proto.Uint64(v.shmid), Prot: proto.Uint32(v.prot), Flags: proto.Uint32(v.flags),
		Status: proto.Uint32(v.status), Fd: proto.Int64(-1),
	}
	if v.madv != 0 {
		e.Madv = proto.Uint64(v.madv)
	}
	if v.hasFdflags {
		e.Fdflags = proto.Uint32(v.fdflags)
	}
	return e
}
