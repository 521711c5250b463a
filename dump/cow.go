package dump

import (
	"fmt"
	"os"
	"sort"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"
	"google.golang.org/protobuf/proto"

	"github.com/imgtool/imgtool/image"
	"github.com/imgtool/imgtool/internal/procfs"
)

// Copy-on-write sharing. After fork, a parent and its child share every private page
// until one of them writes it. A restore rebuilds that sharing by forking each child from
// its restored parent and keeping the child's mappings that are still fork's copies
// (image.InheritedVMA): a page shared at the same address between a process and its
// parent, in such a mapping, is shared again. Any other sharing (between siblings whose
// parent has written its copy, between a process and its grandparent, or in a mapping
// the child has since resized) would come back as separate copies: the same bytes but
// more memory, and a program that checks (zdtm's cow00, cow01) would see the sharing
// gone. The dump refuses such a tree unless Options.COWCopies accepts the copies.
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
func sharedFrames(order []int, vmas map[int][]*vmaDesc) (map[uint64][]cowHolder, error) {
	frames := map[uint64][]cowHolder{}
	zero := zeroPFNs()
	buf := make([]byte, pagemapChunk*8)
	for _, pid := range order {
		if err := scanShared(pid, vmas[pid], zero, buf, frames); err != nil {
			return nil, err
		}
	}
	for f, hs := range frames {
		if len(hs) < 2 {
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
	for _, v := range vmas {
		switch v.kind {
		case vmaAnon, vmaFilePriv, vmaFilePrivMem:
		default:
			continue
		}
		for a := v.start; a < v.end; {
			n := min((v.end-a)/pageSize, pagemapChunk)
			b := buf[:n*8]
			if _, err := f.ReadAt(b, int64(a/pageSize*8)); err != nil {
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
	same := parent.st.Dev == child.st.Dev && parent.st.Ino == child.st.Ino
	return image.InheritedVMA(parent.entry(), child.entry(), same)
}

// cowLoss is the sharing a restore would not rebuild for one process.
type cowLoss struct {
	pages uint64
	with  int // a process it shares them with
	first cowHolder
}

// unrebuiltSharing returns, by process, the shared pages a restore would duplicate. Of
// the processes mapping one frame, each whose parent maps it at the same address in the
// mapping its own is a copy of gets it back by fork; the first of the others (in tree
// order: the one nearest the root) keeps it; every further one would get a copy.
func unrebuiltSharing(order []int, parents map[int]int, frames map[uint64][]cowHolder) map[int]*cowLoss {
	rank := map[int]int{}
	for i, pid := range order {
		rank[pid] = i
	}
	losses := map[int]*cowLoss{}
	for _, hs := range frames {
		at := map[[2]uint64]*vmaDesc{} // (pid, addr) -> mapping
		for _, h := range hs {
			at[[2]uint64{uint64(h.pid), h.addr}] = h.v
		}
		var alone []cowHolder // holders fork does not give the page to
		for _, h := range hs {
			parent, ok := parents[h.pid]
			if pv := at[[2]uint64{uint64(parent), h.addr}]; ok && pv != nil && forkCopy(pv, h.v) {
				continue
			}
			alone = append(alone, h)
		}
		if len(alone) < 2 {
			continue
		}
		sort.Slice(alone, func(i, j int) bool { return rank[alone[i].pid] < rank[alone[j].pid] })
		for _, h := range alone[1:] {
			l := losses[h.pid]
			if l == nil {
				l = &cowLoss{with: alone[0].pid, first: h}
				losses[h.pid] = l
			}
			l.pages++
			if h.addr < l.first.addr {
				l.first = h
			}
		}
	}
	return losses
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
	losses := unrebuiltSharing(order, parents, frames)
	for _, pid := range order {
		l := losses[pid]
		if l == nil {
			continue
		}
		v := l.first.v
		refused.add(refuse(pid, -1, fmt.Sprintf("%d pages shared copy-on-write with process %d (first at %#x in %#x-%#x %s)", l.pages, l.with, l.first.addr, v.start, v.end, v.path),
			"not as a copy fork made of its parent's mapping, so a restore would give each its own copy (same content, more memory); --cow-copies accepts that"))
	}
	return nil
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
