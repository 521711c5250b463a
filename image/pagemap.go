package image

import (
	"fmt"
	"io"
	"sort"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
)

// PageSize is the page size of the images this codec reads (x86_64).
const PageSize = 4096

// Pagemap entry flags (CRIU's PE_*).
const (
	PagemapParent  = 1 << 0 // the pages are in the parent image set
	PagemapLazy    = 1 << 1 // the pages are served lazily, not in this set
	PagemapPresent = 1 << 2 // the pages are in this set's pages-N.img
)

// NrPages returns a pagemap entry's page count: nr_pages (field 5, CRIU >= 4.2) when
// set, else compat_nr_pages (field 2, older CRIU).
func NrPages(e *pagemap.PagemapEntry) uint64 {
	if e.NrPages != nil {
		return uint64(e.GetNrPages())
	}
	return uint64(e.GetCompatNrPages())
}

// PageMap indexes a pagemap image: which virtual pages are saved, and where their
// bytes are in the pages-N.img file named by the head's pages_id.
type PageMap struct {
	Head    *pagemap.PagemapHead
	Entries []*pagemap.PagemapEntry
	offsets []int64 // offset in the pages file of each entry's data; -1 if not present
	order   []int   // entry indexes sorted by vaddr
}

// NewPageMap indexes a PAGEMAP image. Entries must not overlap.
func NewPageMap(img *Image) (*PageMap, error) {
	if img.Kind == nil || img.Kind.Name != "PAGEMAP" {
		return nil, fmt.Errorf("image: not a pagemap image")
	}
	if len(img.Entries) == 0 {
		return nil, fmt.Errorf("image: pagemap has no head")
	}
	head, ok := img.Entries[0].Msg.(*pagemap.PagemapHead)
	if !ok {
		return nil, fmt.Errorf("image: pagemap head is a %T", img.Entries[0].Msg)
	}
	pm := &PageMap{Head: head}
	var off int64
	for i, e := range img.Entries[1:] {
		pe, ok := e.Msg.(*pagemap.PagemapEntry)
		if !ok {
			return nil, fmt.Errorf("image: pagemap entry %d is a %T", i, e.Msg)
		}
		n := NrPages(pe)
		if pe.GetVaddr()%PageSize != 0 || n > (1<<52)/PageSize || pe.GetVaddr()+n*PageSize < pe.GetVaddr() {
			return nil, fmt.Errorf("image: pagemap entry %d: bad range %#x+%d pages", i, pe.GetVaddr(), n)
		}
		pm.Entries = append(pm.Entries, pe)
		if pe.GetFlags()&PagemapPresent != 0 {
			pm.offsets = append(pm.offsets, off)
			off += int64(n) * PageSize
		} else {
			pm.offsets = append(pm.offsets, -1)
		}
	}
	pm.order = make([]int, len(pm.Entries))
	for i := range pm.order {
		pm.order[i] = i
	}
	sort.SliceStable(pm.order, func(a, b int) bool {
		return pm.Entries[pm.order[a]].GetVaddr() < pm.Entries[pm.order[b]].GetVaddr()
	})
	for k := 1; k < len(pm.order); k++ {
		prev, cur := pm.Entries[pm.order[k-1]], pm.Entries[pm.order[k]]
		if prev.GetVaddr()+NrPages(prev)*PageSize > cur.GetVaddr() {
			return nil, fmt.Errorf("image: pagemap entries at %#x and %#x overlap", prev.GetVaddr(), cur.GetVaddr())
		}
	}
	return pm, nil
}

// PagesSize returns the number of bytes the present entries take in the pages file.
func (pm *PageMap) PagesSize() int64 {
	var n int64
	for i, e := range pm.Entries {
		if pm.offsets[i] >= 0 {
			n += int64(NrPages(e)) * PageSize
		}
	}
	return n
}

// EntryOffset returns the offset of entry i's data in the pages file, or -1 when the
// entry's pages are not in this set.
func (pm *PageMap) EntryOffset(i int) int64 { return pm.offsets[i] }

// Find returns the index of the entry covering vaddr, if any.
func (pm *PageMap) Find(vaddr uint64) (int, bool) {
	k := sort.Search(len(pm.order), func(k int) bool {
		e := pm.Entries[pm.order[k]]
		return e.GetVaddr()+NrPages(e)*PageSize > vaddr
	})
	if k == len(pm.order) {
		return 0, false
	}
	i := pm.order[k]
	if pm.Entries[i].GetVaddr() > vaddr {
		return 0, false
	}
	return i, true
}

// Offset returns the offset in the pages file of the page holding vaddr, when that
// page is saved in this set (PE_PRESENT).
func (pm *PageMap) Offset(vaddr uint64) (int64, bool) {
	i, ok := pm.Find(vaddr)
	if !ok || pm.offsets[i] < 0 {
		return 0, false
	}
	page := vaddr &^ (PageSize - 1)
	return pm.offsets[i] + int64(page-pm.Entries[i].GetVaddr()), true
}

// ReadPage reads the page holding vaddr from pages (the pages-N.img file, plain or a
// decrypting ReaderAt) into dst, which must hold PageSize bytes.
func (pm *PageMap) ReadPage(pages io.ReaderAt, vaddr uint64, dst []byte) error {
	if len(dst) < PageSize {
		return fmt.Errorf("image: page buffer of %d bytes", len(dst))
	}
	off, ok := pm.Offset(vaddr)
	if !ok {
		return fmt.Errorf("image: page %#x is not in the set", vaddr&^(PageSize-1))
	}
	if _, err := pages.ReadAt(dst[:PageSize], off); err != nil {
		return fmt.Errorf("image: reading page %#x at offset %d: %w", vaddr&^(PageSize-1), off, err)
	}
	return nil
}
