package dump

import (
	"fmt"
	"os"

	"github.com/imgtool/imgtool/internal/procfs"
)

// Copy-on-write sharing. After fork, a parent and its child share every private page
// until one of them writes it. Restore gives each process its own memory, so such pages
// come back as two copies: the same bytes, but twice the memory, and a program that
// checks (zdtm's cow00, cow01) sees the sharing gone. CRIU keeps it by forking children
// from their restored parent; imgtool does not yet, so a dump refuses a tree where it
// finds such pages, unless Options.COWCopies accepts the copies. The pages are found by
// their frames: the same frame at the same address in a parent and its child, an
// anonymous page (not a page of the file), not the zero page. The frames are only shown
// to a privileged reader; without them nothing is found.

// cowPage counts the pages of child still shared copy-on-write with parent.
func cowShared(parent, child int) (pages uint64, where string, err error) {
	pm, err := procfs.ReadMaps(parent)
	if err != nil {
		return 0, "", err
	}
	cm, err := procfs.ReadMaps(child)
	if err != nil {
		return 0, "", err
	}
	pf, err := os.Open(procfs.Path(parent, "pagemap"))
	if err != nil {
		return 0, "", err
	}
	defer pf.Close()
	cf, err := os.Open(procfs.Path(child, "pagemap"))
	if err != nil {
		return 0, "", err
	}
	defer cf.Close()
	zero := zeroPFNs()
	pbuf, cbuf := make([]byte, pagemapChunk*8), make([]byte, pagemapChunk*8)
	for _, c := range cm {
		if c.Shared || c.Path == "[vsyscall]" { // vsyscall lies beyond what pagemap covers
			continue
		}
		for _, p := range pm {
			lo, hi := max(c.Start, p.Start), min(c.End, p.End)
			if p.Shared || p.Path == "[vsyscall]" || lo >= hi {
				continue
			}
			for a := lo; a < hi; {
				n := min((hi-a)/pageSize, pagemapChunk)
				pb, cb := pbuf[:n*8], cbuf[:n*8]
				if _, err := pf.ReadAt(pb, int64(a/pageSize*8)); err != nil {
					return 0, "", err
				}
				if _, err := cf.ReadAt(cb, int64(a/pageSize*8)); err != nil {
					return 0, "", err
				}
				for i := uint64(0); i < n; i++ {
					pe, ce := le64(pb[i*8:]), le64(cb[i*8:])
					pfn := ce & pmePFNMask
					if pe&ce&pmePresent == 0 || (pe|ce)&pmeFile != 0 || pfn == 0 || zero.has(pfn) || pfn != pe&pmePFNMask {
						continue
					}
					if pages == 0 {
						where = fmt.Sprintf("%#x-%#x %s", c.Start, c.End, c.Path)
					}
					pages++
				}
				a += n * pageSize
			}
		}
	}
	return pages, where, nil
}

// checkCOW refuses each process of the tree that still shares pages copy-on-write with
// its parent (see above). parents maps each process to its parent in the tree.
func checkCOW(parents map[int]int, refused *Refusals) error {
	for child, parent := range parents {
		n, where, err := cowShared(parent, child)
		if err != nil {
			if vanished(err) {
				continue // gone meanwhile: the frozen tree is checked again
			}
			return fmt.Errorf("copy-on-write pages of %d: %w", child, err)
		}
		if n > 0 {
			refused.add(refuse(child, -1, fmt.Sprintf("%d pages shared copy-on-write with its parent %d (first in %s)", n, parent, where),
				"a restore would give each its own copy (same content, twice the memory); --cow-copies accepts that"))
		}
	}
	return nil
}
