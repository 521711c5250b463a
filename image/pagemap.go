package image

import (
	"errors"
	"fmt"
	"io"
	"math"
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
// set, else compat_nr_pages (field 2, older CRIU). CRIU 4.2 writes both, field 2 as 0.
func NrPages(e *pagemap.PagemapEntry) uint64 {
	if e.NrPages != nil {
		return e.GetNrPages()
	}
	return uint64(e.GetCompatNrPages())
}

// Flags returns a pagemap entry's PE_* flags as CRIU reads them: images older than
// the flags field mark pages kept in the parent set with in_parent (field 3) and
// have every other entry's pages present.
func Flags(e *pagemap.PagemapEntry) uint32 {
	f := e.GetFlags()
	switch {
	case e.GetInParent():
		f |= PagemapParent
	case e.Flags == nil:
		f = PagemapPresent
	}
	return f
}

// PageMap indexes a pagemap image: which virtual pages are saved, and where their
// bytes are in the pages-N.img file named by the head's pages_id. It holds the
// pagemap's entries, never pages: with an io.ReaderAt on the pages file it serves
// any page of a pages file of any size in constant memory.
type PageMap struct {
	Head    *pagemap.PagemapHead
	Entries []*pagemap.PagemapEntry
	offsets []int64 // offset in the pages file of each entry's data; -1 if not present
	order   []int   // entry indexes sorted by vaddr
	size    int64   // bytes of the present entries
}

// maxPagemapPages bounds one entry's page count: 2^52 bytes of address space, more
// than x86_64 user space, so the end address can never overflow.
const maxPagemapPages = (1 << 52) / PageSize

// NewPageMap indexes a PAGEMAP image (pagemap-N.img or pagemap-shmem-N.img). Entries
// must be page aligned and must not overlap.
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
	for _, e := range img.Entries[1:] {
		pe, ok := e.Msg.(*pagemap.PagemapEntry)
		if !ok {
			return nil, fmt.Errorf("image: pagemap entry %d is a %T", len(pm.Entries), e.Msg)
		}
		if err := pm.add(pe); err != nil {
			return nil, err
		}
	}
	return pm, pm.index()
}

// ReadPageMap reads and indexes a PAGEMAP image from r, keeping only its entries.
func ReadPageMap(r io.Reader) (*PageMap, error) {
	rd, err := NewReader(r)
	if err != nil {
		return nil, err
	}
	if rd.Kind().Name != "PAGEMAP" {
		return nil, rd.errorf(0, nil, "a %s image is not a pagemap", rd.Kind().Name)
	}
	pm := &PageMap{}
	for {
		start := rd.Offset()
		m, err := rd.Next()
		if errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if pm.Head == nil {
			pm.Head = m.(*pagemap.PagemapHead) // the table makes entry 0 a head
			continue
		}
		if len(pm.Entries) >= MaxEntries {
			return nil, rd.errorf(start, nil, "more than %d pagemap entries", MaxEntries)
		}
		if err := pm.add(m.(*pagemap.PagemapEntry)); err != nil {
			return nil, rd.errorf(start, err, "bad pagemap entry")
		}
	}
	if pm.Head == nil {
		return nil, rd.errorf(rd.Offset(), io.ErrUnexpectedEOF, "pagemap has no head")
	}
	if err := pm.index(); err != nil {
		return nil, rd.errorf(rd.Offset(), err, "bad pagemap")
	}
	return pm, nil
}

// add appends an entry, giving it the next offset in the pages file when its pages
// are there. Offsets follow file order: CRIU writes pages in pagemap order.
func (pm *PageMap) add(pe *pagemap.PagemapEntry) error {
	i := len(pm.Entries)
	n := NrPages(pe)
	if pe.GetVaddr()%PageSize != 0 || n > maxPagemapPages || pe.GetVaddr()+n*PageSize < pe.GetVaddr() {
		return fmt.Errorf("image: pagemap entry %d: bad range %#x+%d pages", i, pe.GetVaddr(), n)
	}
	pm.Entries = append(pm.Entries, pe)
	if Flags(pe)&PagemapPresent == 0 {
		pm.offsets = append(pm.offsets, -1)
		return nil
	}
	if pm.size > math.MaxInt64-int64(n)*PageSize {
		return fmt.Errorf("image: pagemap entry %d: pages file offset overflows", i)
	}
	pm.offsets = append(pm.offsets, pm.size)
	pm.size += int64(n) * PageSize
	return nil
}

// index sorts the entries by address and rejects overlaps.
func (pm *PageMap) index() error {
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
			return fmt.Errorf("image: pagemap entries at %#x and %#x overlap", prev.GetVaddr(), cur.GetVaddr())
		}
	}
	return nil
}

// PagesSize returns the number of bytes the present entries take in the pages file:
// the size pages-N.img must have.
func (pm *PageMap) PagesSize() int64 { return pm.size }

// EntryPages returns a reader of entry i's pages in the pages file, or nil when the
// entry's pages are not in this set. It reads through pages on demand, holding nothing.
func (pm *PageMap) EntryPages(pages io.ReaderAt, i int) *io.SectionReader {
	if pm.offsets[i] < 0 {
		return nil
	}
	return io.NewSectionReader(pages, pm.offsets[i], int64(NrPages(pm.Entries[i]))*PageSize)
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
	// A ReaderAt may report io.EOF along with the last full page.
	if n, err := pages.ReadAt(dst[:PageSize], off); n < PageSize {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("image: reading page %#x at offset %d: %w", vaddr&^(PageSize-1), off, err)
	}
	return nil
}
